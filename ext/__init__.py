"""naiad's native hot path (Cython and pybind11), each module with a pure-Python twin."""

"""One Python model instance, in three parts: the IPC session with its stub process
(session.py, with the arena staging in packing.py), the server side of the stub's BLS,
model-control and metric calls (server_calls.py), and the instance that owns the session
and restarts it (supervisor.py)."""

from .session import FAILED, Session, Settings, StubDied
from .supervisor import PythonModelInstance, run_auto_complete

__all__ = ["FAILED", "PythonModelInstance", "Session", "Settings", "StubDied", "run_auto_complete"]

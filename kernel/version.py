"""naiad's own version and the Triton server version it is compatible with."""

__version__ = "0.1.0"
# Reported as `version` in server metadata so that clients that gate on Triton's
# version behave as they do against Triton 24.04.
TRITON_COMPATIBLE_VERSION = "2.45.0"

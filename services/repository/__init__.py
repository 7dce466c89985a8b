"""The repository poller: in poll mode, asks the model manager to re-scan every
`repository_poll_secs` (Triton's --model-control-mode=poll)."""

from .service import RepositoryPoller

__all__ = ["RepositoryPoller"]

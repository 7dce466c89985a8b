"""Batch gather/scatter for the dynamic batcher: native when built, numpy twin otherwise.

`NATIVE` tells which one is in use.  NAIAD_PURE_PYTHON=1 forces the twin.
"""

from __future__ import annotations

import logging
import os

__all__ = ["NATIVE", "gather", "scatter"]

NATIVE: bool
if os.environ.get("NAIAD_PURE_PYTHON") == "1":
    from .batching_py import gather, scatter

    NATIVE = False
else:
    try:
        from ._batching import gather, scatter

        NATIVE = True
    except ImportError as exc:  # not built (e.g. a source checkout): same API, slower
        logging.getLogger(__name__).info("naiad.ext._batching unavailable (%s); using numpy twin", exc)
        from .batching_py import gather, scatter

        NATIVE = False

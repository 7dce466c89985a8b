"""Batch gather/scatter along axis 0 (the dynamic batcher's copy loop)."""

from collections.abc import Iterable, Sequence

import numpy as np
from typing_extensions import Buffer

NATIVE: bool
"""True when the Cython module is in use, False for the numpy twin."""

def gather(parts: Sequence[np.ndarray], out: Buffer | None = None) -> np.ndarray:
    """Concatenate `parts` along axis 0.

    Every part is a numpy array with at least one dimension, all of the same
    dtype and the same trailing dims; parts may be non-contiguous views and may
    have 0 rows.  The result has shape (sum of rows,) + trailing dims.

    out=None: the result is a new C-contiguous array.
    out=buffer: the result is an ndarray view over the first bytes of `out`
    (e.g. a pooled HostBuffer), which must be writable, C-contiguous, at least
    sum(p.nbytes for p in parts) bytes, and must not overlap the parts.  The
    view keeps a buffer export of `out` alive (a HostBuffer cannot be released
    while it exists).

    Contiguous parts are memcpy'd with the GIL released for large batches;
    object (BYTES) parts go through numpy.concatenate.

    Raises:
        ValueError: no parts; a 0-d part; trailing dims differ; `out` too small.
        TypeError: a part is not an ndarray; dtypes differ; `out` is not a
            writable C-contiguous buffer; object parts with `out`.
    """

def scatter(batch: np.ndarray, counts: Iterable[int], copy: bool = False) -> list[np.ndarray]:
    """Split `batch` along axis 0 into consecutive pieces of counts[i] rows.

    copy=False: the pieces are views of `batch` (zero copy).
    copy=True: each piece is a fresh C-contiguous array (memcpy without the
    GIL for large contiguous batches), so mutating it never touches `batch`.

    Raises:
        TypeError: `batch` is not an ndarray; a count is not an integer.
        ValueError: `batch` is 0-d; a count is negative; counts do not sum to
            batch.shape[0].
    """

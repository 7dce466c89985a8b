"""Batch gather/scatter along axis 0: the dynamic batcher's copy loop.

Native twin of `batching_py`; both must behave identically, errors included.
Contiguous, non-object parts are copied with memcpy, without the GIL when the
batch is large enough for the release to pay off; anything else (strided views,
object/BYTES arrays) goes through numpy.
"""

cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.string cimport memmove

import numpy as np

cnp.import_array()

# Below this many bytes, dropping and retaking the GIL costs more than the copy.
cdef Py_ssize_t NOGIL_MIN_BYTES = 64 * 1024

# Parts copied with plain memcpy; the common case fits on the stack.
cdef enum:
    STACK_COPIES = 64

cdef struct Copy:
    char *dst
    const char *src
    size_t nbytes


cdef void _run_copies(const Copy *copies, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # memmove: an `out` that overlaps a part is the caller's bug, but must not be UB.
        memmove(copies[i].dst, copies[i].src, copies[i].nbytes)


cdef void _copy_all(const Copy *copies, Py_ssize_t n, Py_ssize_t total_bytes):
    if total_bytes >= NOGIL_MIN_BYTES:
        with nogil:
            _run_copies(copies, n)
    else:
        _run_copies(copies, n)


cdef inline cnp.ndarray _as_array(object obj, str where, Py_ssize_t index):
    if not cnp.PyArray_Check(obj):
        raise TypeError(
            f"{where}: parts[{index}] is {type(obj).__name__}, expected numpy.ndarray"
        )
    return <cnp.ndarray>obj


def _view_over(out, dtype, tuple shape, Py_ssize_t nbytes):
    """An ndarray of `dtype`/`shape` over the first `nbytes` bytes of `out`."""
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(
            f"gather: out must support the buffer protocol, got {type(out).__name__}"
        ) from None
    if view.readonly:
        raise TypeError("gather: out must be a writable buffer")
    if not view.c_contiguous:
        raise TypeError("gather: out must be C-contiguous")
    if view.nbytes < nbytes:
        raise ValueError(f"gather: out holds {view.nbytes} bytes, the batch needs {nbytes}")
    flat = np.frombuffer(view.cast("B"), dtype=np.uint8, count=nbytes)
    return flat.view(dtype).reshape(shape)


def gather(parts, out=None):
    """Concatenate `parts` along axis 0 into a new array, or into `out`.

    See batching.pyi for the contract.
    """
    cdef list seq = parts if type(parts) is list else list(parts)
    cdef Py_ssize_t n = len(seq)
    if n == 0:
        raise ValueError("gather: needs at least one part")

    cdef cnp.ndarray first = _as_array(seq[0], "gather", 0)
    cdef int ndim = cnp.PyArray_NDIM(first)
    if ndim == 0:
        raise ValueError("gather: parts[0] is 0-d; parts need a batch axis")
    cdef cnp.dtype dtype = first.descr
    cdef cnp.npy_intp *first_dims = cnp.PyArray_DIMS(first)

    cdef cnp.ndarray part
    cdef cnp.npy_intp *dims
    cdef Py_ssize_t i, rows = 0
    cdef int d
    for i in range(n):
        part = _as_array(seq[i], "gather", i)
        if part.descr is not dtype and not cnp.PyArray_EquivTypes(part.descr, dtype):
            raise TypeError(f"gather: parts[{i}] has dtype {part.descr}, parts[0] has {dtype}")
        dims = cnp.PyArray_DIMS(part)
        if cnp.PyArray_NDIM(part) != ndim:
            raise ValueError(
                f"gather: parts[{i}] has shape {(<object>part).shape}, "
                f"trailing dims must match parts[0] {(<object>first).shape}"
            )
        for d in range(1, ndim):
            if dims[d] != first_dims[d]:
                raise ValueError(
                    f"gather: parts[{i}] has shape {(<object>part).shape}, "
                    f"trailing dims must match parts[0] {(<object>first).shape}"
                )
        rows += dims[0]

    shape = (rows,) + (<object>first).shape[1:]
    if (<object>dtype).hasobject:
        # BYTES tensors hold PyObject pointers: copying needs refcounting, so numpy.
        if out is not None:
            raise TypeError("gather: object (BYTES) parts cannot be gathered into a raw out buffer")
        return np.concatenate(seq, axis=0)

    cdef Py_ssize_t row_bytes = dtype.itemsize
    for d in range(1, ndim):
        row_bytes *= first_dims[d]
    cdef Py_ssize_t total_bytes = rows * row_bytes
    cdef cnp.ndarray result
    if out is None:
        result = np.empty(shape, dtype=dtype)
    else:
        result = _view_over(out, dtype, shape, total_bytes)
    return _fill(result, seq, n, row_bytes)


cdef cnp.ndarray _fill(cnp.ndarray result, list seq, Py_ssize_t n, Py_ssize_t row_bytes):
    cdef Copy stack_copies[STACK_COPIES]
    cdef Copy *copies = stack_copies
    if n > STACK_COPIES:
        copies = <Copy *>malloc(n * sizeof(Copy))
        if copies == NULL:
            raise MemoryError()
    cdef char *dst = <char *>cnp.PyArray_DATA(result)
    cdef Py_ssize_t i, nbytes, n_copies = 0, copied_bytes = 0, row = 0, part_rows
    cdef cnp.ndarray part
    try:
        for i in range(n):
            part = <cnp.ndarray>seq[i]
            part_rows = cnp.PyArray_DIMS(part)[0]
            nbytes = part_rows * row_bytes
            if nbytes == 0:
                pass
            elif cnp.PyArray_IS_C_CONTIGUOUS(part):
                copies[n_copies].dst = dst + row * row_bytes
                copies[n_copies].src = <const char *>cnp.PyArray_DATA(part)
                copies[n_copies].nbytes = <size_t>nbytes
                n_copies += 1
                copied_bytes += nbytes
            else:
                # Strided view: numpy's assignment walks the strides (and drops the GIL itself).
                result[row:row + part_rows] = part
            row += part_rows
        _copy_all(copies, n_copies, copied_bytes)
    finally:
        if copies != stack_copies:
            free(copies)
    return result


def scatter(batch, counts, copy=False):
    """Split `batch` along axis 0 into pieces of `counts[i]` rows.

    See batching.pyi for the contract.
    """
    if not cnp.PyArray_Check(batch):
        raise TypeError(f"scatter: batch is {type(batch).__name__}, expected numpy.ndarray")
    cdef cnp.ndarray arr = <cnp.ndarray>batch
    if cnp.PyArray_NDIM(arr) == 0:
        raise ValueError("scatter: batch is 0-d; it needs a batch axis")
    cdef cnp.npy_intp batch_rows = cnp.PyArray_DIMS(arr)[0]

    cdef list sizes = []
    cdef Py_ssize_t c, total = 0
    for count in counts:
        c = count  # __index__: floats and strings are TypeErrors
        if c < 0:
            raise ValueError(f"scatter: counts must be >= 0, got {c}")
        total += c
        sizes.append(c)
    if total != batch_rows:
        raise ValueError(f"scatter: counts sum to {total}, batch has {batch_rows} rows")

    cdef Py_ssize_t i, n = len(sizes), start = 0
    cdef list pieces = []
    if not copy:
        for i in range(n):
            c = sizes[i]
            pieces.append(arr[start:start + c])
            start += c
        return pieces
    if (<object>arr).dtype.hasobject or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        for i in range(n):
            c = sizes[i]
            pieces.append(arr[start:start + c].copy())
            start += c
        return pieces
    return _copy_pieces(arr, sizes)


cdef list _copy_pieces(cnp.ndarray arr, list sizes):
    cdef Py_ssize_t n = len(sizes)
    cdef Copy stack_copies[STACK_COPIES]
    cdef Copy *copies = stack_copies
    if n > STACK_COPIES:
        copies = <Copy *>malloc(n * sizeof(Copy))
        if copies == NULL:
            raise MemoryError()
    dtype = (<object>arr).dtype
    trailing = (<object>arr).shape[1:]
    cdef Py_ssize_t row_bytes = dtype.itemsize
    cdef int d
    for d in range(1, cnp.PyArray_NDIM(arr)):
        row_bytes *= cnp.PyArray_DIMS(arr)[d]
    cdef const char *src = <const char *>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t i, c, start = 0, n_copies = 0, total_bytes = 0
    cdef cnp.ndarray piece
    cdef list pieces = []
    try:
        for i in range(n):
            c = sizes[i]
            piece = np.empty((c,) + trailing, dtype=dtype)
            pieces.append(piece)
            if c:
                copies[n_copies].dst = <char *>cnp.PyArray_DATA(piece)
                copies[n_copies].src = src + start * row_bytes
                copies[n_copies].nbytes = <size_t>(c * row_bytes)
                n_copies += 1
                total_bytes += c * row_bytes
            start += c
        _copy_all(copies, n_copies, total_bytes)
    finally:
        if copies != stack_copies:
            free(copies)
    return pieces

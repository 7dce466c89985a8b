"""Turn a batch of requests into one tensor per input and back, for backends that run a
whole batch as one array (ONNX Runtime, PyTorch, ...). The Python backend does not use
this: it hands a model its requests one by one, as Triton does.

`gather_inputs` concatenates every request's tensor of each input along the batch axis
with `naiad.ext.batching.gather`, into a buffer leased from the process-wide pool
(`naiad.ext.host_buffers.default_pool()`, page-locked when CUDA is present), so steady
traffic allocates nothing. `scatter_outputs` splits each output back into one piece per
request with `naiad.ext.batching.scatter` (views, no copy, unless asked).

    with gather_inputs(requests) as batch:          # {name: ndarray}, batch.counts
        outputs = session.run(batch)                # {name: ndarray}
        per_request = scatter_outputs(outputs, batch.counts, copy=True)

Leaving the `with` block (or `release()`) returns the buffers to the pool; arrays over a
buffer must be gone by then, so results that outlive the block must be copies (which
is what `copy=True` gives when an output is a view of an input).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from naiad.ext import batching as _native
from naiad.ext.host_buffers import default_pool
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, Tensor

__all__ = ["GatheredInputs", "gather_inputs", "scatter_outputs", "output_tensors"]


class GatheredInputs(dict):
    """{input name: batched ndarray}, plus `counts` (rows each request contributed, in
    request order) and the pooled buffers behind the arrays."""

    __slots__ = ("counts", "_leases")

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[int] = []
        self._leases: list = []

    @property
    def batch_size(self) -> int:
        return sum(self.counts)

    def release(self) -> None:
        """Drop the arrays and hand the buffers back to the pool. Safe to call twice."""
        self.clear()
        leases, self._leases = self._leases, []
        for lease in leases:
            try:
                lease.release()
            except BufferError:
                pass  # someone still holds a view: the buffer returns when that view dies

    def __enter__(self) -> "GatheredInputs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def gather_inputs(requests: Sequence[InferenceRequest], names: Iterable[str] | None = None,
                  pool=None) -> GatheredInputs:
    """One array per input with the requests' rows concatenated along axis 0.

    Every request must carry every gathered input, with the same datatype and the same
    non-batch dims (the dynamic batcher only batches such requests). `names` limits
    which inputs are gathered (default: those of the first request). BYTES inputs are
    gathered as object arrays without a pooled buffer.
    """
    if not requests:
        raise InferenceError.internal("gather_inputs: no requests")
    out = GatheredInputs()
    first = requests[0]
    wanted = list(names) if names is not None else [t.name for t in first.inputs]
    pool = pool if pool is not None else default_pool()
    counts: list[int] | None = None
    for name in wanted:
        parts = []
        for r in requests:
            t = r.input(name)
            if t is None:
                raise InferenceError.internal(f"gather_inputs: request '{r.id}' has no input '{name}'")
            arr = t.array
            if arr.ndim == 0:
                arr = arr.reshape(1)
            parts.append(arr)
        if counts is None:
            counts = [p.shape[0] for p in parts]
        if len(parts) == 1:
            out[name] = parts[0]
            continue
        if parts[0].dtype.hasobject:
            out[name] = _native.gather(parts)
            continue
        nbytes = sum(p.nbytes for p in parts)
        lease = pool.acquire(nbytes)
        out._leases.append(lease)
        try:
            out[name] = _native.gather(parts, out=lease)
        except (TypeError, ValueError) as exc:
            out.release()
            raise InferenceError.invalid(f"cannot batch input '{name}': {exc}") from None
    out.counts = counts or [1] * len(requests)
    return out


def scatter_outputs(outputs: Mapping[str, np.ndarray], counts: Sequence[int],
                    copy: bool = False) -> list[dict[str, np.ndarray]]:
    """Split each batched output into per-request pieces of `counts[i]` rows.

    copy=False gives views of the batched arrays (zero copy); copy=True gives fresh
    arrays, needed when an output lives in a pooled buffer that is about to return.
    """
    per_request: list[dict[str, np.ndarray]] = [{} for _ in counts]
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if arr.ndim == 0 or arr.shape[0] != sum(counts):
            raise InferenceError.internal(
                f"output '{name}' has shape {list(arr.shape)}; its first dimension must be the batch size "
                f"{sum(counts)}")
        for i, piece in enumerate(_native.scatter(arr, counts, copy=copy)):
            per_request[i][name] = piece
    return per_request


def output_tensors(pieces: Mapping[str, np.ndarray], datatypes: Mapping[str, str] | None = None) -> list[Tensor]:
    """One request's scattered outputs as response tensors (datatype from the config
    when given, else from the array)."""
    datatypes = datatypes or {}
    return [Tensor.from_numpy(name, arr, datatypes.get(name)) for name, arr in pieces.items()]

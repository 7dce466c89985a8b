"""The dynamic batcher's per-model queue and batching decisions (native or Python twin)."""

import asyncio
from collections.abc import Callable, Sequence

NATIVE: bool
"""True when the native module is built (and NAIAD_PURE_PYTHON is not 1)."""

class BatchQueue:
    """Queued requests of one model version as opaque integer handles, and the dynamic
    batcher's rules over them.

    policies: one (reject_on_timeout, default_timeout_us, allow_timeout_override,
    max_queue_size) per priority level, level 1 first.  shape_key: requests batch only
    with requests of the same key (ignored when not `dynamic`).
    """

    def __init__(self, dynamic: bool, max_batch_size: int, preferred: Sequence[int], delay_ns: int, levels: int,
                 default_level: int, policies: Sequence[tuple[bool, int, bool, int]]) -> None: ...
    def push(self, handle: int, priority: int, timeout_us: int, batch_size: int, shape_key: int,
             enqueue_ns: int) -> bool:
        """Queue one request (time.monotonic_ns clock); False when its level is full."""
    def pump(self, idle: int) -> tuple[list[list[int]], list[int]]:
        """`idle` workers wait for a batch: decide now; (batches for them, in the order
        they go, and handles rejected on timeout) since the last call.  Batches the
        native timer formed meanwhile count against `idle` first."""
    def close(self) -> None:
        """From now on a batch never waits for the queue delay."""
    def take_all(self) -> list[int]:
        """Remove and return every queued handle, in service order."""
    def stop(self) -> None:
        """Stop timers (the native timer thread)."""
    def fileno(self) -> int:
        """The eventfd the native timer signals (-1: none)."""
    @property
    def size(self) -> int: ...
    @property
    def wants(self) -> int: ...
    def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        """Call `on_ready` on `loop` when decisions became due (then `pump` collects)."""
    def detach(self) -> None: ...

NativeBatchQueue: type[BatchQueue] | None

def queue_class(native: bool = True) -> type[BatchQueue]: ...

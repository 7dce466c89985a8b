"""Pure-Python twin of `_batcher`: the dynamic batcher's queue and batching decisions.

Same constructor, methods and results as the native `BatchQueue`; where the native one
has a timer thread and an eventfd, this one arms a loop timer (`loop.call_at`) for the
next due time. Used when the native module is not built, when the config turns the
native batcher off, and as the reference the native one is tested against.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["BatchQueue"]

# (reject_on_timeout, default_timeout_us, allow_timeout_override, max_queue_size)
PolicyTuple = tuple[bool, int, bool, int]


class _Entry:
    __slots__ = ("handle", "batch_size", "shape_key", "enqueue_ns", "deadline_ns")

    def __init__(self, handle: int, batch_size: int, shape_key: int, enqueue_ns: int, deadline_ns: int) -> None:
        self.handle = handle
        self.batch_size = batch_size
        self.shape_key = shape_key
        self.enqueue_ns = enqueue_ns
        self.deadline_ns = deadline_ns


class BatchQueue:
    def __init__(self, dynamic: bool, max_batch_size: int, preferred: Sequence[int], delay_ns: int, levels: int,
                 default_level: int, policies: Sequence[PolicyTuple]) -> None:
        levels = max(int(levels), 1)
        if not 1 <= default_level <= levels:
            raise ValueError(f"default_level {default_level} is outside 1..{levels}")
        if len(policies) != levels:
            raise ValueError(f"need one policy per level: {levels} levels, {len(policies)} policies")
        self._dynamic = bool(dynamic)
        self._max_batch = int(max_batch_size)
        self._preferred = sorted(int(p) for p in preferred)
        self._delay_ns = int(delay_ns)
        self._levels = levels
        self._default_level = int(default_level)
        self._policies = [tuple(p) for p in policies]
        self._any_timeouts = any(p[1] > 0 for p in self._policies)
        self._queues: list[deque[_Entry]] = [deque() for _ in range(levels)]
        self._delayed: deque[_Entry] = deque()  # timed out under a DELAY policy
        self._size = 0
        self._wants = 0
        self._closing = False
        self._ready: list[list[int]] = []
        self._expired: list[int] = []
        self._due = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_ready: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0

    # ------------------------------------------------------------------ interface --

    def push(self, handle: int, priority: int, timeout_us: int, batch_size: int, shape_key: int,
             enqueue_ns: int) -> bool:
        level = priority if 1 <= priority <= self._levels else self._default_level
        reject, timeout, allow_override, max_size = self._policies[level - 1]
        q = self._queues[level - 1]
        if max_size and len(q) >= max_size:
            return False
        # A request's own timeout may only shorten the default (no default: no timeout).
        if allow_override and 0 < timeout_us < timeout:
            timeout = timeout_us
        deadline = enqueue_ns + timeout * 1000 if timeout else 0
        q.append(_Entry(handle, batch_size, shape_key if self._dynamic else 0, enqueue_ns, deadline))
        self._size += 1
        if deadline:
            self._arm(deadline)
        return True

    def pump(self, idle: int) -> tuple[list[list[int]], list[int]]:
        self._wants = max(0, idle - len(self._ready))
        self._decide(time.monotonic_ns())
        ready, self._ready = self._ready, []
        expired, self._expired = self._expired, []
        if self._due:
            self._arm(self._due)
        return ready, expired

    def close(self) -> None:
        self._closing = True

    def take_all(self) -> list[int]:
        out = [e.handle for q in self._order() for e in q]
        for q in self._order():
            q.clear()
        self._size = 0
        return out

    def stop(self) -> None:
        self._disarm()

    def fileno(self) -> int:
        return -1

    @property
    def size(self) -> int:
        return self._size

    @property
    def wants(self) -> int:
        return self._wants

    def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        """Call `on_ready` on `loop` when a due time passes (then `pump` collects)."""
        self._loop = loop
        self._on_ready = on_ready

    def detach(self) -> None:
        self.stop()
        self._loop = self._on_ready = None

    # ------------------------------------------------------------------ decisions --

    def _order(self):
        return (*self._queues, self._delayed)

    def _expire(self, now: int) -> None:
        for lvl, q in enumerate(self._queues):
            if not q:
                continue
            reject = self._policies[lvl][0]
            keep: deque[_Entry] = deque()
            changed = False
            for e in q:
                if e.deadline_ns and now >= e.deadline_ns:
                    changed = True
                    if reject:
                        self._expired.append(e.handle)
                        self._size -= 1
                    else:
                        e.deadline_ns = 0
                        self._delayed.append(e)
                else:
                    keep.append(e)
            if changed:
                self._queues[lvl] = keep

    def _plan(self) -> tuple[int, bool]:
        """(requests in the next batch, whether it is final: send now)."""
        if not self._dynamic:
            return 1, True
        max_batch = self._max_batch
        preferred = self._preferred
        total = count = best_preferred = 0
        key = None
        for q in self._order():
            for e in q:
                if count and e.shape_key != key:
                    return (best_preferred or count), True  # a shape change ends the batch
                if total + e.batch_size > max_batch:
                    return (best_preferred or count), True
                if not count:
                    key = e.shape_key
                total += e.batch_size
                count += 1
                i = bisect.bisect_left(preferred, total)
                if i < len(preferred) and preferred[i] == total:
                    best_preferred = count
                if total == max_batch:
                    return count, True
        if best_preferred:
            return best_preferred, True
        return count, False

    def _take(self, n: int) -> None:
        batch: list[int] = []
        for q in self._order():
            while q and len(batch) < n:
                batch.append(q.popleft().handle)
            if len(batch) >= n:
                break
        self._size -= len(batch)
        self._ready.append(batch)

    def _decide(self, now: int) -> None:
        if self._any_timeouts and self._size:
            self._expire(now)
        due = 0
        while self._wants > 0 and self._size > 0:
            count, final = self._plan()
            # A second idle worker does not wait: it takes what is there.
            if not final and self._delay_ns > 0 and not self._closing and self._wants < 2:
                fire_at = min(q[0].enqueue_ns for q in self._order() if q) + self._delay_ns
                if fire_at > now:
                    due = fire_at
                    break
            self._take(count)
            self._wants -= 1
        if self._any_timeouts and self._size:
            deadlines = [e.deadline_ns for q in self._queues for e in q if e.deadline_ns]
            if deadlines and (not due or min(deadlines) < due):
                due = min(deadlines)
        self._due = due

    # ------------------------------------------------------------------ timer --

    def _arm(self, at_ns: int) -> None:
        """A loop timer for `at_ns` unless one fires sooner (the native timer thread's job)."""
        loop = self._loop
        if loop is None or (self._timer is not None and self._timer_at <= at_ns):
            return
        self._disarm()
        self._timer_at = at_ns
        delay = max(0.0, (at_ns - time.monotonic_ns()) / 1e9)
        self._timer = loop.call_at(loop.time() + delay, self._fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = 0

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = 0
        if self._on_ready is not None:
            self._on_ready()

"""Triton's sequence batcher: stateful models that see each sequence's requests in order.

A sequence is the requests that share a correlation id, from one with the START flag to
one with the END flag. Each live sequence holds a *slot* on one instance; a sequence that
finds no free slot waits in the backlog, whole, until one frees. Per request the batcher
injects the control inputs the config asks for — START, END, READY as the config's
int32 / fp32 / bool false/true values, CORRID as the correlation id — and the implicit
state (`sequence_batching.state`): the state input on a sequence's first request is its
`initial_state` (or zeros), on every later one the state output of the request before.

Two strategies, as in Triton:

* direct (default): slots are the rows of a batch. One worker per instance takes the
  next request of every slot that has one; a slot with nothing pending below the highest
  busy slot gets a *null* request (a copy of a real one with READY false, CORRID 0) so
  that every sequence keeps its row. `max_queue_delay_microseconds` with
  `minimum_slot_utilization` lets a batch wait to fill.
* oldest: each sequence has at most one request in flight; the next one is issued when
  the last is released. In-flight requests of different sequences are batched by a
  dynamic batcher (`oldest.preferred_batch_size`, `max_queue_delay_microseconds`), one
  per instance with `max_candidate_sequences` slots.

A reload that removes an instance (`remove_instances`) frees its idle slots at once; its
sequences keep their slots until they end, and the instance is closed after the last.

A sequence with no request for `max_sequence_idle_microseconds` is ended and its slot
freed; its next request is refused with Triton's "must specify the START flag" error. A
sequence that waited in the backlog is idle from the moment it gets its slot. With
`iterative_sequence: true` a request without a correlation id starts a sequence of its
own, the model may release it with RESCHEDULE (`ResponseSink.reschedule()`) to run it
again in a later batch, and the sequence ends when the request is released without it.

A cancelled request still queued is removed with its whole sequence (slot freed, queued
requests answered CANCELLED), as Triton does; one that is executing is the backend's
to stop (`is_cancelled()`).
"""

from .scheduler import SequenceScheduler
from .settings import SequenceSettings, control_input_names

__all__ = ["SequenceScheduler", "SequenceSettings", "control_input_names"]

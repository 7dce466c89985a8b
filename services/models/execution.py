"""Running one batch on a model instance, as every scheduler does: an instance that raises
answers each of the batch's requests with the error (a crash is the model's failure, not
the scheduler's), and a scheduler stopped mid-batch answers them UNAVAILABLE."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from naiad.kernel.inference.backend import ExecutionTimes, ModelInstance
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import InferenceRequest, ResponseSink

log = logging.getLogger("naiad.services.models")


async def execute_batch(instance: ModelInstance, requests: Sequence[InferenceRequest], watched: Sequence[ResponseSink],
                        sinks: Sequence[ResponseSink], model_name: str, failed_log: str,
                        *log_args: Any) -> ExecutionTimes | None:
    """`instance.execute(requests, watched)`; None when it raised (every sink in `sinks`
    answered, the error logged as `failed_log % (*log_args, message)`)."""
    try:
        return await instance.execute(requests, watched)
    except asyncio.CancelledError:
        err = InferenceError.unavailable(f"model '{model_name}' stopped while executing")
        for s in sinks:
            s.finish(err)
        raise
    except Exception as exc:
        err = exc if isinstance(exc, InferenceError) else InferenceError.internal(
            f"model '{model_name}' instance failed: {exc}")
        log.error(failed_log, *log_args, err.message)
        for s in sinks:
            s.finish(err)
        return None

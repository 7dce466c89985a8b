"""The server side of the stub's calls: BLS requests (run through the BackendContext,
results staged back into the arena), `is_cancelled()`, custom metrics and model control.

`ServerCalls` is a part of `Session` (a mixin): it answers on the session's channel and
shares its state (arena, batches, context, death)."""

from __future__ import annotations

import asyncio
from typing import Any

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

from ..ipc import BLS_RESULT, CALL_RESULT
from .packing import copy_in, plain, stage

_EMPTY = (-1, 0, 0)  # no block


class ServerCalls:
    """Answers the stub's BLS, control and metric calls (a mixin of `Session`)."""

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _bls(self, msg: tuple) -> None:
        _, _, cid, decoupled, model_name, version, meta, rid, base, total = msg
        rq_id, corr, flags, timeout, params, requested, descs = meta
        blob = self._blob(rid, base, total)
        inputs = [Tensor(name, dt, shape, raw=blob[off : off + n] if n else b"") for name, dt, shape, off, n in descs]
        request = InferenceRequest(
            model_name,
            inputs,
            model_version="" if version < 0 else str(version),
            id=rq_id,
            outputs=[RequestedOutput(n) for n in requested] or None,
            parameters=dict(params),
            timeout_us=timeout,
            sequence_id=corr,
            sequence_start=bool(flags & 1),
            sequence_end=bool(flags & 2),
            protocol="bls",
        )
        try:
            if decoupled:
                final = False
                async for resp in self.context.stream(request):
                    final = resp.final
                    self._bls_result(cid, final, resp)
                    if final:
                        break
                if not final:
                    self._bls_result(cid, True, None)
            else:
                resp = await self.context.infer(request)
                self._bls_result(cid, True, resp)
        except asyncio.CancelledError:
            request.cancel.cancel()  # the stub is gone: let the callee stop too
            raise
        except InferenceError as exc:
            self._bls_result(cid, True, exc)
        except Exception as exc:  # noqa: BLE001 (report anything to the model)
            self._bls_result(cid, True, InferenceError.internal(f"BLS request failed: {exc}"))

    def _bls_result(self, cid: int, final: bool, resp: InferenceResponse | InferenceError | None) -> None:
        if self.dead:
            return
        if resp is None:
            self._send(BLS_RESULT, cid, final, (None, {}, ()), *_EMPTY)
            return
        error = resp if isinstance(resp, InferenceError) else resp.error
        if error is not None:
            self._send(BLS_RESULT, cid, final, ((int(error.code), error.message), {}, ()), *_EMPTY)
            return
        descs: list = []
        staged: list = []
        total = stage(resp.outputs, descs, staged, 0)
        block = _EMPTY
        if descs:
            block = (*copy_in(self.ep.arena, staged, total), total)
        params = {k: plain(v) for k, v in resp.parameters.items()} if resp.parameters else {}
        self._send(BLS_RESULT, cid, final, (None, params, tuple(descs)), *block)

    def _answer_is_cancelled(self, msg: tuple) -> None:
        """A model's `is_cancelled()`: answered at once from the server's own cancel flag."""
        _, _, cid, _, (bid, index) = msg
        batch = self.batches.get(bid)
        if batch is None:
            cancelled = False
        elif batch.lane is not None:  # a native lane's request: its front end knows
            cancelled = batch.lane.is_cancelled(index)
        else:
            cancelled = index < len(batch.requests) and batch.requests[index].cancel.cancelled
        self._send(CALL_RESULT, cid, None, cancelled)

    def _metric_call(self, msg: tuple) -> None:
        """A custom-metric call: answered at once, in order (call id 0: no answer wanted)."""
        _, _, cid, op, args = msg
        try:
            result = (None, self.metrics.call(op, args))
        except InferenceError as exc:
            result = ((int(exc.code), exc.message), None)
        except (TypeError, ValueError, KeyError) as exc:  # arguments the stub got wrong
            result = ((int(ErrorCode.INVALID_ARG), str(exc)), None)
        if cid:
            self._send(CALL_RESULT, cid, *result)

    async def _control(self, msg: tuple) -> None:
        _, _, cid, op, args = msg
        ctx = self.context
        try:
            value = None
            if op == "load_model":
                name, config, files = args
                await ctx.load_model(name, config, files)
            elif op == "unload_model":
                await ctx.unload_model(*args)
            elif op == "is_model_ready":
                value = bool(await ctx.model_ready(*args))
            else:
                raise InferenceError.unsupported(f"unknown model control call '{op}'")
            result = (None, value)
        except asyncio.CancelledError:
            raise
        except InferenceError as exc:
            result = ((int(exc.code), exc.message), None)
        except Exception as exc:  # noqa: BLE001
            result = ((int(ErrorCode.INTERNAL), str(exc)), None)
        self._send(CALL_RESULT, cid, *result)

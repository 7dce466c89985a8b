"""The OpenAI-compatible service: an aiohttp app on its own port that turns OpenAI calls into
bus requests to the models service (StreamInfer), as the HTTP service's generate routes do."""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

import orjson
from aiohttp import web

from naiad.kernel.bus import BusError
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import (ModelConfigQuery, ModelIsDecoupledQuery, ModelMetadataQuery,
                                             RepositoryIndexQuery, StreamInfer)
from naiad.kernel.inference.trace import end_stream
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, QueueSink
from naiad.kernel.service import Service

from .config import OpenAIConfig
from .mapping import BadRequest, build_request, chat_prompt, count_tokens, embedding, response_text

_JSON = "application/json"
# Traced as the HTTP protocol's activities: this is HTTP too.
_RECV = ("HTTP_RECV_START", "HTTP_RECV_END")
_SEND = ("HTTP_SEND_START", "HTTP_SEND_END")


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type=_JSON)


class OpenAIService(Service):
    Config = OpenAIConfig
    essential = False
    enabled_by_default = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: OpenAIConfig
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._guard])
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.address, self.config.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the bound port when 0 was asked
        self.log.info("openai: listening on %s:%d", self.config.address, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ errors, auth --

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.config.api_key
        if key and request.headers.get("Authorization", "") != f"Bearer {key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"Request body larger than {self.config.max_body_bytes} bytes.",
                          "invalid_request_error")
        except web.HTTPNotFound:
            return _error(404, f"Unknown path {request.path}.", "invalid_request_error")
        except web.HTTPMethodNotAllowed:
            return _error(405, f"Method {request.method} not allowed on {request.path}.", "invalid_request_error")
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error", exc.param)
        except InferenceError as exc:
            if exc.code == ErrorCode.NOT_FOUND or exc.code == ErrorCode.UNAVAILABLE:
                return _error(404, exc.message, "invalid_request_error", "model", "model_not_found")
            status = 400 if exc.code == ErrorCode.INVALID_ARG else 500
            return _error(status, exc.message, "invalid_request_error" if status == 400 else "server_error")
        except BusError as exc:
            return _error(503, str(exc), "server_error")

    async def _body(self, request: web.Request) -> dict:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if not isinstance(body.get("model"), str):
            raise BadRequest("'model' is required", "model")
        return body

    # ------------------------------------------------------------------ models --

    async def _ready(self) -> list:
        return [e for e in await self.bus.request(RepositoryIndexQuery(ready_only=True)) if e.state == "READY"]

    @staticmethod
    def _model_obj(name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "naiad"}

    async def models(self, request: web.Request) -> web.Response:
        names = sorted({e.name for e in await self._ready()})
        return _json({"object": "list", "data": [self._model_obj(n) for n in names]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in {e.name for e in await self._ready()}:
            return _error(404, f"The model '{name}' does not exist", "invalid_request_error", "model",
                          "model_not_found")
        return _json(self._model_obj(name))

    # ------------------------------------------------------------------ inference --

    async def _submit(self, req: InferenceRequest, headers: Any) -> QueueSink:
        """Send `req` to the models service (traced when the tracing service samples it)."""
        self.context.traces.begin(req, headers, _RECV)
        sink = QueueSink()
        try:
            await self.bus.request(StreamInfer(req, sink))
        except BaseException:
            end_stream(req.trace, _SEND)
            raise
        return sink

    async def _stream(self, model: str, prompt: str, body: dict, headers: Any) -> AsyncIterator[str]:
        """Submits one request and yields text pieces as the model sends them."""
        meta = await self.bus.request(ModelMetadataQuery(model))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or self.config.default_max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("'max_tokens' must be a positive integer", "max_tokens")
        decoupled = await self.bus.request(ModelIsDecoupledQuery(model))
        req = build_request(model, meta, prompt, body, max_tokens, bool(body.get("stream")) and decoupled)
        sink = await self._submit(req, headers)
        try:
            async for response in sink:
                yield response_text(response)
        finally:
            if not sink.done:  # the client went away: let the model stop generating
                req.cancel.cancel()
            end_stream(req.trace, _SEND)

    async def _template(self, model: str) -> str | None:
        config = await self.bus.request(ModelConfigQuery(model))
        param = config.parameters.get("chat_template") if config.parameters else None
        return param.string_value if param is not None and param.string_value else None

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string", "prompt")
        return await self._respond(request, body, prompt, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        template = await self._template(body["model"])
        return await self._respond(request, body, chat_prompt(body.get("messages"), template), chat=True)

    async def _respond(self, request: web.Request, body: dict, prompt: str, chat: bool) -> web.StreamResponse:
        model = body["model"]
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        pieces = self._stream(model, prompt, body, request.headers)
        if not body.get("stream"):
            text = "".join([p async for p in pieces])
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return _json({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice],
                          "usage": _usage(prompt, text)})
        first = await anext(pieces, None)  # errors before the first token still get a JSON status
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        kind += ".chunk" if chat else ""
        text = ""

        async def send(delta: dict | None, finish: str | None, usage: dict | None = None) -> None:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = delta or {}
            else:
                choice["text"] = (delta or {}).get("content", "")
            chunk = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}
            if usage is not None:
                chunk["usage"] = usage
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        if chat:
            await send({"role": "assistant", "content": ""}, None)
        try:
            piece = first
            while piece is not None:
                if piece:
                    text += piece
                    await send({"content": piece}, None)
                piece = await anext(pieces, None)
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            await send(None, "stop", _usage(prompt, text) if include_usage else None)
        except InferenceError as exc:
            err = {"error": {"message": exc.message, "type": "server_error", "param": None, "code": None}}
            await resp.write(b"data: " + orjson.dumps(err) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or an array of strings", "input")
        model = body["model"]
        meta = await self.bus.request(ModelMetadataQuery(model))
        data, prompt_tokens = [], 0
        for i, text in enumerate(texts):
            req = build_request(model, meta, text, body, 1, False)
            sink = await self._submit(req, request.headers)
            try:
                responses: list[InferenceResponse] = [r async for r in sink]
            finally:
                end_stream(req.trace, _SEND)
            if not responses:
                raise InferenceError.internal(f"model '{model}' sent no response")
            data.append({"object": "embedding", "index": i, "embedding": embedding(responses[0])})
            prompt_tokens += count_tokens(text)
        return _json({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})


def _usage(prompt: str, text: str) -> dict:
    p, c = count_tokens(prompt), count_tokens(text)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

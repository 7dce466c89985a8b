"""Serve a model repository inside this Python process: `naiad.Server`.

The same `Kernel`, model manager, backends and schedulers as `naiad serve`; requests
cross the kernel's bus instead of a socket. Network services (HTTP, gRPC, metrics) stay
off unless asked for (`services=["http"]`, or a port such as `http_port=8000`).

Two ways to run it:
- `with Server(...) as s:` runs the kernel's event loop in a background thread; the plain
  methods (`s.model("m").infer(...)`) block until the answer.
- `async with Server(...) as s:` runs the kernel in the caller's loop; use the `async_`
  methods there (`await s.model("m").async_infer(...)`). The `async_` methods also work on
  a threaded server, from any other loop.
Errors are `naiad.InferenceError` with Triton's message (`.message`) and code (`.code`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import queue
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Iterable, Iterator, Mapping, TypeVar

import numpy as np

from naiad.kernel import logs
from naiad.kernel.config import LogConfig, NaiadConfig, ServerConfig, from_table, merge, read_toml
from naiad.kernel.inference import model_config
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.messages import (
    LoadModel,
    ModelConfigQuery,
    ModelMetadataQuery,
    ModelReadyQuery,
    ModelStatisticsQuery,
    RepositoryIndexQuery,
    StreamInfer,
    UnloadModel,
)
from naiad.kernel.inference.types import InferenceRequest, QueueSink, RequestedOutput, Tensor
from naiad.kernel.kernel import Kernel
from naiad.kernel.lifecycle import Phase
from naiad.kernel.loop import new_event_loop
from naiad.kernel.messages import ServerLiveQuery, ServerReadyQuery
from naiad.kernel.startup import repository_error
from naiad.services.http import render

T = TypeVar("T")

#: Services that open sockets: off in-process unless named in `services` or given a port.
NETWORK_SERVICES = ("http", "grpc", "metrics")
_SERVER_KEYS = {f.name for f in dataclasses.fields(ServerConfig)}
_LOG_KEYS = {f.name for f in dataclasses.fields(LogConfig)}

Inputs = Mapping[str, Any]


def config_table(model_repository: str | os.PathLike | Iterable[str | os.PathLike], *,
                 config: str | os.PathLike | None = None, services: Iterable[str] = (),
                 **settings: Any) -> dict[str, Any]:
    """The config table for `Server`'s arguments (keys as in naiad.toml, flags' names):
    `[server]` keys by name (`model_control_mode`, `load_model`, ...), `[log]` keys with
    `log_` (`log_verbose`), `<service>_port` / `<service>_host`, or whole sections
    (`backends={...}`, `cache={...}`)."""
    repos = [model_repository] if isinstance(model_repository, (str, os.PathLike)) else list(model_repository)
    table: dict[str, Any] = {"server": {"model_repository": [os.fspath(p) for p in repos]}}
    wanted = set(services)
    svc: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        name, _, field = key.rpartition("_")
        if key in _SERVER_KEYS:
            table["server"][key] = value
        elif key.startswith("log_") and key[4:] in _LOG_KEYS:
            table.setdefault("log", {})[key[4:]] = value
        elif key in ("backends", "cache") and isinstance(value, dict):
            table[key] = value
        elif name in NETWORK_SERVICES and field in ("port", "host"):
            svc.setdefault(name, {})[field] = value
            wanted.add(name)
        else:
            raise TypeError(f"Server() got an unknown setting '{key}'")
    for name in NETWORK_SERVICES:
        section = svc.setdefault(name, {})
        section["enabled"] = name in wanted
        if name in wanted:  # loopback and any free port unless told otherwise
            section.setdefault("host", "127.0.0.1")
            section.setdefault("port", 0)
    table["services"] = svc
    return merge(read_toml(config), table) if config else table


def _outputs(response: Any) -> dict[str, np.ndarray]:
    if response.error is not None:
        raise response.error
    # A copy: a backend's output may be a view over memory it reuses.
    return {t.name: np.array(t.array) for t in response.outputs}


def _request(name: str, version: str, inputs: Inputs, outputs: Iterable[str] | None,
             parameters: Mapping[str, Any] | None, request_id: str) -> InferenceRequest:
    tensors = [Tensor.from_numpy(k, v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in inputs.items()]
    requested = None if outputs is None else [RequestedOutput(o) for o in outputs]
    return InferenceRequest(name, tensors, model_version=version, id=request_id, outputs=requested,
                            parameters=dict(parameters or {}), protocol="python")


class Server:
    """A naiad server inside this process; see the module doc."""

    def __init__(self, model_repository: str | os.PathLike | Iterable[str | os.PathLike], **settings: Any) -> None:
        self.config: NaiadConfig = from_table(config_table(model_repository, **settings), "<naiad.Server>")
        # naiad's log handler (Triton's format, on stderr or log_file) only when asked for;
        # otherwise the `naiad` logger goes wherever the application sends its logging.
        self._own_logs = "config" in settings or any(k.startswith("log_") for k in settings)
        self.kernel: Kernel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # ---------------------------------------------------------------- start and stop --

    async def _start(self) -> None:
        error = repository_error(self.config.server.model_repository)
        if error is not None:
            raise InferenceError(error.message)
        if self._own_logs:
            logs.configure(self.config.log)
        self.kernel = Kernel(self.config)
        try:
            await self.kernel.start()
        except BaseException:
            await self.kernel.supervisor.stop_all()
            self.kernel.lifecycle.phase = Phase.STOPPED
            raise
        self._loop = asyncio.get_running_loop()

    async def _shutdown(self) -> None:
        kernel = self.kernel
        if kernel is not None and kernel.lifecycle.phase is not Phase.STOPPED:
            await kernel.shutdown()

    async def __aenter__(self) -> "Server":
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._shutdown()

    def start(self) -> "Server":
        """Start the kernel on its own event loop in a background thread."""
        started: concurrent.futures.Future = concurrent.futures.Future()

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self._start()
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            await self._stop.wait()
            await self._shutdown()

        def run() -> None:
            loop = new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="naiad-server", daemon=True)
        self._thread.start()
        started.result()
        return self

    def stop(self) -> None:
        """Drain and stop a server started with `start()`; waits until it has stopped."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- calls --

    def _in_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _sync(self, coro: Awaitable[T]) -> T:
        if self._loop is None or self._thread is None:
            coro.close()  # type: ignore[attr-defined]
            raise RuntimeError("naiad.Server: the blocking methods need `with Server(...)` (or start()); "
                               "under `async with` use the async_ methods")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def _async(self, coro: Awaitable[T]) -> T:
        if self._loop is None:
            raise RuntimeError("naiad.Server is not running")
        if self._in_own_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))  # type: ignore[arg-type]

    async def _bus(self, message: Any) -> Any:
        """Send a message as a front end does: counted in flight, refused while draining."""
        assert self.kernel is not None
        lifecycle = self.kernel.lifecycle
        if not lifecycle.accepting:
            raise InferenceError.unavailable("Server is not ready")
        lifecycle.enter()
        try:
            return await self.kernel.bus.request(message)
        finally:
            lifecycle.leave()

    # ---------------------------------------------------------------- server API --

    @property
    def http_port(self) -> int:
        return self._service_port("http")

    @property
    def grpc_port(self) -> int:
        return self._service_port("grpc")

    @property
    def metrics_port(self) -> int:
        return self._service_port("metrics")

    def _service_port(self, name: str) -> int:
        svc = self.kernel.services.get(name) if self.kernel is not None else None
        if svc is None:
            raise RuntimeError(f"naiad.Server: the {name} service is not enabled")
        return svc.port  # type: ignore[attr-defined]

    def model(self, name: str, version: str | int = "") -> "Model":
        return Model(self, name, str(version))

    async def async_live(self) -> bool:
        return await self._async(self.kernel.bus.request(ServerLiveQuery()))  # type: ignore[union-attr]

    async def async_ready(self) -> bool:
        return await self._async(self.kernel.bus.request(ServerReadyQuery()))  # type: ignore[union-attr]

    async def async_models(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index, as Triton's repository/index answers it."""
        return render.repository_index(await self._async(self._bus(RepositoryIndexQuery(ready_only=ready_only))))

    async def async_load(self, name: str, config: str | Mapping[str, Any] | None = None,
                         files: Mapping[str, bytes] | None = None) -> None:
        """Load or reload; `config` (JSON text or a dict) overrides config.pbtxt, `files`
        maps "file:<path in the version folder>" to content, as Triton's load API."""
        import json

        text = json.dumps(config) if isinstance(config, Mapping) else config
        await self._async(self._bus(LoadModel(name, config=text, files=dict(files or {}))))

    async def async_unload(self, name: str, unload_dependents: bool = False) -> None:
        await self._async(self._bus(UnloadModel(name, unload_dependents=unload_dependents)))

    def live(self) -> bool:
        return self._sync(self.async_live())

    def ready(self) -> bool:
        return self._sync(self.async_ready())

    def models(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return self._sync(self.async_models(ready_only))

    def load(self, name: str, config: str | Mapping[str, Any] | None = None,
             files: Mapping[str, bytes] | None = None) -> None:
        self._sync(self.async_load(name, config, files))

    def unload(self, name: str, unload_dependents: bool = False) -> None:
        self._sync(self.async_unload(name, unload_dependents))


class Model:
    """One model (and optional version) of a running `Server`."""

    def __init__(self, server: Server, name: str, version: str = "") -> None:
        self.server = server
        self.name = name
        self.version = version

    def __repr__(self) -> str:
        return f"Model({self.name!r}, version={self.version!r})"

    # ---------------------------------------------------------------- async --

    async def async_infer(self, inputs: Inputs, outputs: Iterable[str] | None = None,
                          parameters: Mapping[str, Any] | None = None, request_id: str = "") -> dict[str, np.ndarray]:
        """One request, one response: output name -> numpy array (BYTES: object arrays of bytes)."""
        request = _request(self.name, self.version, inputs, outputs, parameters, request_id)
        return _outputs(await self.server._async(self.server._bus(request)))

    async def async_stream(self, inputs: Inputs, outputs: Iterable[str] | None = None,
                           parameters: Mapping[str, Any] | None = None,
                           request_id: str = "") -> AsyncIterator[dict[str, np.ndarray]]:
        """Every response of one request (a decoupled model's stream); an empty final
        response is not yielded."""
        server = self.server
        sink = QueueSink()
        if not server._in_own_loop():  # responses cross from the kernel's thread
            caller, relay = asyncio.get_running_loop(), sink.queue
            sink.queue = _Relay(lambda item: caller.call_soon_threadsafe(relay.put_nowait, item))  # type: ignore[assignment]
            sink.queue.get = relay.get  # type: ignore[attr-defined]
        request = _request(self.name, self.version, inputs, outputs, parameters, request_id)
        await server._async(server._bus(StreamInfer(request, sink)))
        try:
            async for response in sink:
                if response.outputs or response.error is not None or not response.final:
                    yield _outputs(response)
        finally:
            if not sink.done:  # the caller stopped reading: the model may stop producing
                _call_in(server, request.cancel.cancel)

    async def async_ready(self) -> bool:
        return await self.server._async(self.server._bus(ModelReadyQuery(self.name, self.version)))

    async def async_metadata(self) -> dict[str, Any]:
        return render.model_metadata(await self.server._async(self.server._bus(ModelMetadataQuery(self.name, self.version))))

    async def async_config(self) -> dict[str, Any]:
        return model_config.to_dict(await self.server._async(self.server._bus(ModelConfigQuery(self.name, self.version))))

    async def async_statistics(self) -> dict[str, Any]:
        stats = await self.server._async(self.server._bus(ModelStatisticsQuery(self.name, self.version)))
        return render.statistics(stats)

    # ---------------------------------------------------------------- blocking --

    def infer(self, inputs: Inputs, outputs: Iterable[str] | None = None,
              parameters: Mapping[str, Any] | None = None, request_id: str = "") -> dict[str, np.ndarray]:
        return self.server._sync(self.async_infer(inputs, outputs, parameters, request_id))

    def stream(self, inputs: Inputs, outputs: Iterable[str] | None = None,
               parameters: Mapping[str, Any] | None = None, request_id: str = "") -> Iterator[dict[str, np.ndarray]]:
        items: queue.Queue = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for item in self.async_stream(inputs, outputs, parameters, request_id):
                    items.put(item)
            except BaseException as exc:
                items.put(exc)
            items.put(done)

        task = self.server._sync(_spawn(pump()))
        try:
            while (item := items.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            _call_in(self.server, task.cancel)

    def ready(self) -> bool:
        return self.server._sync(self.async_ready())

    def metadata(self) -> dict[str, Any]:
        return self.server._sync(self.async_metadata())

    def config(self) -> dict[str, Any]:
        return self.server._sync(self.async_config())

    def statistics(self) -> dict[str, Any]:
        return self.server._sync(self.async_statistics())


class _Relay:
    """A queue front whose put_nowait hands items to another thread's loop."""

    def __init__(self, put: Any) -> None:
        self.put_nowait = put


async def _spawn(coro: Awaitable[None]) -> asyncio.Future:
    """Run `coro` as a task of the current loop without waiting for it."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def _call_in(server: Server, callback: Any) -> None:
    """Call `callback` on the kernel's loop (cancel tokens and tasks belong to it)."""
    loop = server._loop
    if loop is None or loop.is_closed():
        return
    if server._in_own_loop():
        callback()
    else:
        loop.call_soon_threadsafe(callback)


_TASKS: set[asyncio.Task] = set()

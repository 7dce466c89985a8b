"""The repository manager: finds models, loads / reloads / unloads them through their
backends, applies the control mode, and answers which version serves a request.

Loading one model: read config.pbtxt (or the JSON override), fill Triton's defaults, let
the backend auto-complete it, pick versions by policy, create every instance, start the
scheduler — then swap it in. A reload builds the new versions fully before the old ones
stop, so the model keeps serving throughout; a failed reload leaves the old ones serving.
A reload that changes only `instance_group` (model files unchanged) updates a serving
version in place instead, as Triton does (instances.py).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from naiad.kernel.importer import import_from_string
from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.backend import Backend, BackendContext, ModelSpec
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.messages import ModelIndexEntry, ModelStateChanged

from . import composing, ensemble, instances
from . import repository as repo
from .lifecycle import LoadedVersion, ModelRecord, State
from .recorder import StatsRecorder, first_response_bounds
from .scheduling import SchedulingContext

log = logging.getLogger("naiad.services.models")

# Backend name -> import string. A backend appears here once it exists.
BACKENDS: dict[str, str] = {
    "python": "naiad.backends.python:PythonBackend",
    "onnxruntime": "naiad.backends.onnxruntime:OnnxRuntimeBackend",
    "pytorch": "naiad.backends.pytorch:PyTorchBackend",
    "tensorrt": "naiad.backends.tensorrt:TensorRTBackend",
    ensemble.BACKEND: "naiad.services.models.ensemble:EnsembleBackend",
}

# Files that tell which backend a model folder needs when its config names none.
_BACKEND_BY_FILE = (
    ("model.py", "python"),
    ("model.onnx", "onnxruntime"),
    ("model.pt", "pytorch"),
    ("model.plan", "tensorrt"),
)


def _has_gpu() -> bool:
    """KIND_AUTO means GPU where one is present (probed lazily, never at import)."""
    from naiad.ext.cuda_path import has_gpu

    return has_gpu()


class PollFailed(InferenceError):
    """No config could be read from a model folder: the caller gets Triton's words for it
    (the model, if serving, serves on), the log and the model index the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"failed to load '{name}', failed to poll from model repository", ErrorCode.INTERNAL)
        self.reason = reason
        log.error("Poll failed for model directory '%s': %s", name, reason)


class ModelManager:
    def __init__(
        self,
        repositories: list[Path],
        control_mode: str,
        auto_complete: bool,
        backend_context: BackendContext,
        backend_settings: dict[str, dict[str, str]],
        spawn: Callable[[Any, str], asyncio.Task],
        publish: Callable[[Any], Any],
        load_threads: int = 4,
        load_retries: int = 0,
        namespacing: bool = False,
    ) -> None:
        self.repositories = repositories
        # Triton's --model-namespacing: each repository is a namespace, records are keyed
        # `<repository>::<name>` and a name shared by several repositories is ambiguous.
        self.namespacing = namespacing
        self.control_mode = control_mode
        self.auto_complete = auto_complete
        self.backend_context = backend_context
        self.backend_settings = backend_settings
        self._spawn = spawn
        self._publish = publish
        self.records: dict[str, ModelRecord] = {}  # by key (repo.model_key): the name without namespacing
        self._keys_by_name: dict[str, set[str]] = {}  # Triton's "global map": name -> keys of its records
        self.backends: dict[str, Backend] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._load_slots = asyncio.Semaphore(load_threads)
        self._load_retries = load_retries
        self.scheduling = SchedulingContext(self)  # rate limiter, response cache, ensembles

    # ------------------------------------------------------------------ lookup --

    def resolve(self, name: str, version: str = "") -> LoadedVersion:
        record = self.record(name)
        if record is None:
            raise InferenceError.not_found(f"Request for unknown model: '{name}' is not found")
        return record.resolve(version)

    def record(self, name: str) -> ModelRecord | None:
        """The record a model name designates; with namespacing an unknown or ambiguous name
        raises Triton's identifier errors instead of returning None."""
        if not self.namespacing:
            return self.records.get(name)
        namespace, sep, plain = name.rpartition("::")
        if sep:  # an ensemble step: its own repository's model first, else the only one of that name
            record = self.records.get(name)
            if record is not None and record.wanted:
                return record
            name = plain
        keys = self._keys_by_name.get(name)
        if keys is None:
            raise InferenceError.invalid(f"Request for unknown model: '{name}' is not found")
        live = [k for k in keys if self.records[k].wanted]
        if len(live) == 1:
            return self.records[live[0]]
        if not live:
            raise InferenceError.not_found(f"Identifier of model '{name}' is not found in global map")
        raise InferenceError.invalid(
            f"There are {len(live)} identifiers of model '{name}' in global map, model namespace must be "
            "provided to resolve ambiguity.")

    def records_named(self, name: str) -> list[ModelRecord]:
        """Every record of `name` (several only with namespacing, one per repository)."""
        return [self.records[k] for k in sorted(self._keys_by_name.get(name, ()))]

    def locate(self, name: str, namespace: str | None = None) -> repo.ModelLocation | None:
        """The folder of `name`: the only one, or the one in repository `namespace`."""
        if namespace is None:
            return repo.find_model(self.repositories, name)
        return next((loc for loc in repo.find_models(self.repositories, name) if loc.namespace == namespace), None)

    def locate_all(self, name: str) -> list[repo.ModelLocation]:
        """Where `name` is on disk: its folder, or with namespacing one per repository holding it."""
        if self.namespacing:
            return repo.find_models(self.repositories, name)
        location = repo.find_model(self.repositories, name)
        return [location] if location is not None else []

    def namespace_of(self, repository: Path) -> str:
        """The namespace of a model loaded from `repository` ("" without namespacing and for
        models loaded from files sent with the request, as Triton's)."""
        return str(repository) if self.namespacing and repository in self.repositories else ""

    def index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        out: list[ModelIndexEntry] = []
        known = repo.list_models(self.repositories, self.namespacing)
        for key in list(known) + [k for k in self.records if k not in known]:
            record = self.records.get(key)
            if record is None:
                if not ready_only:
                    out.append(ModelIndexEntry(name=known[key].name))
                continue
            name = record.name
            if record.versions:
                for v in sorted(record.versions):
                    lv = record.versions[v]
                    if ready_only and lv.state is not State.READY:
                        continue
                    out.append(ModelIndexEntry(name, lv.version_str, lv.state.value, lv.reason))
            elif not ready_only:
                out.append(ModelIndexEntry(name, "", record.state.value, record.reason))
        return sorted(out, key=lambda e: (e.name, int(e.version) if e.version else 0))

    # ------------------------------------------------------------------ backends --

    def _backend(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is not None:
            return backend
        spec = BACKENDS.get(name)
        if spec is None:
            raise InferenceError.invalid(f"unable to find backend '{name}' (naiad has: {', '.join(sorted(BACKENDS))})")
        cls = import_from_string(spec)
        settings = dict(self.backend_settings.get("default", {}))
        settings.update(self.backend_settings.get(name, {}))
        if not self.auto_complete:
            settings.setdefault("auto_complete", "false")
        ctx = BackendContext(**{**self.backend_context.__dict__, "config": settings})
        backend = self.backends[name] = cls(ctx)
        return backend

    @staticmethod
    def _backend_name(config: Any, model_dir: Path, versions: list[int]) -> str:
        if config.backend:
            return config.backend
        if ensemble.is_ensemble(config):
            return ensemble.BACKEND
        if config.platform:
            name = mcfg.PLATFORM_BACKENDS.get(config.platform)
            if name is None:
                raise InferenceError.invalid(f"unknown platform '{config.platform}'")
            return name
        for v in reversed(versions):
            for filename, backend in _BACKEND_BY_FILE:
                if (model_dir / str(v) / filename).exists():
                    return backend
        raise InferenceError.invalid(
            "model configuration names no backend or platform, and no model file tells which one to use")

    # ------------------------------------------------------------------ loading --

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _set_state(self, lv: LoadedVersion, state: State, reason: str = "") -> None:
        lv.state = state
        lv.reason = reason
        self._publish(ModelStateChanged(lv.name, lv.version_str, state.value, reason))

    async def _read_config(self, name: str, model_dir: Path, override: str | None) -> tuple[Any, str, list[int]]:
        config_path = model_dir / repo.CONFIG_FILE
        try:
            if override is not None:
                config = mcfg.parse_json(override, f"config override of '{name}'")
            elif config_path.exists():
                config = mcfg.parse_file(config_path)
            elif self.auto_complete:
                config = mcfg.ModelConfig()
            else:
                raise InferenceError.invalid(
                    f"failed to load '{name}': no {repo.CONFIG_FILE} in {model_dir} and auto-complete is disabled")
            if config.name and config.name != name:
                raise InferenceError.invalid(
                    f"unexpected 'name' in model configuration: expected '{name}', got '{config.name}'")
        except InferenceError as exc:
            raise PollFailed(name, exc.message) from None
        config.name = name
        available = repo.version_folders(model_dir)
        backend_name = self._backend_name(config, model_dir, available)
        if not config.backend and not config.platform:
            config.backend = backend_name
        mcfg.normalize(config, name, has_gpu=_has_gpu())
        if self.auto_complete:
            backend = self._backend(backend_name)
            latest = available[-1] if available else 1
            config = await backend.auto_complete(model_dir, latest, config)
            config.name = name
            mcfg.normalize(config, name, has_gpu=_has_gpu())
        self._check_config(config)
        return config, backend_name, available

    @staticmethod
    def _check_config(config: Any) -> None:
        if config.max_batch_size < 0:
            raise InferenceError.invalid(f"model '{config.name}': max_batch_size must be >= 0")
        for kind, tensors in (("input", config.input), ("output", config.output)):
            names = set()
            for t in tensors:
                if not t.name:
                    raise InferenceError.invalid(f"model '{config.name}': an {kind} has no name")
                if t.name in names:
                    raise InferenceError.invalid(f"model '{config.name}': duplicate {kind} '{t.name}'")
                names.add(t.name)
                if t.data_type == 0:
                    raise InferenceError.invalid(f"model '{config.name}': {kind} '{t.name}' has no data_type")
        if config.HasField("dynamic_batching") and config.max_batch_size == 0:
            log.warning("model '%s': dynamic_batching has no effect with max_batch_size 0", config.name)

    async def _build_version(self, name: str, version: int, location_repo: Path, model_dir: Path,
                             config: Any, backend: Backend) -> LoadedVersion:
        started = time.monotonic()
        spec = ModelSpec(name=name, version=version, repository=location_repo, model_dir=model_dir, config=config)
        lv = LoadedVersion(spec, backend, StatsRecorder(name, version, first_response_bounds(config, log)))
        lv.load_labels()
        planned = instances.plan(config)
        lv.instances = await instances.create(backend, spec, planned, lv.recorder)
        try:
            lv.scheduler = self.scheduling.create(lv, self._spawn)
        except BaseException:
            await asyncio.gather(*(inst.close() for inst in lv.instances), return_exceptions=True)
            raise
        lv.signatures = {inst: p.signature for inst, p in zip(lv.instances, planned)}
        lv.scheduler.start()
        lv.recorder.stats.load_duration_s = time.monotonic() - started  # nv_model_load_duration_secs
        return lv

    async def load(self, name: str, config_override: str | None = None,
                   files: dict[str, bytes] | None = None, namespace: str | None = None) -> None:
        """Load or reload `name`; raises InferenceError with the reason on failure. With
        namespacing it loads from every repository that has it (`namespace`: from that one);
        a load with files is in the empty namespace, as Triton's."""
        if self.namespacing and namespace is None and not files:
            await self._load_everywhere(name, config_override)
            return
        key = repo.model_key(namespace or "", name)
        if not files:
            await composing.load_composing(self, name, config_override, namespace)
        async with self._lock(key), self._load_slots:
            record = self.records.get(key)
            if record is None:
                record = self.records[key] = ModelRecord(name)
                self._keys_by_name.setdefault(name, set()).add(key)
            record.wanted = True
            temp_dir = None
            try:
                if files:
                    if config_override is None:
                        raise InferenceError.invalid(
                            f"failed to load '{name}': a load with file overrides must also provide 'config'")
                    if not repo.is_model_name(name):  # it names the folder the files go to
                        raise InferenceError.invalid(
                            f"failed to load '{name}': a model name must be one folder name")
                    temp_dir = tempfile.TemporaryDirectory(prefix="naiad-load-")
                    model_dir = Path(temp_dir.name) / name
                    model_dir.mkdir()
                    for key, content in files.items():
                        if not key.startswith("file:"):
                            raise InferenceError.invalid(f"unrecognized load parameter '{key}'")
                        try:
                            target = repo.safe_join(model_dir, key[len("file:"):])
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(content)
                        except (OSError, ValueError) as exc:
                            # OSError: the folder itself, a file where a folder goes, a long name;
                            # ValueError: a name the file system cannot take (a lone surrogate).
                            why = exc.strerror if isinstance(exc, OSError) else "not a valid file name"
                            shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                            raise InferenceError.invalid(
                                f"failed to load '{name}': cannot write '{shown}': {why}") from None
                    repository = Path(temp_dir.name)
                else:
                    location = self.locate(name, namespace)
                    if location is None:
                        if not record.versions and record.latest is None:
                            # Not in any repository: it never joins the model list (readiness).
                            self._forget(key, name)
                        raise _not_in_repository(name)
                    model_dir, repository = location.model_dir, location.repository
                # Only poll mode compares fingerprints; elsewhere the folder walk is wasted.
                fp = repo.fingerprint(model_dir) if self.control_mode == "poll" else ""
                files_fp = repo.fingerprint(model_dir, skip_config=True) if temp_dir is None else ""
                started = time.monotonic()
                new_versions = await self._load_versions(name, model_dir, repository, config_override,
                                                         self._updatable(record, model_dir, files_fp))
            except InferenceError as exc:
                if temp_dir is not None:
                    temp_dir.cleanup()
                self._record_failure(record, exc)
                raise
            except Exception as exc:
                if temp_dir is not None:
                    temp_dir.cleanup()
                err = InferenceError.internal(f"failed to load '{name}': {exc.__class__.__name__}: {exc}")
                self._record_failure(record, err)
                raise err from exc
            old = record.versions
            old_temp = record.temp_dir
            record.versions = {lv.version: lv for lv in new_versions}
            record.fingerprint = fp
            record.files_fingerprint = files_fp
            record.model_dir = model_dir
            record.temp_dir = temp_dir
            record.state, record.reason = State.READY, ""
            for lv in new_versions:
                if lv.state is not State.READY:  # a version updated in place never stopped serving
                    self._set_state(lv, State.READY)
            record.refresh_latest()
            log.info("successfully loaded '%s'", name)  # Triton's words; the next line has the versions
            log.info("loaded model '%s' version(s) %s in %.0f ms", name,
                     ", ".join(lv.version_str for lv in new_versions), (time.monotonic() - started) * 1000)
            # The new versions serve from here on; retire the old ones.
            await asyncio.gather(*(self._retire(lv) for v, lv in old.items() if record.versions.get(v) is not lv))
            if old_temp is not None:
                old_temp.cleanup()

    async def _load_everywhere(self, name: str, config_override: str | None) -> None:
        locations = repo.find_models(self.repositories, name)
        if not locations:
            raise _not_in_repository(name)
        results = await asyncio.gather(
            *(self.load(name, config_override, namespace=loc.namespace) for loc in locations), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _forget(self, key: str, name: str) -> None:
        del self.records[key]
        keys = self._keys_by_name[name]
        keys.discard(key)
        if not keys:
            del self._keys_by_name[name]

    def _record_failure(self, record: ModelRecord, exc: InferenceError) -> None:
        reason = exc.reason if isinstance(exc, PollFailed) else exc.message
        log.error("failed to load '%s': %s", record.name, reason)
        if record.latest is None:  # nothing serving: the model is unavailable with this reason
            record.versions = {}
            record.state, record.reason = State.UNAVAILABLE, reason
            self._publish(ModelStateChanged(record.name, "", State.UNAVAILABLE.value, reason))

    @staticmethod
    def _updatable(record: ModelRecord, model_dir: Path, files_fp: str) -> dict[int, LoadedVersion]:
        """The serving versions a reload may update in place (Triton's rule, with the config
        check in `_load_versions`): same folder, model files unchanged (config.pbtxt aside),
        neither this load nor the last one made from files sent with the request."""
        if not files_fp or record.temp_dir is not None or record.model_dir != model_dir \
                or record.files_fingerprint != files_fp:
            return {}
        return {v: lv for v, lv in record.versions.items() if lv.state is State.READY}

    async def _load_versions(self, name: str, model_dir: Path, repository: Path, override: str | None,
                             updatable: dict[int, LoadedVersion]) -> list[LoadedVersion]:
        attempts = self._load_retries + 1
        for attempt in range(attempts):
            try:
                config, backend_name, available = await self._read_config(name, model_dir, override)
                versions = repo.select_versions(config, available)
                if not versions:
                    raise InferenceError.invalid(f"failed to load '{name}': no version is available")
                backend = self._backend(backend_name)
                # Only instance_group changed: Triton updates the serving version in place.
                kept = [] if ensemble.is_ensemble(config) else [
                    updatable[v] for v in versions
                    if v in updatable and instances.only_instances_differ(updatable[v].config, config)]
                built: list[LoadedVersion] = []
                try:
                    for v in versions:
                        if all(lv.version != v for lv in kept):
                            log.info("loading: %s:%d", name, v)  # Triton's model_lifecycle.cc line
                            built.append(await self._build_version(name, v, repository, model_dir, config, backend))
                    for lv in kept:  # after every build, so that a failed build changes nothing
                        await instances.update(lv, config, self.scheduling)
                except BaseException:
                    await asyncio.gather(*(self._retire(lv, announce=False) for lv in built), return_exceptions=True)
                    raise
                return sorted(built + kept, key=lambda lv: lv.version)
            except InferenceError as exc:
                if attempt + 1 >= attempts:
                    raise
                log.warning("loading '%s' failed (attempt %d of %d): %s", name, attempt + 1, attempts, exc.message)
        raise AssertionError("unreachable")

    async def _retire(self, lv: LoadedVersion, announce: bool = True) -> None:
        if announce:
            self._set_state(lv, State.UNLOADING)
        if lv.scheduler is not None:
            await lv.scheduler.drain_and_stop(timeout=30)
        await asyncio.gather(*(inst.close() for inst in lv.instances), return_exceptions=True)
        lv.instances = []
        if announce:
            self._set_state(lv, State.UNAVAILABLE, "unloaded")

    async def unload(self, name: str) -> None:
        """Unload `name`; with namespacing, the model of that name in every repository."""
        keys = sorted(self._keys_by_name.get(name, ())) if self.namespacing else None
        if not keys:
            await self._unload(name)
            return
        await asyncio.gather(*(self._unload(k) for k in keys))

    async def _unload(self, name: str) -> None:
        """Unload the model keyed `name`."""
        async with self._lock(name):
            record = self.records.get(name)
            if record is None or not record.versions:
                if record is None and repo.find_model(self.repositories, name) is None:
                    raise InferenceError.not_found(f"failed to unload '{name}', no version is available")
                if record is not None:
                    record.wanted = False
                    record.state, record.reason = State.UNAVAILABLE, "unloaded"
                return
            record.wanted = False
            versions = list(record.versions.values())
            for lv in versions:
                self._set_state(lv, State.UNLOADING)
            record.refresh_latest()  # nothing new is routed to an unloading version
            await asyncio.gather(*(self._retire(lv, announce=False) for lv in versions))
            for lv in versions:
                self._set_state(lv, State.UNAVAILABLE, "unloaded")
            record.refresh_latest()
            if record.temp_dir is not None:
                record.temp_dir.cleanup()
                record.temp_dir = None
            log.info("unloaded model '%s'", name)

    # ------------------------------------------------------------------ control modes --

    async def load_many(self, names: list[str]) -> dict[str, InferenceError]:
        """Load several models concurrently; returns the failures by name."""
        async def one(n: str) -> tuple[str, InferenceError | None]:
            try:
                await self.load(n)
                return n, None
            except InferenceError as exc:
                return n, exc

        plain, ensembles = composing.order_for_loading(self, names)  # ensembles after what they compose
        results = await asyncio.gather(*(one(n) for n in plain))
        for n in ensembles:
            results.append(await one(n))
        return {n: e for n, e in results if e is not None}

    async def load_at_start(self, load_models: list[str]) -> dict[str, InferenceError]:
        found = list(dict.fromkeys(loc.name for loc in repo.list_models(self.repositories, self.namespacing).values()))
        if self.control_mode == "explicit":
            names = found if "*" in load_models else list(dict.fromkeys(load_models))
        else:
            names = found
        return await self.load_many(names)

    async def poll(self) -> None:
        """Apply what changed on disk: load added models, reload changed ones, unload removed."""
        found = repo.list_models(self.repositories, self.namespacing)
        tasks: list[Awaitable] = []
        for key, loc in found.items():
            record = self.records.get(key)
            if record is not None and record.temp_dir is not None:
                continue  # loaded from files sent with the request, not from the repository
            fp = repo.fingerprint(loc.model_dir)
            # Not wanted: it was unloaded when its folder went away, and the folder is back.
            if record is None or record.fingerprint != fp or not record.wanted:
                tasks.append(self._poll_load(loc, fp))
        for key, record in list(self.records.items()):
            if key not in found and record.versions and record.temp_dir is None:
                tasks.append(self._unload(key))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll_load(self, location: repo.ModelLocation, fingerprint: str) -> None:
        try:
            await self.load(location.name, namespace=location.namespace or None)
        except InferenceError:
            # The reason is in the index; remember the fingerprint so that a broken model
            # is retried only when its files change.
            record = self.records.get(location.key)
            if record is not None:
                record.fingerprint = fingerprint

    def check_control(self, action: str) -> None:
        if self.control_mode == "none":
            raise InferenceError(
                "explicit model load / unload is not allowed if polling is enabled", ErrorCode.UNAVAILABLE)
        if self.control_mode == "poll" and action == "unload":
            raise InferenceError(
                "explicit model load / unload is not allowed if polling is enabled", ErrorCode.UNAVAILABLE)

    def all_wanted_ready(self) -> bool:
        return all(r.latest is not None for r in self.records.values() if r.wanted)

    def abort(self, error: InferenceError) -> None:
        """Shutdown's exit timeout ran out: refuse what is queued and end what runs, each
        answered with `error`; `close()` still follows."""
        for record in self.records.values():
            for lv in record.versions.values():
                fail_queued = getattr(lv.scheduler, "fail_all", None)  # the dynamic batcher's queue
                if fail_queued is not None:
                    fail_queued(error)
                for inst in lv.instances:
                    inst.abort(error)
        for backend in self.backends.values():  # instances still loading
            backend.abort(error)

    async def close(self) -> None:
        await asyncio.gather(*(self._unload(k) for k in list(self.records)), return_exceptions=True)
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)


def _not_in_repository(name: str) -> InferenceError:
    return InferenceError.not_found(f"failed to load '{name}', failed to poll from model repository")

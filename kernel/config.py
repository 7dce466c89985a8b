"""naiad's configuration: one TOML file, a section per service, validated before anything starts.

    [server]            model repositories, control mode, shutdown, allocator, ...
    [log]               Triton's log settings
    [cache]             the response cache
    [backends.NAME]     settings handed to a backend (Triton's --backend-config)
    [services.NAME]     one per service: `enabled`, optional `module = "pkg.mod:Class"`,
                        and the service's own keys (validated by the service's Config)

Command-line flags with Triton's names override the file (see `naiad.kernel.flags`).
After `load` nothing reads raw TOML again.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .importer import ImportFromStringError, import_from_string
from .schema import ConfigError, build, setting

# Built-in services by name -> import string. A third-party service is any other name
# with a `module` key. Order here is only the default listing order.
BUILTIN_SERVICES: dict[str, str] = {
    "models": "naiad.services.models:ModelService",
    "repository": "naiad.services.repository:RepositoryPoller",
    "http": "naiad.services.http:HttpService",
    "grpc": "naiad.services.grpc:GrpcService",
    "metrics": "naiad.services.metrics:MetricsService",
    "tracing": "naiad.services.tracing:TracingService",
    "status": "naiad.services.status:StatusService",
    "openai": "naiad.services.openai:OpenAIService",
}


@dataclass
class ServerConfig:
    model_repository: list[str] = setting(
        [], "model repository paths (repeatable flag)", "--model-repository")
    model_control_mode: Literal["none", "poll", "explicit"] = setting(
        "none", "when models are loaded: all at start, by polling, or on request", "--model-control-mode")
    load_model: list[str] = setting(
        [], "models to load at start in explicit mode ('*' = all)", "--load-model")
    repository_poll_secs: int = setting(
        15, "seconds between repository scans in poll mode", "--repository-poll-secs", minimum=0)
    strict_readiness: bool = setting(
        True, "ready only while every model loaded at start is ready", "--strict-readiness")
    exit_on_error: bool = setting(
        True, "exit at start when a model fails to load", "--exit-on-error")
    exit_timeout_secs: int = setting(
        30, "how long shutdown waits for in-flight requests", "--exit-timeout-secs", minimum=0)
    disable_auto_complete_config: bool = setting(
        False, "never let backends complete a model config", "--disable-auto-complete-config")
    id: str = setting("triton", "server id reported as `name` in server metadata", "--id")
    allocator: Literal["system", "jemalloc"] = setting(
        "system", "memory allocator; jemalloc re-executes with LD_PRELOAD of libjemalloc2", "")
    model_load_thread_count: int = setting(
        4, "models loaded concurrently", "--model-load-thread-count", minimum=1)
    model_load_retry_count: int = setting(
        0, "extra attempts for a model that fails to load", "--model-load-retry-count", minimum=0)
    model_namespacing: bool = setting(
        False, "each repository is a namespace: one model name may be in several", "--model-namespacing")
    rate_limit: Literal["off", "execution_count"] = setting(
        "off", "rate limiting of model instances", "--rate-limit")
    rate_limit_resources: list[str] = setting(
        [], "resources as <name>:<count>[:<device>]", "--rate-limit-resource")
    pinned_memory_pool_byte_size: int = setting(
        268435456, "bytes of pinned host memory to pool (GPU machines)", "--pinned-memory-pool-byte-size", minimum=0)
    cuda_memory_pool_byte_size: list[str] = setting(
        [], "per-GPU CUDA pool as <gpu>:<bytes>", "--cuda-memory-pool-byte-size")
    shutdown_stop_timeout_secs: float = setting(
        10.0, "how long each service may take to stop once the drain is over", "", minimum=0)

    def validate(self) -> None:
        for path in self.model_repository:
            if not path:
                raise ConfigError("model_repository: empty path")


@dataclass
class LogConfig:
    verbose: int = setting(0, "verbose log level (0 = off)", "--log-verbose", minimum=0)
    info: bool = setting(True, "log INFO messages", "--log-info")
    warning: bool = setting(True, "log WARNING messages", "--log-warning")
    error: bool = setting(True, "log ERROR messages", "--log-error")
    format: Literal["default", "ISO8601"] = setting("default", "log line format", "--log-format")
    file: str = setting("", "log file (fixed at start); empty = console", "--log-file")


@dataclass
class CacheConfig:
    enabled: bool = setting(False, "enable the response cache for models that ask for it", "--cache-config")
    size: int = setting(1048576, "bytes the local response cache may hold", "--cache-config local,size=N", minimum=0)


@dataclass
class ServiceSection:
    """A `[services.NAME]` section after validation."""

    name: str
    module: str
    enabled: bool
    essential: bool
    config: Any  # the service's own Config instance
    cls: type


@dataclass
class NaiadConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    backends: dict[str, dict[str, str]] = field(default_factory=dict)
    services: dict[str, ServiceSection] = field(default_factory=dict)
    source: str = "<defaults>"

    def enabled_services(self) -> list[ServiceSection]:
        return [s for s in self.services.values() if s.enabled]


_TOP_LEVEL = {"server", "log", "cache", "backends", "services"}


def _load_service_class(name: str, module: str, where: str) -> type:
    try:
        cls = import_from_string(module)
    except ImportFromStringError as exc:
        raise ConfigError(f"{where}.module: {exc}") from None
    except Exception as exc:  # the plug-in itself failed to import
        raise ConfigError(f"{where}.module: importing \"{module}\" failed: {exc.__class__.__name__}: {exc}") from None
    from .service import Service

    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"{where}.module: \"{module}\" is not a naiad.kernel.service.Service subclass")
    return cls


def _service_section(name: str, table: dict[str, Any], source: str) -> ServiceSection:
    where = f"{source}: [services.{name}]"
    table = dict(table)
    module = table.pop("module", None)
    if module is not None and not isinstance(module, str):
        raise ConfigError(f"{where}.module: expected a string \"package.module:Class\", got {module!r}")
    if module is None:
        module = BUILTIN_SERVICES.get(name)
        if module is None:
            known = ", ".join(BUILTIN_SERVICES)
            raise ConfigError(
                f"{where}: unknown service '{name}' (built-in services: {known}; "
                f"a third-party service needs module = \"package.module:Class\")"
            )
    cls = _load_service_class(name, module, where)
    enabled = table.pop("enabled", getattr(cls, "enabled_by_default", True))  # off-by-default services
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected a boolean (true or false), got {enabled!r}")
    essential = table.pop("essential", cls.essential)
    if not isinstance(essential, bool):
        raise ConfigError(f"{where}.essential: expected a boolean (true or false), got {essential!r}")
    config = build(cls.Config, table, where)
    return ServiceSection(name=name, module=module, enabled=enabled, essential=essential, config=config, cls=cls)


def from_table(data: dict[str, Any], source: str = "<defaults>") -> NaiadConfig:
    """Validate a whole config table (TOML already parsed, flags already merged)."""
    for key in data:
        if key not in _TOP_LEVEL:
            raise ConfigError(
                f"{source}: unknown section '{key}' (expected one of: {', '.join(sorted(_TOP_LEVEL))})"
            )
    cfg = NaiadConfig(source=source)
    cfg.server = build(ServerConfig, data.get("server", {}), f"{source}: [server]")
    cfg.log = build(LogConfig, data.get("log", {}), f"{source}: [log]")
    cfg.cache = build(CacheConfig, data.get("cache", {}), f"{source}: [cache]")
    backends = data.get("backends", {})
    if not isinstance(backends, dict):
        raise ConfigError(f"{source}: [backends]: expected a table of tables")
    for bname, btable in backends.items():
        if not isinstance(btable, dict):
            raise ConfigError(f"{source}: [backends.{bname}]: expected a table")
        for k, v in btable.items():
            if isinstance(v, (dict, list)):
                raise ConfigError(f"{source}: [backends.{bname}].{k}: expected a string, number or boolean")
        cfg.backends[bname] = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in btable.items()}
    services = data.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError(f"{source}: [services]: expected a table of tables")
    names = list(BUILTIN_SERVICES) + [n for n in services if n not in BUILTIN_SERVICES]
    for name in names:
        table = services.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [services.{name}]: expected a table")
        cfg.services[name] = _service_section(name, table, source)
    return cfg


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` into a copy of `base` (flags over file)."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> NaiadConfig:
    data = read_toml(path) if path else {}
    if overrides:
        data = merge(data, overrides)
    return from_table(data, str(path) if path else "<defaults>")


def as_dict(cfg: NaiadConfig) -> dict[str, Any]:
    """The effective config as plain data (for `naiad config show`)."""
    return {
        "server": dataclasses.asdict(cfg.server),
        "log": dataclasses.asdict(cfg.log),
        "cache": dataclasses.asdict(cfg.cache),
        "backends": cfg.backends,
        "services": {
            name: {"enabled": s.enabled, "module": s.module, "essential": s.essential,
                   **dataclasses.asdict(s.config)}
            for name, s in cfg.services.items()
        },
    }

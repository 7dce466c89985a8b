"""tritonserver's command-line flags, accepted by `naiad serve` under the same names.

Each flag either sets a config key (overriding the TOML file), is accepted with a
one-line note when it has no meaning in naiad (thread counts of Triton's C++ pools, its
install folders), or is refused with a one-line reason. Bool flags take a value as
Triton's do (`--strict-readiness=false`, also 1/0, on/off, yes/no).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from .schema import ConfigError

_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


# Refusals in tritonserver's words (server `command_line_parser.cc` `ParseOption`).


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid value for bool option: {text}")


def parse_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid option value. Got {text}") from None


def parse_port(text: str) -> int:
    """A TCP port: Triton hands 70000 to libevhtp, which keeps its low 16 bits (4464);
    naiad refuses what is not a port."""
    port = parse_int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"Provided option value is out of bound. Got {text}")
    return port


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid option value. Got {text}") from None


PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": parse_bool, "int": parse_int, "port": parse_port, "float": parse_float, "str": str}


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str = "str"  # bool | int | port | float | str | none (takes no value)
    target: str = ""  # dotted config path the value is written to
    repeat: bool = False  # collect every occurrence into a list
    noop: str = ""  # accepted; this note is logged once at start
    refuse: str = ""  # refused with this reason (unless `allowed` says the value is fine)
    allowed: Any = None  # with `refuse`: a value that is accepted anyway (e.g. False)
    aliases: tuple[str, ...] = ()
    help: str = ""


_NOOP_THREADS = "naiad's HTTP and gRPC services run on its event loop; this thread count has no meaning"

FLAGS: tuple[Flag, ...] = (
    # ---- model repository and control
    Flag("--model-repository", target="server.model_repository", repeat=True, aliases=("--model-store",),
         help="model repository path (repeatable)"),
    Flag("--model-control-mode", target="server.model_control_mode", help="none|poll|explicit"),
    Flag("--load-model", target="server.load_model", repeat=True, help="model to load at start in explicit mode ('*' = all)"),
    Flag("--repository-poll-secs", "int", "server.repository_poll_secs"),
    Flag("--strict-model-config", "bool", help="deprecated: true disables auto-complete"),
    Flag("--disable-auto-complete-config", "none", "server.disable_auto_complete_config"),
    Flag("--strict-readiness", "bool", "server.strict_readiness"),
    Flag("--exit-on-error", "bool", "server.exit_on_error"),
    Flag("--exit-timeout-secs", "int", "server.exit_timeout_secs"),
    Flag("--id", target="server.id"),
    Flag("--model-load-thread-count", "int", "server.model_load_thread_count"),
    Flag("--model-load-retry-count", "int", "server.model_load_retry_count"),
    Flag("--model-namespacing", "bool", "server.model_namespacing"),
    # ---- HTTP
    Flag("--allow-http", "bool", "services.http.enabled"),
    Flag("--http-port", "port", "services.http.port"),
    Flag("--http-address", target="services.http.host"),
    Flag("--reuse-http-port", "bool", "services.http.reuse_port"),
    Flag("--http-thread-count", "int", noop=_NOOP_THREADS),
    Flag("--http-header-forward-pattern", target="services.http.header_forward_pattern"),
    Flag("--http-restricted-api", target="services.http.restricted_api", repeat=True),
    # ---- gRPC
    Flag("--status-page", "bool", "services.status.enabled"),
    # ---- OpenAI-compatible service (naiad; key flag as Triton's openai frontend names it)
    Flag("--allow-openai", "bool", "services.openai.enabled"),
    Flag("--openai-port", "port", "services.openai.port"),
    Flag("--openai-address", target="services.openai.address"),
    Flag("--openai-api-key", target="services.openai.api_key"),
    Flag("--allow-grpc", "bool", "services.grpc.enabled"),
    Flag("--grpc-port", "port", "services.grpc.port"),
    Flag("--grpc-address", target="services.grpc.host"),
    Flag("--reuse-grpc-port", "bool", "services.grpc.reuse_port"),
    Flag("--grpc-header-forward-pattern", target="services.grpc.header_forward_pattern"),
    Flag("--grpc-restricted-protocol", target="services.grpc.restricted_protocol", repeat=True),
    Flag("--grpc-infer-allocation-pool-size", "int", noop="naiad allocates gRPC responses per call; pool size has no meaning"),
    Flag("--grpc-infer-response-compression-level", target="services.grpc.response_compression_level"),
    Flag("--grpc-keepalive-time", "int", "services.grpc.keepalive_time_ms"),
    Flag("--grpc-keepalive-timeout", "int", "services.grpc.keepalive_timeout_ms"),
    Flag("--grpc-keepalive-permit-without-calls", "bool", "services.grpc.keepalive_permit_without_calls"),
    Flag("--grpc-http2-max-pings-without-data", "int", "services.grpc.http2_max_pings_without_data"),
    Flag("--grpc-http2-min-recv-ping-interval-without-data", "int", "services.grpc.http2_min_recv_ping_interval_without_data_ms"),
    Flag("--grpc-http2-max-ping-strikes", "int", "services.grpc.http2_max_ping_strikes"),
    Flag("--grpc-max-connection-age", "int", "services.grpc.max_connection_age_ms"),
    Flag("--grpc-max-connection-age-grace", "int", "services.grpc.max_connection_age_grace_ms"),
    Flag("--grpc-use-ssl", "bool", "services.grpc.use_ssl"),
    Flag("--grpc-use-ssl-mutual", "bool", "services.grpc.use_ssl_mutual"),
    Flag("--grpc-server-cert", target="services.grpc.server_cert"),
    Flag("--grpc-server-key", target="services.grpc.server_key"),
    Flag("--grpc-root-cert", target="services.grpc.root_cert"),
    # ---- metrics
    Flag("--allow-metrics", "bool", "services.metrics.enabled"),
    Flag("--allow-gpu-metrics", "bool", "services.metrics.gpu"),
    Flag("--allow-cpu-metrics", "bool", "services.metrics.cpu"),
    Flag("--metrics-address", target="services.metrics.host"),
    Flag("--metrics-port", "port", "services.metrics.port"),
    Flag("--metrics-interval-ms", "float", "services.metrics.interval_ms"),
    Flag("--metrics-config", target="services.metrics.metrics_config", repeat=True),
    # ---- logging
    Flag("--log-verbose", "int", "log.verbose"),
    Flag("--log-info", "bool", "log.info"),
    Flag("--log-warning", "bool", "log.warning"),
    Flag("--log-error", "bool", "log.error"),
    Flag("--log-format", target="log.format"),
    Flag("--log-file", target="log.file"),
    # ---- tracing (the old single-purpose flags map onto trace_config, as in Triton)
    Flag("--trace-config", target="services.tracing.trace_config", repeat=True),
    Flag("--trace-file", help="deprecated: --trace-config triton,file=PATH"),
    Flag("--trace-level", repeat=True, help="deprecated: --trace-config level=LEVEL"),
    Flag("--trace-rate", help="deprecated: --trace-config rate=N"),
    Flag("--trace-count", help="deprecated: --trace-config count=N"),
    Flag("--trace-log-frequency", help="deprecated: --trace-config triton,log-frequency=N"),
    # ---- response cache
    Flag("--cache-config", repeat=True, help="<cache>,<key>=<value>; naiad has the 'local' cache"),
    Flag("--response-cache-byte-size", "int", help="deprecated: --cache-config local,size=N"),
    Flag("--cache-directory", noop="naiad's response cache is built in; there is no cache directory"),
    # ---- scheduling and memory
    Flag("--rate-limit", target="server.rate_limit"),
    Flag("--rate-limit-resource", target="server.rate_limit_resources", repeat=True),
    Flag("--pinned-memory-pool-byte-size", "int", "server.pinned_memory_pool_byte_size"),
    Flag("--cuda-memory-pool-byte-size", target="server.cuda_memory_pool_byte_size", repeat=True),
    # ---- backends
    Flag("--backend-config", repeat=True, help="[<backend>,]<key>=<value>"),
    Flag("--backend-directory", noop="naiad's backends are Python packages; there is no backend directory"),
    Flag("--repoagent-directory", noop="naiad has no repository agents; there is no agent directory"),
    Flag("--buffer-manager-thread-count", "int", noop=_NOOP_THREADS),
    Flag("--host-policy", repeat=True, noop="naiad does not pin threads to NUMA nodes; host policies have no effect"),
    Flag("--min-supported-compute-capability", "float", noop="naiad checks GPU support per backend; this floor is not used"),
    Flag("--model-load-gpu-limit", repeat=True, noop="naiad does not cap GPU memory per device while loading"),
    Flag("--cuda-virtual-address-size", repeat=True, noop="naiad does not reserve CUDA virtual address space"),
    Flag("--allow-sagemaker", "bool", refuse="naiad does not serve the SageMaker endpoints", allowed=False),
    Flag("--allow-vertex-ai", "bool", refuse="naiad does not serve the Vertex AI endpoints", allowed=False),
    Flag("--sagemaker-port", "int", refuse="naiad does not serve the SageMaker endpoints"),
    Flag("--vertex-ai-port", "int", refuse="naiad does not serve the Vertex AI endpoints"),
)


def add_to_parser(parser: argparse.ArgumentParser) -> None:
    for flag in FLAGS:
        names = (flag.name, *flag.aliases)
        dest = "flag_" + flag.name.lstrip("-").replace("-", "_")
        if flag.kind == "none":
            parser.add_argument(*names, dest=dest, action="store_true", default=None, help=flag.help or None)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "type": PARSERS[flag.kind], "help": flag.help or None}
        if flag.repeat:
            kwargs["action"] = "append"
        if flag.kind == "bool":
            kwargs["metavar"] = "BOOL"
        parser.add_argument(*names, **kwargs)


def _set(tree: dict[str, Any], path: str, value: Any, append: bool = False) -> None:
    node = tree
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if append:
        node.setdefault(parts[-1], []).extend(value if isinstance(value, list) else [value])
    else:
        node[parts[-1]] = value


def _split_kv(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag}: expected <key>=<value>, got '{text}'")
    return key.strip(), value.strip()


def _missing_service(target: str) -> str:
    from .config import BUILTIN_SERVICES

    parts = target.split(".")
    if parts[0] == "services" and parts[1] not in BUILTIN_SERVICES:
        return parts[1]
    return ""


# tritonserver's warnings for its deprecated flags (server `command_line_parser.cc`), word for word.
_REMOVED = "has been deprecated and will be removed in future releases. Please use"
DEPRECATED: dict[str, str] = {
    "--strict-model-config": "Warning: '--strict-model-config' has been deprecated! Please use "
                             "'--disable-auto-complete-config' instead.",
    "--trace-file": f"Warning: '--trace-file' {_REMOVED} '--trace-config triton,file=<filepath> instead.",
    "--trace-level": f"Warning: '--trace-level' {_REMOVED} '--trace-config level=<OFF|TIMESTAMPS|TENSORS> instead.",
    "--trace-rate": f"Warning: '--trace-rate' {_REMOVED} '--trace-config rate=<rate value> instead.",
    "--trace-count": f"Warning: '--trace-count' {_REMOVED} '--trace-config count=<count value> instead.",
    "--trace-log-frequency": f"Warning: '--trace-log-frequency' {_REMOVED} "
                             "'--trace-config triton,log-frequency=<log frequency value> instead.",
}

# deprecated trace flag -> (its --trace-config key, template, the words of Triton's override warning)
_TRACE_FLAGS = {
    "--trace-file": ("file", "triton,file={}", "file"),
    "--trace-level": ("level", "level={}", "level"),
    "--trace-rate": ("rate", "rate={}", "rate value"),
    "--trace-count": ("count", "count={}", "count"),
    "--trace-log-frequency": ("log-frequency", "triton,log-frequency={}", "log-frequency"),
}


def _deprecated_trace_flags(given: dict[str, Any], overrides: dict[str, Any], notes: list[str]) -> None:
    """The old single-purpose trace flags become --trace-config entries placed before the
    user's own, so that --trace-config wins, as in Triton (with its override warning)."""
    user = given["--trace-config"] or []
    user_keys = {entry.partition("=")[0].rpartition(",")[2] for entry in user}  # [<mode>,]<key>=<value>
    converted: list[str] = []
    for name, (key, template, words) in _TRACE_FLAGS.items():
        value = given[name]
        if value is None:
            continue
        notes.append(DEPRECATED[name])
        if _missing_service("services.tracing.x"):
            raise ConfigError(f"{name}: this naiad build has no 'tracing' service")
        if key in user_keys:
            notes.append(f"Warning: Overriding deprecated '{name}' in favor of provided {words} in --trace-config!")
        converted += [template.format(v) for v in (value if isinstance(value, list) else [value])]
    if converted:
        _set(overrides, "services.tracing.trace_config", converted + list(user))


def to_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Turn parsed flags into a config override table and the notes to log at start
    (those that start with "Warning: " are tritonserver's own, printed as it prints them).

    Raises ConfigError for a refused flag or a bad combination (one line each)."""
    overrides: dict[str, Any] = {}
    notes: list[str] = []
    given = {f.name: getattr(args, "flag_" + f.name.lstrip("-").replace("-", "_"), None) for f in FLAGS}
    for flag in FLAGS:
        value = given[flag.name]
        if value is None:
            continue
        if flag.refuse and not (flag.allowed is not None and value == flag.allowed):
            raise ConfigError(f"{flag.name}: {flag.refuse}")
        if flag.noop:
            notes.append(f"{flag.name} accepted with no effect: {flag.noop}")
            continue
        if flag.target:
            service = _missing_service(flag.target)
            if service:
                if flag.target.endswith(".enabled") and value is False:
                    continue  # turning off a service naiad does not have is fine
                raise ConfigError(f"{flag.name}: this naiad build has no '{service}' service")
            if flag.target.startswith("server.model_control_mode"):
                value = value.lower()
            _set(overrides, flag.target, value, append=flag.repeat)

    # Flags whose meaning spans several keys.
    strict_model_config = given["--strict-model-config"]
    if strict_model_config is not None:
        notes.append(DEPRECATED["--strict-model-config"])
        if given["--disable-auto-complete-config"]:
            if not strict_model_config:
                notes.append("Warning: Overriding deprecated '--strict-model-config' from False to True in favor "
                             "of '--disable-auto-complete-config'!")
        elif strict_model_config:
            _set(overrides, "server.disable_auto_complete_config", True)
    _deprecated_trace_flags(given, overrides, notes)

    cache_byte_size = given["--response-cache-byte-size"]
    cache_configs = given["--cache-config"] or []
    if cache_byte_size is not None:
        notes.append("Warning: '--response-cache-byte-size' has been deprecated! This will default to the 'local' "
                     "cache implementation with the provided byte size for its config. Please use "
                     "'--cache-config' instead. The equivalent --cache-config CLI args would be: "
                     f"'--cache-config=local,size={cache_byte_size}'")
    if cache_byte_size is not None and cache_configs:
        raise ConfigError("Error: Incompatible flags --response-cache-byte-size and --cache-config both provided. "
                          "Please provide one or the other.")
    if cache_byte_size is not None:
        _set(overrides, "cache.enabled", cache_byte_size > 0)
        _set(overrides, "cache.size", cache_byte_size)
    for text in cache_configs:
        name, sep, kv = text.partition(",")
        if not sep:
            raise ConfigError(f"--cache-config: expected <cache>,<key>=<value>, got '{text}'")
        if name != "local":
            raise ConfigError(f"--cache-config: naiad has the 'local' response cache only, not '{name}'")
        key, value = _split_kv(kv, "--cache-config")
        if key != "size":
            raise ConfigError(f"--cache-config: the local cache has the key 'size' only, not '{key}'")
        try:
            size = int(value)
        except ValueError:
            raise ConfigError(f"--cache-config: size must be an integer, got '{value}'") from None
        _set(overrides, "cache.enabled", True)
        _set(overrides, "cache.size", size)

    for text in given["--backend-config"] or ():
        head, sep, rest = text.partition(",")
        if sep and "=" not in head:
            backend, kv = head, rest
        else:
            backend, kv = "default", text
        key, value = _split_kv(kv, "--backend-config")
        _set(overrides, f"backends.{backend}.{key}", value)
    return overrides, notes

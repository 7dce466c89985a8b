"""`[services.grpc]` settings: Triton's `--grpc-*` flags plus naiad's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from naiad.kernel import header_forward
from naiad.kernel.schema import ConfigError, setting

#: Triton's restricted-feature categories (`server:src/restricted_features.h`).
RESTRICTED_CATEGORIES = (
    "health", "metadata", "inference", "shared-memory", "model-config",
    "model-repository", "statistics", "trace", "logging",
)
#: The gRPC header a restricted category expects is this prefix plus the configured key.
RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"

#: grpc compression levels (grpc_compression_level: NONE, LOW, MED, HIGH).
COMPRESSION_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}


@dataclass
class GrpcConfig:
    host: str = setting("0.0.0.0", "address to listen on", "--grpc-address")
    port: int = setting(8001, "port to listen on (0 = any free port)", "--grpc-port", minimum=0, maximum=65535)
    reuse_port: bool = setting(False, "set SO_REUSEPORT on the listening socket", "--reuse-grpc-port")
    header_forward_pattern: str = setting(
        "", "RE2 expression (case-insensitive unless it says (?-i)) matched in request metadata "
        "keys; matching metadata reach models as string parameters",
        "--grpc-header-forward-pattern")
    restricted_protocol: list[str] = setting(
        [], "protocol groups behind a header, as <protocols>:<key>=<value>; the header is "
        "triton-grpc-protocol-<key>", "--grpc-restricted-protocol")
    response_compression_level: Literal["none", "low", "medium", "high"] = setting(
        "none", "compression level of responses (algorithm as the client accepts)",
        "--grpc-infer-response-compression-level")
    keepalive_time_ms: int = setting(7200000, "keepalive ping period", "--grpc-keepalive-time", minimum=0)
    keepalive_timeout_ms: int = setting(
        20000, "wait for a keepalive ping ack before closing", "--grpc-keepalive-timeout", minimum=0)
    keepalive_permit_without_calls: bool = setting(
        False, "allow keepalive pings while no call is open", "--grpc-keepalive-permit-without-calls")
    http2_max_pings_without_data: int = setting(
        2, "pings sent without data before pings are held back (0 = no limit)",
        "--grpc-http2-max-pings-without-data", minimum=0)
    http2_min_recv_ping_interval_without_data_ms: int = setting(
        300000, "shortest interval between client pings without data",
        "--grpc-http2-min-recv-ping-interval-without-data", minimum=0)
    http2_max_ping_strikes: int = setting(
        2, "bad pings tolerated before the connection closes (0 = any)",
        "--grpc-http2-max-ping-strikes", minimum=0)
    max_connection_age_ms: int = setting(
        0, "close connections older than this (0 = never)", "--grpc-max-connection-age", minimum=0)
    max_connection_age_grace_ms: int = setting(
        0, "grace for calls on a connection closed for age (0 = unlimited)",
        "--grpc-max-connection-age-grace", minimum=0)
    use_ssl: bool = setting(False, "serve over TLS", "--grpc-use-ssl")
    use_ssl_mutual: bool = setting(False, "require and verify client certificates (implies TLS)",
                                   "--grpc-use-ssl-mutual")
    server_cert: str = setting("", "PEM file of the server certificate", "--grpc-server-cert")
    server_key: str = setting("", "PEM file of the server private key", "--grpc-server-key")
    root_cert: str = setting("", "PEM file of the root certificates that verify clients", "--grpc-root-cert")
    max_message_bytes: int = setting(
        2147483647, "largest request or response message (bytes), as Triton's INT_MAX", "", minimum=1)
    ordered_streams: bool = setting(
        False, "ModelStreamInfer writes every response in request order, decoupled models too "
        "(per stream: metadata naiad-ordered-stream: true)", "")
    transport: Literal["native", "grpcio"] = setting(
        "native", "what serves gRPC: naiad's native front end (grpc++; falls back to grpcio with a "
        "log line where it was not built) or grpcio's asyncio server", "")
    native_lanes: bool = setting(
        True, "the native front end hands plain ModelInfer calls straight to the models' native "
        "lanes (no Python per request); off: every call takes the Python path", "")
    stop_grace_secs: float = setting(
        1.0, "at stop, how long calls still open (idle streams) may take before they are cancelled", "",
        minimum=0)

    def validate(self) -> None:
        self.restrictions()  # raises ConfigError on a malformed entry
        header_forward.compile_pattern(self.header_forward_pattern)  # raises ConfigError
        if self.use_ssl or self.use_ssl_mutual:
            if not self.server_cert or not self.server_key:
                raise ConfigError("use_ssl: server_cert and server_key are required")
            if self.use_ssl_mutual and not self.root_cert:
                raise ConfigError("use_ssl_mutual: root_cert is required to verify clients")

    def restrictions(self) -> dict[str, tuple[str, str]]:
        """category -> (header, value) from `restricted_protocol` (Triton's parser: split on
        ':' then '='; a category may appear in one group only)."""
        out: dict[str, tuple[str, str]] = {}
        for entry in self.restricted_protocol:
            groups, sep, kv = entry.partition(":")
            key, sep2, value = kv.partition("=")
            if not sep or not sep2 or not groups or not key:
                raise ConfigError(
                    f"restricted_protocol: {entry!r} is not <protocols>:<key>=<value>")
            for category in groups.split(","):
                category = category.strip()
                if category not in RESTRICTED_CATEGORIES:
                    raise ConfigError(
                        f"restricted_protocol: unknown protocol '{category}' (expected one of: "
                        f"{', '.join(RESTRICTED_CATEGORIES)})")
                if category in out:
                    raise ConfigError(
                        f"restricted_protocol: protocol '{category}' can not be specified in "
                        "multiple config groups")
                out[category] = (RESTRICTED_HEADER_PREFIX + key.lower(), value)
        return out

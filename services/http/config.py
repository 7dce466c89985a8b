"""`[services.http]` settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from naiad.kernel import header_forward
from naiad.kernel.schema import ConfigError, setting

# server:src/restricted_features.h RESTRICTED_CATEGORY_NAMES
RESTRICTED_CATEGORIES = (
    "health", "metadata", "inference", "shared-memory", "model-config",
    "model-repository", "statistics", "trace", "logging",
)


def parse_restricted_api(specs: list[str]) -> dict[str, tuple[str, str]]:
    """`<api>[,<api>...]:<header>=<value>` entries (Triton's `--http-restricted-api`)
    -> {category: (header, value)}. An API may appear in one group only."""
    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        colon = spec.find(":")
        equals = spec.find("=", colon + 1) if colon >= 0 else -1
        if colon < 0 or equals < 0 or colon == 0 or equals == colon + 1 or equals == len(spec) - 1:
            raise ConfigError(
                f"--http-restricted-api option format is '<api>:<setting>=<value>'. Got {spec}")
        apis, key, value = spec[:colon], spec[colon + 1:equals], spec[equals + 1:]
        for api in apis.split(","):
            if api not in RESTRICTED_CATEGORIES:
                raise ConfigError(f"unknown restricted api '{api}' (expected one of: "
                                  f"{', '.join(RESTRICTED_CATEGORIES)})")
            if api in out:
                raise ConfigError(f"restricted api '{api}' can not be specified in multiple config groups")
            out[api] = (key, value)
    return out


@dataclass
class HttpConfig:
    host: str = setting("0.0.0.0", "address to listen on", "--http-address")
    port: int = setting(8000, "port to listen on (0 = any free port)", "--http-port", minimum=0, maximum=65535)
    reuse_port: bool = setting(False, "set SO_REUSEPORT on the listening socket", "--reuse-http-port")
    header_forward_pattern: str = setting(
        "", "RE2 expression (case-insensitive unless it says (?-i)) matched in request header names; "
        "matching headers reach models as request parameters",
        "--http-header-forward-pattern")
    restricted_api: list[str] = setting(
        [], "API groups behind a header, as <apis>:<key>=<value>", "--http-restricted-api")
    max_body_bytes: int = setting(
        1 << 30, "largest request body accepted, after decompression (bytes); larger gets 413", "", minimum=1)
    keepalive_timeout_secs: float = setting(75.0, "idle keep-alive connections close after this", "", minimum=0)
    max_decompressed_bytes: int = setting(
        64 << 20, "largest gzip/deflate request body once inflated (bytes; checked while inflating, "
        "and never above max_body_bytes); larger gets 413", "", minimum=1)
    max_header_bytes: int = setting(
        64 << 10, "largest request line and header fields together (bytes); larger gets 431", "", minimum=256)
    max_headers: int = setting(100, "most header fields in a request; more gets 431", "", minimum=1)
    max_url_bytes: int = setting(16 << 10, "longest request target (bytes); longer gets 414", "", minimum=16)
    header_timeout_secs: float = setting(
        30.0, "a request's line and headers must arrive within this from their first byte, else 408 "
        "(0 = no limit)", "", minimum=0)
    body_timeout_secs: float = setting(
        30.0, "a request body must bring body_min_bytes_per_sec over each window of this length, "
        "else 408 (0 = no limit)", "", minimum=0)
    body_min_bytes_per_sec: int = setting(
        1024, "slowest request body accepted, averaged over body_timeout_secs (bytes a second)", "", minimum=0)
    max_connections: int = setting(
        10000, "most open HTTP connections; one more is answered 503 and closed", "", minimum=1)
    offload_bytes: int = setting(
        1 << 20, "JSON bodies and compressed bodies larger than this are decoded and encoded off the "
        "event loop (bytes)", "", minimum=0)
    transport: Literal["native", "aiohttp"] = setting(
        "native", "what serves HTTP: naiad's native front end (falls back to aiohttp with a log line "
        "where it was not built) or aiohttp", "")
    native_lanes: bool = setting(
        True, "the native front end hands plain infer requests (tensors in binary or JSON) straight to "
        "the models' native lanes (no Python per request); off: every request takes the Python path", "")

    def validate(self) -> None:
        parse_restricted_api(self.restricted_api)
        header_forward.compile_pattern(self.header_forward_pattern)  # raises ConfigError

"""`[services.http]` settings."""

from __future__ import annotations

from dataclasses import dataclass

from naiad.kernel.schema import setting


@dataclass
class HttpConfig:
    host: str = setting("0.0.0.0", "address to listen on", "--http-address")
    port: int = setting(8000, "port to listen on (0 = any free port)", "--http-port", minimum=0)
    reuse_port: bool = setting(False, "set SO_REUSEPORT on the listening socket", "--reuse-http-port")
    header_forward_pattern: str = setting(
        "", "regex of request headers forwarded to models as parameters", "--http-header-forward-pattern")
    restricted_api: list[str] = setting(
        [], "API groups behind a header, as <apis>:<key>=<value>", "--http-restricted-api")
    max_body_bytes: int = setting(
        1 << 30, "largest request body accepted (bytes); larger gets 413", "", minimum=1)
    keepalive_timeout_secs: float = setting(75.0, "idle keep-alive connections close after this", "", minimum=0)

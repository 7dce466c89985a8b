"""`[services.status]` settings (`--status-page=false` turns the page off)."""

from __future__ import annotations

from dataclasses import dataclass

from naiad.kernel.schema import ConfigError, setting


@dataclass
class StatusConfig:
    path: str = setting("/", "where the page is served on the metrics port; its JSON is at <path>status.json")
    interval_s: float = setting(1.0, "how often model statistics are sampled (seconds)", minimum=0.05, maximum=60)
    window_s: float = setting(600.0, "how much history the plots keep (seconds)", minimum=10, maximum=3600)

    def validate(self) -> None:
        if not self.path.startswith("/") or self.path.startswith("/metrics"):
            raise ConfigError(f"[services.status].path: expected an absolute path other than /metrics, got {self.path!r}")
        if not self.path.endswith("/"):
            self.path += "/"

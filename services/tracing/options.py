"""Triton's `--trace-config [<mode>,]<setting>=<value>` strings -> `TraceOptions`.

Global keys: `level` (repeat to combine; OFF anywhere turns tracing off), `rate`, `count`,
`mode`. `triton,` keys: `file`, `log-frequency`. `opentelemetry,` keys: `url`, `resource`
(`key=value`, repeatable), `bsp_max_queue_size`, `bsp_schedule_delay`,
`bsp_max_export_batch_size` (defaults from the `OTEL_BSP_*` environment variables).
Anything else is refused with Triton's "Bad option" words.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from naiad.kernel.schema import ConfigError

# Level bits, as TRITONSERVER_InferenceTraceLevel.
OFF = 0
TIMESTAMPS = 0x4
TENSORS = 0x8

MODES = ("triton", "opentelemetry")
DEFAULT_URL = "http://localhost:4318/v1/traces"
DEFAULT_RESOURCE = "service.name=triton-inference-server"
_BSP = {
    "bsp_max_queue_size": ("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
    "bsp_schedule_delay": ("OTEL_BSP_SCHEDULE_DELAY", 5000),
    "bsp_max_export_batch_size": ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
}


def parse_level(text: str) -> int:
    """One level word as Triton's command line takes it."""
    word = text.strip().lower()
    if word in ("false", "off"):
        return OFF
    if word in ("true", "on", "min", "max", "timestamps"):
        return TIMESTAMPS
    if word == "tensors":
        return TENSORS
    raise ValueError(f"invalid value for trace level option: {word}")


def level_names(level: int) -> list[str]:
    """A level as the settings API shows it: ["OFF"] or some of TIMESTAMPS, TENSORS."""
    if level == OFF:
        return ["OFF"]
    names = []
    if level & TIMESTAMPS:
        names.append("TIMESTAMPS")
    if level & TENSORS:
        names.append("TENSORS")
    return names


@dataclass
class TraceOptions:
    level: int = OFF
    rate: int = 1000
    count: int = -1
    mode: str = "triton"
    file: str = ""
    log_frequency: int = 0
    url: str = DEFAULT_URL
    resource: list[str] = field(default_factory=list)  # "key=value" entries as given
    bsp: dict[str, int] = field(default_factory=dict)
    #: The mode's own settings as given, shown by the settings API (strings).
    mode_settings: dict[str, str | list[str]] = field(default_factory=dict)

    def resource_attributes(self) -> dict[str, str]:
        attrs: dict[str, str] = {}
        for entry in self.resource or [DEFAULT_RESOURCE]:
            key, _, value = entry.partition("=")
            attrs[key] = value
        return attrs


def _int(value: str, what: str, minimum: int, maximum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"invalid value for {what}: {value}") from None
    if not minimum <= n <= maximum:
        raise ValueError(f"{what} must be in [{minimum}, {maximum}], got {value}")
    return n


def _split(text: str) -> tuple[str, str, str]:
    comma = text.find(",")
    equals = text.find("=")
    mode = ""
    if comma >= 0 and (equals < 0 or comma < equals):
        if comma == 0:
            raise ConfigError(f"No trace mode specified. --trace-config option format is "
                              f"<trace mode>,<setting>=<value> or <setting>=<value>. Got {text}")
        mode = text[:comma].strip().lower()
        if mode not in MODES:
            raise ConfigError(f"invalid value for trace mode option: {mode}. "
                              f"Available options are \"triton\" and \"opentelemetry\"")
        text = text[comma + 1:]
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"--trace-config option format is '<trace mode>,<setting>=<value>'. Got {text}")
    return mode, key.strip(), value.strip()


def parse(entries: list[str], environ: dict[str, str] | None = None) -> TraceOptions:
    """Validate every entry; raises ConfigError with the first bad one."""
    env = os.environ if environ is None else environ
    opts = TraceOptions()
    disabled = False
    triton: list[tuple[str, str]] = []
    otel: list[tuple[str, str]] = []
    for text in entries:
        mode, key, value = _split(text)
        prefix = f"{mode}," if mode else ""
        try:
            if mode == "":
                if key == "level":
                    bits = parse_level(value)
                    disabled |= bits == OFF
                    opts.level |= bits
                elif key == "rate":
                    opts.rate = _int(value, "trace rate", 0, 2**32 - 1)
                elif key == "count":
                    opts.count = _int(value, "trace count", -1, 2**31 - 1)
                elif key == "mode":
                    if value.lower() not in MODES:
                        raise ValueError(f"invalid value for trace mode option: {value}. "
                                         f"Available options are \"triton\" and \"opentelemetry\"")
                    opts.mode = value.lower()
                else:
                    raise ValueError(f"unknown setting '{key}' (expected level, rate, count or mode; "
                                     f"file and log-frequency take the 'triton,' prefix)")
            elif mode == "triton":
                if key == "file":
                    opts.file = value
                elif key == "log-frequency":
                    opts.log_frequency = _int(value, "trace log frequency", 0, 2**32 - 1)
                else:
                    raise ValueError(f"unknown triton setting '{key}' (expected file or log-frequency)")
                triton.append((key, value))
            else:
                if key == "url":
                    opts.url = value
                elif key == "resource":
                    if "=" not in value:
                        raise ValueError(f"expected resource=<key>=<value>, got '{value}'")
                    opts.resource.append(value)
                elif key in _BSP:
                    opts.bsp[key] = _int(value, key, 0, 2**32 - 1)
                else:
                    raise ValueError(f"unknown opentelemetry setting '{key}' (expected url, resource, "
                                     f"{', '.join(_BSP)})")
                otel.append((key, value))
        except ValueError as exc:
            raise ConfigError(f"Bad option: \"--trace-config {prefix}{key}\". {exc}") from None
    if disabled:
        opts.level = OFF
    if opts.mode == "opentelemetry":
        for key, (var, default) in _BSP.items():
            if key not in opts.bsp:
                raw = env.get(var, str(default))
                try:
                    opts.bsp[key] = _int(raw, var, 0, 2**32 - 1)
                except ValueError as exc:
                    raise ConfigError(f"Bad option: \"{var}\". {exc}") from None
        settings: dict[str, str | list[str]] = {"url": opts.url}
        settings["resource"] = (opts.resource[0] if len(opts.resource) == 1
                                else list(opts.resource) if opts.resource else DEFAULT_RESOURCE)
        for key in _BSP:
            settings[key] = str(opts.bsp[key])
        opts.mode_settings = settings
    return opts

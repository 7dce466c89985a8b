"""Triton's `--metrics-config <setting>=<value>` entries -> `MetricsOptions`:
`counter_latencies` (default true), `summary_latencies` (default false),
`summary_quantiles` ("<q>:<error>,<q>:<error>,..."; default Triton's five) and
`histogram_latencies` (default false; Triton 24.08's first-response histogram)."""

from __future__ import annotations

from dataclasses import dataclass, field

from naiad.kernel.schema import ConfigError

DEFAULT_QUANTILES: tuple[tuple[float, float], ...] = (
    (0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001), (0.999, 0.001))

_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")


@dataclass
class MetricsOptions:
    counter_latencies: bool = True
    summary_latencies: bool = False
    histogram_latencies: bool = False  # nv_inference_first_response_histogram_ms (Triton 24.08+)
    quantiles: tuple[tuple[float, float], ...] = field(default=DEFAULT_QUANTILES)


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"--metrics-config {key}: expected true or false, got '{value}'")


def parse_quantiles(text: str) -> tuple[tuple[float, float], ...]:
    out = []
    for item in text.replace(" ", ",").split(","):
        if not item.strip():
            continue
        q, sep, err = item.partition(":")
        try:
            quantile, error = float(q), float(err)
        except ValueError:
            raise ConfigError(
                f"--metrics-config summary_quantiles: expected <quantile>:<error>,..., got '{text}'") from None
        if not sep or not 0.0 <= quantile <= 1.0 or not 0.0 <= error <= 1.0:
            raise ConfigError(
                f"--metrics-config summary_quantiles: expected <quantile>:<error> within [0, 1], got '{item}'")
        out.append((quantile, error))
    if not out:
        raise ConfigError("--metrics-config summary_quantiles: no quantiles given")
    return tuple(out)


def parse(entries: list[str]) -> MetricsOptions:
    opts = MetricsOptions()
    for text in entries:
        head, sep, value = text.partition("=")
        if not sep or not head.strip():
            raise ConfigError(f"--metrics-config option format is '<setting>=<value>'. Got {text}")
        key = head.split(",")[-1].strip()  # Triton also takes "<group>,<setting>=<value>"
        value = value.strip().strip('"')
        if key == "counter_latencies":
            opts.counter_latencies = _bool(key, value)
        elif key == "summary_latencies":
            opts.summary_latencies = _bool(key, value)
        elif key == "histogram_latencies":
            opts.histogram_latencies = _bool(key, value)
        elif key == "summary_quantiles":
            opts.quantiles = parse_quantiles(value)
        else:
            raise ConfigError(f"--metrics-config: unknown setting '{key}' "
                              f"(expected counter_latencies, histogram_latencies, summary_latencies or summary_quantiles)")
    return opts

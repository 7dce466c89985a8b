"""pb_utils.MetricFamily / Metric against the server-side registry, in one process: a
runtime stand-in forwards the stub's calls to `StubMetrics`, as the parent does."""

from __future__ import annotations

import gc
from typing import Any, Iterator

import pytest

from naiad.backends.python import pb_utils
from naiad.backends.python.metrics import StubMetrics
from naiad.kernel.inference.custom_metrics import CustomMetrics
from naiad.kernel.inference.errors import InferenceError


class _Runtime:
    """What the stub offers pb_utils: answered calls, and one-way ones sent later."""

    def __init__(self) -> None:
        self.registry = CustomMetrics()
        self.parent = StubMetrics(self.registry)
        self.deferred: list[tuple[str, tuple]] = []

    def control(self, op: str, args: tuple) -> Any:
        self.flush()
        try:
            return self.parent.call(op, args)
        except InferenceError as exc:
            raise pb_utils.TritonModelException(exc.message) from None

    def notify(self, op: str, args: tuple) -> None:
        self.deferred.append((op, args))

    def flush(self) -> None:
        while self.deferred:
            self.parent.call(*self.deferred.pop(0))

    def series(self, name: str) -> dict:
        family = next(f for f in self.registry.families() if f.name == name)
        return {labels: s.value for labels, s in family.series.items()}


@pytest.fixture
def runtime() -> Iterator[_Runtime]:
    rt = _Runtime()
    pb_utils._bind(rt)
    try:
        yield rt
    finally:
        pb_utils._bind(None)


def test_counter_and_gauge_semantics(runtime: _Runtime) -> None:
    fam = pb_utils.MetricFamily("unit_counter", "d", pb_utils.MetricFamily.COUNTER)
    m = fam.Metric({"b": "2", "a": "1"})
    m.increment(1.5)
    assert fam.Metric({"a": "1", "b": "2"}).value() == 1.5  # same labels: same series
    assert runtime.series("unit_counter") == {(("a", "1"), ("b", "2")): 1.5}
    with pytest.raises(pb_utils.TritonModelException) as exc:
        m.set(3)
    assert exc.value.message() == "Failed to set metric value: TRITONSERVER_METRIC_KIND_COUNTER does not support Set"
    with pytest.raises(pb_utils.TritonModelException) as exc:
        m.increment(-1)
    assert exc.value.message() == ("Failed to increment metric value: TRITONSERVER_METRIC_KIND_COUNTER can only be "
                                   "incremented monotonically by non-negative values.")
    gauges = pb_utils.MetricFamily("unit_gauge", "d", pb_utils.MetricFamily.GAUGE)
    g = gauges.Metric()
    g.set(7)
    g.increment(-2)
    assert g.value() == 5


def test_family_names_are_shared_and_kinds_checked(runtime: _Runtime) -> None:
    first = pb_utils.MetricFamily("unit_dup", "first description", pb_utils.MetricFamily.COUNTER)
    second = pb_utils.MetricFamily("unit_dup", "second description", pb_utils.MetricFamily.COUNTER)
    first.Metric({"k": "one"})
    keep = second.Metric({"k": "two"})
    assert [f.description for f in runtime.registry.families()] == ["first description"]
    with pytest.raises(pb_utils.TritonModelException) as exc:
        pb_utils.MetricFamily("unit_dup", "x", pb_utils.MetricFamily.GAUGE)
    assert exc.value.message() == "Error when creating MetricFamily: Family name already exists with different type"
    with pytest.raises(pb_utils.TritonModelException, match="Labels must be a dictionary"):
        second.Metric(["k"])
    assert keep.value() == 0


def test_deleting_a_family_invalidates_its_metrics(runtime: _Runtime) -> None:
    fam = pb_utils.MetricFamily("unit_lifetime", "d", pb_utils.MetricFamily.GAUGE)
    metric = fam.Metric({"k": "v"})
    metric.set(3)
    del fam
    gc.collect()
    gone = ("Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The 'MetricFamily' "
            "object should be deleted AFTER its corresponding 'Metric' objects have been deleted.")
    for call, words in ((lambda: metric.set(1), "Failed to set metric value: "),
                        (lambda: metric.increment(1), "Failed to increment metric value: "),
                        (metric.value, "Failed to get metric value: ")):
        with pytest.raises(pb_utils.TritonModelException) as exc:
            call()
        assert exc.value.message() == words + gone
    runtime.flush()
    assert runtime.series("unit_lifetime") == {}  # the series went with the family's metrics


def test_a_series_lives_while_one_metric_holds_it(runtime: _Runtime) -> None:
    fam = pb_utils.MetricFamily("unit_refs", "d", pb_utils.MetricFamily.COUNTER)
    m1, m2 = fam.Metric({"k": "v"}), fam.Metric({"k": "v"})
    m1.increment(2)
    del m1
    gc.collect()
    runtime.flush()
    assert runtime.series("unit_refs") == {(("k", "v"),): 2}
    del m2
    gc.collect()
    runtime.flush()
    assert runtime.series("unit_refs") == {}


def test_released_stub_leaves_no_series() -> None:
    registry = CustomMetrics()
    stub = StubMetrics(registry)
    fam = stub.call("metric_family_new", ("unit_release", "d", "gauge"))
    stub.call("metric_set", (stub.call("metric_new", (fam, {"k": "v"})), 4.0))
    assert registry.families()[0].series
    stub.release()
    assert not registry.families()[0].series  # the family stays registered, as in Triton
    with pytest.raises(InferenceError, match="Invalid metric name"):
        registry.new_family("bad name", "d", "counter")

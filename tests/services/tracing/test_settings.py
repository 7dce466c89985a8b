"""Trace settings, options and the trace file, as pure logic: Triton's parsing of
`--trace-config`, its update rules for global and per-model settings, sampling, and the
JSON records and files it writes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.inference.trace import Trace
from naiad.kernel.inference.types import Tensor
from naiad.kernel.schema import ConfigError
from naiad.services.tracing.options import OFF, TENSORS, TIMESTAMPS, parse
from naiad.services.tracing.records import trace_records
from naiad.services.tracing.settings import SettingsTable, parse_updates
from naiad.services.tracing.trace_file import TritonFileSink
from naiad.services.tracing.tracer import NaiadTracer

# ------------------------------------------------------------------ options --


def test_options_defaults_and_levels():
    o = parse([])
    assert (o.level, o.rate, o.count, o.mode, o.file, o.log_frequency) == (OFF, 1000, -1, "triton", "", 0)
    o = parse(["level=TIMESTAMPS", "level=tensors", "rate=5", "count=3", "triton,file=/tmp/t.json",
               "triton,log-frequency=2"])
    assert o.level == TIMESTAMPS | TENSORS and o.rate == 5 and o.count == 3
    assert o.file == "/tmp/t.json" and o.log_frequency == 2
    assert parse(["level=max"]).level == TIMESTAMPS
    # OFF anywhere turns tracing off, as Triton's parser does.
    assert parse(["level=TIMESTAMPS", "level=off"]).level == OFF


@pytest.mark.parametrize("entry, words", [
    ("level=loud", "invalid value for trace level option: loud"),
    ("rate=x", "Bad option: \"--trace-config rate\""),
    ("count=-2", "Bad option: \"--trace-config count\""),
    ("file=/tmp/x", "Bad option: \"--trace-config file\""),
    ("triton,url=http://x", "Bad option: \"--trace-config triton,url\""),
    ("mode=jaeger", "invalid value for trace mode option: jaeger"),
    ("zipkin,url=x", "invalid value for trace mode option: zipkin"),
    ("level", "--trace-config option format"),
])
def test_options_refused(entry, words):
    with pytest.raises(ConfigError) as err:
        parse([entry])
    assert words in str(err.value)


def test_opentelemetry_options(monkeypatch):
    o = parse(["mode=opentelemetry", "opentelemetry,url=http://127.0.0.1:1/v1/traces",
               "opentelemetry,resource=service.name=naiad", "opentelemetry,resource=team=ml",
               "opentelemetry,bsp_schedule_delay=100"], environ={"OTEL_BSP_MAX_QUEUE_SIZE": "64"})
    assert o.mode == "opentelemetry"
    assert o.resource_attributes() == {"service.name": "naiad", "team": "ml"}
    assert o.bsp == {"bsp_schedule_delay": 100, "bsp_max_queue_size": 64, "bsp_max_export_batch_size": 512}
    assert parse(["mode=opentelemetry"], environ={}).resource_attributes() == {
        "service.name": "triton-inference-server"}


# ------------------------------------------------------------------ settings --


def _table(*entries: str) -> SettingsTable:
    return SettingsTable(parse(list(entries)))


def test_reply_shape_triton_and_opentelemetry():
    t = _table("level=TIMESTAMPS", "rate=1", "triton,file=/tmp/t.json")
    assert t.reply() == {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "-1",
                         "log_frequency": "0", "trace_file": "/tmp/t.json", "trace_mode": "triton"}
    t = SettingsTable(parse(["mode=opentelemetry", "opentelemetry,url=http://h:4318/v1/traces"], environ={}))
    reply = t.reply()
    assert list(reply)[:4] == ["trace_level", "trace_rate", "trace_count", "trace_mode"]
    assert reply["trace_mode"] == "opentelemetry" and reply["url"] == "http://h:4318/v1/traces"
    assert reply["resource"] == "service.name=triton-inference-server"
    assert reply["bsp_max_queue_size"] == "2048" and "trace_file" not in reply


def test_trace_file_update_refused():
    with pytest.raises(InferenceError) as err:
        parse_updates({"trace_file": "/tmp/elsewhere.json"})
    assert err.value.code == ErrorCode.UNSUPPORTED
    assert err.value.message == "trace file location can not be updated through network protocol"


@pytest.mark.parametrize("updates, words", [
    ({"trace_rate": "fast"}, "Unable to parse 'trace_rate', got: fast"),
    ({"trace_count": "-5"}, "Unable to parse 'trace_count'. Expecting value >= -1, got:-5"),
    ({"log_frequency": "9999999999"},
     "Unable to parse 'log_frequency', value is out of range [ 0, 4294967295 ], got: 9999999999"),
    ({"trace_rate": " x1"}, "Unable to parse 'trace_rate', got:  x1"),
    ({"trace_level": ["OFF", "TIMESTAMPS"]}, "Expect only one trace level 'OFF' is specified"),
])
def test_bad_updates(updates, words):
    with pytest.raises(InferenceError) as err:
        parse_updates(updates)
    assert err.value.code == ErrorCode.INVALID_ARG and words in err.value.message


def test_numbers_are_read_as_std_stoi_reads_them():
    """Triton reads numbers with std::stoi: blanks, a sign, digits up to the first other
    character; a negative rate wraps into uint32 as Triton stores it."""
    new = parse_updates({"trace_rate": " 12abc", "trace_count": "+3", "log_frequency": "-1"})
    assert new.values == {"rate": 12, "count": 3, "log_frequency": 2**32 - 1}


def test_unknown_level_words_are_skipped_and_grpc_words_its_errors_apart():
    assert parse_updates({"trace_level": ["timestamps", "BOGUS"]}).values == {}
    assert parse_updates({"trace_level": ["BOGUS", "TENSORS"]}).values == {"level": 8}
    with pytest.raises(InferenceError) as err:
        parse_updates({"trace_count": "-2"}, "grpc")
    assert err.value.message == "Unable to parse 'trace_count'. Expecting value >= -1, got: -2"
    with pytest.raises(InferenceError) as err:
        parse_updates({"trace_level": ["OFF", "OFF"], "trace_rate": ["1", "2"]}, "grpc")
    assert err.value.message == "Expect only one trace level 'OFF' is specified"


def test_model_override_follows_global_for_unset_keys_and_null_clears():
    t = _table("level=TIMESTAMPS", "rate=10", "triton,file=/tmp/g.json")
    t.update("m", parse_updates({"trace_rate": "2"}))
    assert t.reply("m")["trace_rate"] == "2" and t.reply("m")["trace_level"] == ["TIMESTAMPS"]
    assert t.reply()["trace_rate"] == "10"
    # A global change reaches the keys the model did not set.
    t.update("", parse_updates({"trace_level": ["TIMESTAMPS", "TENSORS"], "trace_rate": "7"}))
    assert t.reply("m")["trace_level"] == ["TIMESTAMPS", "TENSORS"] and t.reply("m")["trace_rate"] == "2"
    # null clears the model's own value: it falls back to the global one.
    t.update("m", parse_updates({"trace_rate": None}))
    assert t.reply("m")["trace_rate"] == "7" and "m" not in t.models
    # Clearing a global key goes back to the command line's value.
    t.update("", parse_updates({"trace_rate": None}))
    assert t.reply()["trace_rate"] == "10"


def test_turning_on_without_a_file_is_refused_off_is_allowed():
    t = _table()
    with pytest.raises(InferenceError) as err:
        t.update("", parse_updates({"trace_level": ["TIMESTAMPS"]}))
    assert "trace file name is not given" in err.value.message
    t.update("", parse_updates({"trace_level": ["OFF"]}))
    assert t.reply()["trace_level"] == ["OFF"] and not t.any_active()


def test_rate_and_count_sampling():
    t = _table("level=TIMESTAMPS", "rate=3", "count=2", "triton,file=/tmp/x.json")
    exhausted = []
    tracer = NaiadTracer(t, on_exhausted=lambda: exhausted.append(1))
    got = [tracer.sample("m") for _ in range(12)]
    taken = [i for i, tr in enumerate(got) if tr is not None]
    assert taken == [2, 5]  # 1 of 3, then the count ran out
    assert [got[i].id for i in taken] == [1, 2]
    assert exhausted == [1] and t.reply()["trace_count"] == "0" and not t.any_active()


def test_child_trace_inherits_parent():
    t = _table("level=TIMESTAMPS", "level=TENSORS", "rate=1", "triton,file=/tmp/x.json")
    tracer = NaiadTracer(t)
    parent = tracer.sample("ensemble", "req-1")
    child = tracer.sample("step", parent=parent)
    assert child.parent_id == parent.id and child.want_tensors and child.id == parent.id + 1


# ------------------------------------------------------------------ records and files --


def _trace(trace_id: int, setting, parent_id: int = 0) -> Trace:
    from naiad.services.tracing.tracer import TraceState

    tr = Trace(trace_id, "m", f"r{trace_id}", parent_id, setting.tensors, TraceState(setting))
    tr.model_version = "3"
    for i, name in enumerate(("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_END", "REQUEST_END")):
        tr.stamp(name, 1000 + 10 * i)
    tr.stamp("HTTP_RECV_START", 900)
    return tr


def test_records_header_first_then_timestamps_in_time_order_and_tensors():
    t = _table("level=TIMESTAMPS", "level=TENSORS", "rate=1", "triton,file=/tmp/x.json")
    tr = _trace(7, t.global_, parent_id=3)
    tr.tensor("TENSOR_QUEUE_INPUT", Tensor.from_numpy("IN", np.array([[1.5, 2.0]], np.float32)))
    tr.tensor("TENSOR_BACKEND_OUTPUT", Tensor("OUT", "BYTES", (2,), array=np.array([b"a", b"bc"], object)))
    recs = trace_records(tr, timestamps=True, tensors=True)
    assert recs[0] == {"id": 7, "model_name": "m", "model_version": 3, "request_id": "r7", "parent_id": 3}
    names = [r["timestamps"][0]["name"] for r in recs if "timestamps" in r]
    assert names == ["HTTP_RECV_START", "REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_END", "REQUEST_END"]
    tensors = [r for r in recs if "activity" in r]
    assert tensors[0] == {"id": 7, "activity": "TENSOR_QUEUE_INPUT",
                          "tensor": {"name": "IN", "data": "1.5,2", "shape": "1,2", "dtype": "FP32"}}
    assert tensors[1]["tensor"]["data"] == '"a","bc"' and tensors[1]["activity"] == "TENSOR_BACKEND_OUTPUT"
    # TENSORS alone: no timestamp records.
    assert not [r for r in trace_records(tr, timestamps=False, tensors=True) if "timestamps" in r]


def test_trace_file_log_frequency_and_shutdown(tmp_path):
    path = tmp_path / "trace.json"
    t = _table("level=TIMESTAMPS", "rate=1", f"triton,file={path}", "triton,log-frequency=2")
    sink = TritonFileSink(logging.getLogger("test"))
    for i in range(1, 6):
        t.global_.created += 1
        sink.write(_trace(i, t.global_))
    sink.close([t.global_])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["trace.json.0", "trace.json.1", "trace.json.2"]  # 2 + 2 + the last one at the end
    ids = [sorted({r["id"] for r in json.loads((tmp_path / f).read_text())}) for f in files]
    assert ids == [[1, 2], [3, 4], [5]]


def test_trace_file_main_file_is_one_array_across_setting_changes(tmp_path):
    path = tmp_path / "trace.json"
    t = _table("level=TIMESTAMPS", "rate=1", f"triton,file={path}")
    sink = TritonFileSink(logging.getLogger("test"))
    old = t.global_
    sink.write(_trace(1, old))
    for replaced in t.update("", parse_updates({"trace_rate": "2"})):
        sink.retire(replaced)
    sink.write(_trace(2, t.global_))
    sink.close([t.global_])
    records = json.loads(path.read_text())
    assert sorted({r["id"] for r in records}) == [1, 2]


def test_count_reached_goes_to_an_indexed_file(tmp_path):
    path = tmp_path / "trace.json"
    t = _table("level=TIMESTAMPS", "rate=1", "count=2", f"triton,file={path}")
    tracer = NaiadTracer(t)
    sink = TritonFileSink(logging.getLogger("test"))
    traces = [tracer.sample("m") for _ in range(3)]
    assert traces[2] is None
    for tr in traces[:2]:
        tr.stamp("REQUEST_START")
        sink.write(tr)
    assert (tmp_path / "trace.json.0").exists()
    sink.close([t.global_])
    assert not path.exists()


def test_propagated_context_is_always_traced():
    t = SettingsTable(parse(["mode=opentelemetry", "level=TIMESTAMPS", "rate=1000"], environ={}))
    tracer = NaiadTracer(t)
    assert tracer.sample("m") is None
    assert tracer.sample("m", headers={"traceparent": "garbage"}) is None
    trace = tracer.sample("m", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert trace is not None and trace.context.parent_context is not None


def test_update_refused_once_the_count_is_used_up():
    """Triton's Valid() wants a non-zero count: with traces left at 0 and tracing on, an update
    that keeps a count set through the API is refused (with no reason after the colon); turning off is allowed."""
    t = _table("level=TIMESTAMPS", "triton,file=/tmp/x.json")
    t.update("", parse_updates({"trace_count": "1"}))  # set through the API: kept over updates
    t.global_.count = 0  # the one trace was taken
    with pytest.raises(InferenceError) as err:
        t.update("", parse_updates({"trace_rate": "5"}))
    assert err.value.message == "Attempting to set invalid trace setting :"
    t.update("", parse_updates({"trace_count": "4"}))
    assert t.reply()["trace_count"] == "4"

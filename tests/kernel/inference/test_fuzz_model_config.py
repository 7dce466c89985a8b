"""Fuzzing config.pbtxt and JSON config parsing (kernel/inference/model_config.py) and the
checks a load runs on what they return, in-process: config files built by hypothesis from
ModelConfig's own descriptor (right and wrong types, unknown fields and enum names, nested
messages) and mutated byte by byte, written to disk and read as a load reads them.

Property: every input is either a config (which then normalizes, passes or fails the load's
checks with InferenceError, selects versions and renders as Triton's JSON) or an
InferenceError (INVALID_ARG) naming the file; nothing else is raised, so no load ends in a
500 with Python's words. `NAIAD_FUZZ_INPUTS` (`make fuzz`) raises the number of inputs.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import descriptor as _d
from hypothesis import strategies as st

from naiad.kernel.inference import model_config as mcfg
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.services.models import repository as repo
from naiad.services.models.manager import ModelManager
from support.fuzzing import run_target

SHORT = 640  # inputs per target in the normal suite (in-process)
Field = _d.FieldDescriptor

SEEDS = [
    'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'
    'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    'dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100 }\n'
    'instance_group [ { count: 2 kind: KIND_CPU } ]\n',
    'name: "m"\nplatform: "ensemble"\nmax_batch_size: 0\n'
    'input [ { name: "IN" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
    'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
    'ensemble_scheduling { step [ { model_name: "a" model_version: -1 input_map { key: "X" value: "IN" }'
    ' output_map { key: "Y" value: "OUT" } } ] }\n',
    'name: "m"\nbackend: "python"\nmax_batch_size: 4\nsequence_batching { max_sequence_idle_microseconds: 5000000'
    ' control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] } ]'
    ' state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ] }\n'
    'version_policy { specific { versions: [ 1, 3 ] } }\nparameters { key: "k" value { string_value: "v" } }\n'
    'model_transaction_policy { decoupled: true }\n',
]

_INTS = st.one_of(st.integers(-3, 70), st.sampled_from([-(1 << 63), (1 << 63) - 1, 1 << 64, (1 << 31), -(1 << 31) - 1]))
_WRONG = st.sampled_from(['"text"', "1.5", "true", "-", "{ }", "[ ]", "0x1F", "1e400", "nan", "TYPE_FP32", '"\\xff"'])


@st.composite
def _value(draw, field: Field, depth: int) -> str:
    """One field's value in text format: mostly of the field's type, sometimes not."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_WRONG)
    if field.type == Field.TYPE_MESSAGE:
        return "{ " + draw(_message(field.message_type, depth + 1)) + " }"
    if field.type == Field.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return draw(st.one_of(st.sampled_from(names), st.integers(-2, 40).map(str), st.just("KIND_NOPE")))
    if field.type == Field.TYPE_BOOL:
        return draw(st.sampled_from(["true", "false", "1", "0", "True"]))
    if field.type in (Field.TYPE_FLOAT, Field.TYPE_DOUBLE):
        return draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(["inf", "-inf"])))
    if field.type in (Field.TYPE_STRING, Field.TYPE_BYTES):
        return json.dumps(draw(st.text(max_size=12)))
    return str(draw(_INTS))


@st.composite
def _message(draw, desc, depth: int = 0) -> str:
    """A message's body in text format: a few of its fields (or an unknown one)."""
    fields = list(desc.fields)
    if depth > 4 or not fields:
        return ""
    parts = []
    for _ in range(draw(st.integers(0, 5 if depth == 0 else 3))):
        if draw(st.integers(0, 19)) == 0:
            parts.append(f"no_such_field: {draw(_INTS)}")
            continue
        field = draw(st.sampled_from(fields))
        if field.label == Field.LABEL_REPEATED and draw(st.booleans()):
            values = [draw(_value(field, depth)) for _ in range(draw(st.integers(0, 3)))]
            if field.type == Field.TYPE_MESSAGE or (field.message_type and field.message_type.GetOptions().map_entry):
                parts.append(f"{field.name} [ {', '.join(values)} ]")
            else:
                parts.append(f"{field.name}: [ {', '.join(values)} ]")
        else:
            sep = " " if field.type == Field.TYPE_MESSAGE and draw(st.booleans()) else ": "
            parts.append(f"{field.name}{sep}{draw(_value(field, depth))}")
    return "\n".join(parts)


configs = st.one_of(_message(mcfg.ModelConfig.DESCRIPTOR), st.sampled_from(SEEDS),
                    st.tuples(st.sampled_from(SEEDS), _message(mcfg.ModelConfig.DESCRIPTOR)).map("\n".join)
                    ).map(lambda text: text.encode("utf-8", "surrogatepass"))


def _after_parse(config) -> None:
    """What a load does with a parsed config before any backend sees it."""
    try:
        mcfg.normalize(config, "m")
        ModelManager._check_config(config)
    except InferenceError as exc:
        assert exc.code is ErrorCode.INVALID_ARG, exc
        return
    repo.select_versions(config, [1, 2, 3])
    json.loads(mcfg.config_to_json(config))


def test_fuzz_config_pbtxt(tmp_path):
    path = tmp_path / "config.pbtxt"

    def check(raw: bytes) -> None:
        path.write_bytes(raw)
        try:
            config = mcfg.parse_file(path)
        except InferenceError as exc:
            assert exc.code is ErrorCode.INVALID_ARG and str(path) in exc.message, exc
            return
        _after_parse(config)

    run_target("config-pbtxt", configs, check, SHORT)


def _as_json(text: bytes) -> bytes:
    """The same configs as the load API's JSON `config` (when they parse as text)."""
    try:
        return json.dumps(mcfg.to_dict(mcfg.parse_text(text.decode()))).encode()
    except (InferenceError, UnicodeDecodeError):
        return text


def test_fuzz_config_json():
    def check(raw: bytes) -> None:
        try:
            config = mcfg.parse_json(raw, "config override of 'm'")
        except InferenceError as exc:
            assert exc.code is ErrorCode.INVALID_ARG, exc
            return
        _after_parse(config)

    run_target("config-json", configs.map(_as_json), check, SHORT)


@pytest.mark.parametrize("raw", [b'name: "\xff"\n', b"max_batch_size: 1\n\x80"])
def test_config_not_utf8_is_invalid(tmp_path, raw):
    """A config.pbtxt that is not UTF-8 (found by the fuzz run: UnicodeDecodeError escaped
    parse_file and a load failed with Python's words) is refused as a parse error."""
    path = tmp_path / "config.pbtxt"
    path.write_bytes(raw)
    with pytest.raises(InferenceError) as caught:
        mcfg.parse_file(path)
    assert caught.value.code is ErrorCode.INVALID_ARG and str(path) in caught.value.message


@pytest.mark.parametrize("text", ['output [ { name: "OUT" data_type: 18446744073709551616 } ]',
                                  "instance_group [ { kind: 99999999999 } ]"])
def test_enum_number_out_of_range_is_invalid(tmp_path, text):
    """Found by the long fuzz run: an enum field given a number past its range raised
    protobuf's ValueError ("Value out of range") out of parse_file."""
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    with pytest.raises(InferenceError) as caught:
        mcfg.parse_file(path)
    assert caught.value.code is ErrorCode.INVALID_ARG and "out of range" in caught.value.message


@pytest.mark.parametrize("text", [r'{"no_such\ud800": 1}', '{"no_such\ud800": 1}'])
def test_json_field_name_not_utf8_is_invalid(text):
    """Found by the long fuzz run (through the load API): a JSON config whose field name holds
    a lone surrogate raised SystemError out of protobuf's parser (a 500 with its words)."""
    with pytest.raises(InferenceError) as caught:
        mcfg.parse_json(text, "config override of 'm'")
    assert caught.value.code is ErrorCode.INVALID_ARG and "not valid UTF-8" in caught.value.message


@pytest.mark.parametrize("text", ["0", '"x"', "null", "true", "[1, 2]"])
def test_json_config_not_an_object_is_invalid(text):
    """Found by the long fuzz run: a JSON config that is not an object raised TypeError out of
    protobuf's parser (a load answered 500 with Python's words)."""
    with pytest.raises(InferenceError) as caught:
        mcfg.parse_json(text, "config override of 'm'")
    assert caught.value.code is ErrorCode.INVALID_ARG and "failed to parse" in caught.value.message

"""What the sequence batcher reads from `sequence_batching`, checked once at load: control
inputs (START, END, READY, CORRID) with their tensors, implicit state, slots, delays."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from naiad.kernel.inference.datatypes import CONFIG_ENUM_NAME, CONFIG_TO_WIRE, WIRE_TO_NUMPY
from naiad.kernel.inference.errors import InferenceError
from naiad.kernel.inference.types import Tensor

# ModelSequenceBatching.Control.Kind
START, READY, END, CORRID = 0, 1, 2, 3
_KIND_NAMES = {START: "CONTROL_SEQUENCE_START", READY: "CONTROL_SEQUENCE_READY",
               END: "CONTROL_SEQUENCE_END", CORRID: "CONTROL_SEQUENCE_CORRID"}
_CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")


def _wire(enum_value: int) -> str:
    return CONFIG_TO_WIRE.get(CONFIG_ENUM_NAME.get(enum_value, ""), "")


def _is_sequence_model(config: Any) -> bool:
    return config.HasField("sequence_batching")


def control_input_names(config: Any) -> frozenset[str]:
    """Inputs the sequence batcher fills in itself (controls and implicit state inputs):
    a client must not send them and need not list them."""
    if not _is_sequence_model(config):
        return frozenset()
    sb = config.sequence_batching
    names = {ci.name for ci in sb.control_input}
    names.update(s.input_name for s in sb.state)
    return frozenset(names)


class _Flag:
    """One boolean control input (START, END or READY) with its two tensors."""

    __slots__ = ("kind", "name", "false", "true")

    def __init__(self, kind: int, name: str, datatype: str, values: Sequence[Any], batching: bool) -> None:
        self.kind = kind
        self.name = name
        shape = (1, 1) if batching else (1,)
        dtype = WIRE_TO_NUMPY[datatype]
        self.false = Tensor(name, datatype, shape, array=np.full(shape, values[0], dtype=dtype))
        self.true = Tensor(name, datatype, shape, array=np.full(shape, values[1], dtype=dtype))


class _State:
    __slots__ = ("input_name", "output_name", "datatype", "initial")

    def __init__(self, input_name: str, output_name: str, datatype: str, initial: Tensor) -> None:
        self.input_name = input_name
        self.output_name = output_name
        self.datatype = datatype
        self.initial = initial


class SequenceSettings:
    """What the batcher needs from `sequence_batching`, checked once at load."""

    def __init__(self, config: Any, model_dir: Path | None = None) -> None:
        sb = config.sequence_batching
        model = config.name
        self.model = model
        self.batching = config.max_batch_size > 0
        self.max_batch_size = max(1, int(config.max_batch_size))
        self.iterative = bool(sb.iterative_sequence)
        self.decoupled = bool(config.model_transaction_policy.decoupled)
        self.oldest = sb.HasField("oldest")
        self.idle_ns = int(sb.max_sequence_idle_microseconds or 1_000_000) * 1000
        if self.oldest:
            o = sb.oldest
            self.slots_per_instance = int(o.max_candidate_sequences) or self.max_batch_size
            self.delay_ns = int(o.max_queue_delay_microseconds) * 1000
            self.min_utilization = 0.0
        else:
            d = sb.direct
            self.slots_per_instance = self.max_batch_size
            self.delay_ns = int(d.max_queue_delay_microseconds) * 1000
            self.min_utilization = float(d.minimum_slot_utilization)
        self.flags: list[_Flag] = []
        self.corrid: tuple[str, str] | None = None  # (name, wire datatype)
        seen: set[int] = set()
        for ci in sb.control_input:
            if not ci.name:
                raise InferenceError.invalid(f"sequence batching control input of model '{model}' has no name")
            if len(ci.control) != 1:
                raise InferenceError.invalid(
                    f"sequence batching control input '{ci.name}' of model '{model}' must have exactly one control")
            c = ci.control[0]
            kind = int(c.kind)
            if kind in seen:
                raise InferenceError.invalid(
                    f"sequence batching for model '{model}' specifies {_KIND_NAMES.get(kind, kind)} more than once")
            seen.add(kind)
            if kind == CORRID:
                datatype = _wire(c.data_type)
                if datatype not in _CORRID_TYPES:
                    raise InferenceError.invalid(
                        f"unexpected control data type, expected TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32, "
                        f"or TYPE_STRING for CONTROL_SEQUENCE_CORRID for {model}")
                self.corrid = (ci.name, datatype)
                continue
            given = [(n, v) for n, v in (("INT32", list(c.int32_false_true)), ("FP32", list(c.fp32_false_true)),
                                         ("BOOL", list(c.bool_false_true))) if v]
            if len(given) != 1 or len(given[0][1]) != 2:
                raise InferenceError.invalid(
                    f"sequence batching control '{_KIND_NAMES.get(kind, kind)}' of input '{ci.name}' for model "
                    f"'{model}' must give exactly two false/true values in one of int32_false_true, "
                    f"fp32_false_true or bool_false_true")
            self.flags.append(_Flag(kind, ci.name, given[0][0], given[0][1], self.batching))
        self.states: list[_State] = []
        for st in sb.state:
            self.states.append(self._state(st, model_dir))
        self.state_outputs = {s.output_name: s for s in self.states}

    def _state(self, st: Any, model_dir: Path | None) -> _State:
        model = self.model
        if not st.input_name or not st.output_name:
            raise InferenceError.invalid(f"a state of model '{model}' needs input_name and output_name")
        datatype = _wire(st.data_type)
        if not datatype:
            raise InferenceError.invalid(f"state '{st.input_name}' of model '{model}' has no data_type")
        if len(st.initial_state) > 1:
            raise InferenceError.invalid(
                f"initial_state field for state input '{st.input_name}' must contain exactly one or zero element. "
                f"Found '{len(st.initial_state)}' elements.")
        lead = (1,) if self.batching else ()
        dtype = WIRE_TO_NUMPY[datatype]
        if not st.initial_state:
            shape = lead + tuple(1 if d == -1 else int(d) for d in st.dims)
            arr = np.full(shape, b"", dtype=object) if datatype == "BYTES" else np.zeros(shape, dtype=dtype)
            return _State(st.input_name, st.output_name, datatype, Tensor(st.input_name, datatype, shape, array=arr))
        init = st.initial_state[0]
        if init.data_type != st.data_type:
            raise InferenceError.invalid(
                f"The data type used for 'initial_state' field of state '{st.input_name}' does not match the "
                f"state data type.")
        if not init.name:
            raise InferenceError.invalid(
                f"Field 'name' must be set when using initial_state for state input '{st.input_name}'.")
        if len(init.dims) != len(st.dims):
            raise InferenceError.invalid(
                f"Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state "
                f"input '{st.input_name}'. {len(init.dims)} != {len(st.dims)}")
        for di, ds in zip(init.dims, st.dims):
            if di == -1:
                raise InferenceError.invalid(
                    f"'initial_state' field for state input name '{st.input_name}' contains variable dimensions.")
            if ds != -1 and di != ds:
                raise InferenceError.invalid(
                    f"'initial_state' dim for input name '{st.input_name}' doesn't match 'state' dim description. "
                    f"{di} != {ds}")
        shape = lead + tuple(int(d) for d in init.dims)
        count = int(np.prod(shape)) if shape else 1
        if init.WhichOneof("state_data") == "data_file":
            path = (model_dir / "initial_state" / init.data_file) if model_dir else Path(init.data_file)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InferenceError.invalid(
                    f"failed to read initial_state data file '{init.data_file}' of model '{model}': {exc.strerror}")
            if datatype == "BYTES":
                arr = np.array([data] * count, dtype=object).reshape(shape)
            else:
                need = count * dtype.itemsize
                if len(data) < need:
                    raise InferenceError.invalid(
                        f"initial_state setting expects {need} bytes, but the data provided from "
                        f"{init.data_file} only has {len(data)} bytes.")
                arr = np.frombuffer(data[:need], dtype=dtype).reshape(shape)
        elif init.WhichOneof("state_data") == "zero_data":
            arr = np.full(shape, b"", dtype=object) if datatype == "BYTES" else np.zeros(shape, dtype=dtype)
        else:
            raise InferenceError.invalid(
                f"initial_state setting expects state'{st.input_name}' to have state_data set")
        return _State(st.input_name, st.output_name, datatype, Tensor(st.input_name, datatype, shape, array=arr))

    def initial_states(self) -> dict[str, Tensor]:
        return {s.input_name: s.initial for s in self.states}

    def corrid_tensor(self, corrid: int | str) -> Tensor:
        name, datatype = self.corrid  # type: ignore[misc]
        shape = (1, 1) if self.batching else (1,)
        if datatype == "BYTES":
            value = corrid if isinstance(corrid, str) else (str(corrid) if corrid else "")
            return Tensor(name, datatype, shape, array=np.full(shape, value.encode(), dtype=object))
        try:
            value = int(corrid)
        except (TypeError, ValueError):
            value = 0
        return Tensor(name, datatype, shape, array=np.full(shape, value, dtype=WIRE_TO_NUMPY[datatype]))

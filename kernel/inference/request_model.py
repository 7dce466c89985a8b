"""One request model: the rules for the values every protocol decodes into a request.

Each front end reads the same things off its wire — the request parameters (sequence id
and flags, priority, timeout, reserved `triton_` keys, everything else passed through to
the model), shared-memory references, and the requested outputs with classification —
and applies the same rules to them; only the wire types and the words differ (Triton's
`http_server.cc` reads JSON, `grpc/infer_handler.cc` reads `InferParameter`s). The rules
live here once. A protocol passes a `Wire`: how it reads one of its values as each kind
of value, and the error, in its own words, when it cannot. Every protocol, transport
and fast path builds its `InferenceRequest` with `build_request`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .errors import InferenceError
from .types import InferenceRequest, ParameterValue, RequestedOutput, SharedMemoryRef, Tensor

SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_BYTE_SIZE = "shared_memory_byte_size"
CLASSIFICATION = "classification"
RESERVED_PREFIX = "triton_"


class Wire:
    """One protocol's accessors and wording. Each method reads one wire value as a kind
    of value (or words one error); the order and meaning of the checks are the rules
    below, not the wire's."""

    #: Parameter keys that are options of the protocol itself, taken out of the request's
    #: parameters (HTTP's `binary_data_output`, gRPC's `triton_enable_empty_final_response`).
    options: frozenset[str] = frozenset()

    # ---- request parameters
    def sequence_id(self, value: Any) -> int | str:
        raise NotImplementedError

    def flag(self, key: str, value: Any) -> bool:
        """`sequence_start` / `sequence_end`."""
        raise NotImplementedError

    def priority(self, value: Any) -> int:
        raise NotImplementedError

    def timeout(self, value: Any) -> int:
        raise NotImplementedError

    def option(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def reserved(self, key: str) -> InferenceError:
        """The error for a `triton_` key that is not one of `options`."""
        raise NotImplementedError

    def passthrough(self, key: str, value: Any) -> ParameterValue:
        raise NotImplementedError

    # ---- shared-memory references
    def shm_region(self, value: Any, tensor: str) -> str:
        raise NotImplementedError

    def shm_uint(self, key: str, value: Any, tensor: str) -> int:
        """`shared_memory_offset` / `shared_memory_byte_size`."""
        raise NotImplementedError

    def shm_without_region(self, key: str, tensor: str) -> InferenceError | None:
        """The error for an offset or size without a region (None: ignored)."""
        raise NotImplementedError

    def shm_default_size(self, tensor: str) -> int:
        """The byte size of a reference that names none (or raise)."""
        raise NotImplementedError

    # ---- requested outputs
    def classification(self, value: Any) -> int:
        raise NotImplementedError

    def shm_and_classification(self) -> InferenceError:
        raise NotImplementedError

    def binary(self, params: Mapping[str, Any]) -> bool | None:
        """How the output's data is returned (None: the protocol's only way)."""
        return None


class RequestValues:
    """The request-level values read from the parameters."""

    __slots__ = ("parameters", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout_us",
                 "options")

    def __init__(self) -> None:
        self.parameters: dict[str, ParameterValue] = {}
        self.sequence_id: int | str = 0
        self.sequence_start = False
        self.sequence_end = False
        self.priority = 0
        self.timeout_us = 0
        self.options: dict[str, Any] = {}


#: The values of a request without parameters (most requests): shared, never changed.
NO_VALUES = RequestValues()


def read_parameters(params: Mapping[str, Any] | None, wire: Wire) -> RequestValues:
    """The request parameters, in the order the client sent them (the first bad one is
    the error): the scheduling values, the protocol's options, reserved `triton_` keys
    refused, the rest passed through to the model."""
    if not params:
        return NO_VALUES
    values = RequestValues()
    options = wire.options
    for key, value in params.items():
        if key == "sequence_id":
            values.sequence_id = wire.sequence_id(value)
        elif key == "sequence_start":
            values.sequence_start = wire.flag(key, value)
        elif key == "sequence_end":
            values.sequence_end = wire.flag(key, value)
        elif key == "priority":
            values.priority = wire.priority(value)
        elif key == "timeout":
            values.timeout_us = wire.timeout(value)
        elif key in options:
            values.options[key] = wire.option(key, value)
        elif key.startswith(RESERVED_PREFIX):
            raise wire.reserved(key)
        else:
            values.parameters[key] = wire.passthrough(key, value)
    return values


def shared_memory_ref(params: Mapping[str, Any], wire: Wire, tensor: str) -> SharedMemoryRef | None:
    """A tensor's shared-memory reference (Triton's `ParseSharedMemoryParams`): a region,
    an offset (0) and a byte size; without a region there is none."""
    if SHM_REGION not in params:
        for key in (SHM_OFFSET, SHM_BYTE_SIZE):
            if key in params:
                error = wire.shm_without_region(key, tensor)
                if error is not None:
                    raise error
        return None
    region = wire.shm_region(params[SHM_REGION], tensor)
    offset = wire.shm_uint(SHM_OFFSET, params[SHM_OFFSET], tensor) if SHM_OFFSET in params else 0
    if SHM_BYTE_SIZE in params:
        size = wire.shm_uint(SHM_BYTE_SIZE, params[SHM_BYTE_SIZE], tensor)
    else:
        size = wire.shm_default_size(tensor)
    return SharedMemoryRef(region, size, offset)


def requested_output(name: str, params: Mapping[str, Any] | None, wire: Wire) -> RequestedOutput:
    """One requested output: its shared-memory reference, its classification count (a
    classification is computed, so it cannot be written to shared memory), and how it
    is returned."""
    if not params:
        return RequestedOutput(name, wire.binary(params or {}))
    shm = None
    if SHM_REGION in params or SHM_OFFSET in params or SHM_BYTE_SIZE in params:  # rare: spares a call
        shm = shared_memory_ref(params, wire, name)
    classification = 0
    if CLASSIFICATION in params:
        classification = wire.classification(params[CLASSIFICATION])
        if shm is not None:
            raise wire.shm_and_classification()
    return RequestedOutput(name, wire.binary(params), classification, shm)


def build_request(
    model_name: str,
    inputs: list[Tensor],
    values: RequestValues | None = None,
    *,
    model_version: str = "",
    id: str = "",
    outputs: list[RequestedOutput] | None = None,
    forwarded: Iterable[tuple[str, str]] = (),
    protocol: str,
) -> InferenceRequest:
    """The request every front end hands to the bus. Forwarded headers become string
    parameters, after (and over) the client's own."""
    if values is None or values is NO_VALUES:
        parameters = dict(forwarded) if forwarded else None
        return InferenceRequest(model_name, inputs, model_version=model_version, id=id, outputs=outputs,
                                parameters=parameters, protocol=protocol)
    parameters = values.parameters
    if forwarded:
        parameters.update(forwarded)
    return InferenceRequest(
        model_name,
        inputs,
        model_version=model_version,
        id=id,
        outputs=outputs,
        parameters=parameters,
        priority=values.priority,
        timeout_us=values.timeout_us,
        sequence_id=values.sequence_id,
        sequence_start=values.sequence_start,
        sequence_end=values.sequence_end,
        protocol=protocol,
    )

"""`triton_python_backend_utils` for naiad: the one module a user's model.py imports.

The stub installs this module as `sys.modules["triton_python_backend_utils"]` (and as
`c_python_backend_utils`) before it imports the model, so `import
triton_python_backend_utils as pb_utils` works unchanged. The API follows Triton 24.04's
(python_backend `src/resources/triton_python_backend_utils.py` plus the classes its stub
adds from C++), re-implemented in Python.

Everything that needs the parent (BLS, model control, logging, cancellation, response
senders, custom metrics) goes through the stub runtime bound with `_bind`; outside a stub
those calls raise `TritonModelException`. Custom metrics (`MetricFamily`) live in the
server, which shows them on /metrics; the stub holds handles.

One job a module: `dtypes` (datatypes, BYTES serialization), `errors`, `tensor`,
`requests` (requests, responses, senders, BLS), `log`, `metrics`, `control` (model
control), `config` (ModelConfig and config lookups), `runtime` (the bound stub). This
package is the one namespace a model sees: every name is re-exported here.
"""

from __future__ import annotations

# Modules Triton's triton_python_backend_utils.py also exposes (a model may rely on
# `from triton_python_backend_utils import *` giving it `np`, `json`, `struct`).
import enum  # noqa: F401
import json  # noqa: F401
import struct  # noqa: F401
import sys  # noqa: F401
import threading  # noqa: F401
import weakref  # noqa: F401
from typing import Any  # noqa: F401

import numpy as np  # noqa: F401

from .config import (
    ModelConfig,
    get_input_config_by_name,
    get_output_config_by_name,
    using_decoupled_model_transaction_policy,
)
from .control import get_model_dir, is_model_ready, load_model, unload_model
from .dtypes import (
    CODE_TO_WIRE,
    TRITON_STRING_TO_NUMPY,
    TYPE_BF16,
    TYPE_BYTES,
    WIRE_TO_CODE,
    deserialize_bytes_tensor,
    numpy_to_triton_type,
    serialize_byte_tensor,
    triton_string_to_numpy,
    triton_to_numpy_type,
)
from .errors import TritonError, TritonModelException
from .log import Logger
from .metrics import Metric, MetricFamily, MetricKind
from .requests import (
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_END,
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
    TRITONSERVER_REQUEST_RELEASE_ALL,
    TRITONSERVER_REQUEST_RELEASE_RESCHEDULE,
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    InferenceRequest,
    InferenceResponse,
    InferenceResponseSender,
    InferenceTrace,
    ResponseIterator,
    _RequestState,  # noqa: F401 (the stub's)
    get_input_tensor_by_name,
    get_output_tensor_by_name,
)
from .runtime import bind as _bind  # noqa: F401 (the stub binds itself)
from .tensor import TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_GPU, MemoryType, PreferredMemory, Tensor

__all__ = [
    "Any", "CODE_TO_WIRE", "InferenceRequest", "InferenceResponse", "InferenceResponseSender", "InferenceTrace",
    "Logger", "MemoryType", "Metric", "MetricFamily", "MetricKind", "ModelConfig", "PreferredMemory",
    "ResponseIterator", "TRITONSERVER_MEMORY_CPU", "TRITONSERVER_MEMORY_GPU", "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START", "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE", "TRITONSERVER_RESPONSE_COMPLETE_FINAL", "TRITON_STRING_TO_NUMPY",
    "TYPE_BF16", "TYPE_BYTES", "Tensor", "TritonError", "TritonModelException", "WIRE_TO_CODE", "annotations",
    "deserialize_bytes_tensor", "enum", "get_input_config_by_name", "get_input_tensor_by_name", "get_model_dir",
    "get_output_config_by_name", "get_output_tensor_by_name", "is_model_ready", "json", "load_model", "np",
    "numpy_to_triton_type", "serialize_byte_tensor", "struct", "sys", "threading", "triton_string_to_numpy",
    "triton_to_numpy_type", "unload_model", "using_decoupled_model_transaction_policy", "weakref",
]


def _own_module(obj: Any) -> None:
    """Names show as `pb_utils.X` (reprs, tracebacks, pickles), as when this was one module."""
    obj.__module__ = __name__
    for inner in vars(obj).values() if isinstance(obj, type) else ():
        if isinstance(inner, type) and inner.__module__.startswith(__name__ + "."):
            _own_module(inner)


for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "."):
        _own_module(_obj)
del _name, _obj

"""Python-backend model repositories for the gRPC tests, written into a temporary folder,
and a tritonclient shared-memory import that works without pkg_resources."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import types
import warnings
from pathlib import Path
from support.models import ADD_SUB_MODEL as ADD_SUB, IDENTITY_MODEL as IDENTITY_FP32

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]
CONFIG_TYPE = {dt: f"TYPE_{dt}" for dt in NUMERIC} | {"BYTES": "TYPE_STRING"}

IDENTITY_ALL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = [pb_utils.Tensor("OUT_" + t.name()[3:], t.as_numpy()) for t in request.inputs()]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
'''

ECHO_PARAMS = '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            info = {"parameters": json.loads(request.parameters()), "id": request.request_id(),
                    "correlation_id": request.correlation_id(), "flags": request.flags()}
            out = pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], dtype=object))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
'''

# Decoupled: one response per element of IN, DELAY_MS apart, from a thread per request (so
# several requests of one stream are answered at once), then the final flag alone. A
# cancelled request stops early and leaves a marker file "cancelled-<request id>".
REPEAT = '''
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.dir = args["model_repository"]

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._respond, args=(request,), daemon=True).start()
        return None

    def _respond(self, request):
        sender = request.get_response_sender()
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
        delay_s = float(delay.as_numpy()[0]) / 1000 if delay is not None else 0.0
        for idx, value in enumerate(values):
            if sender.is_cancelled():
                open(os.path.join(self.dir, "cancelled-" + request.request_id()), "w").close()
                break
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([value], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([idx], dtype=np.uint32))]))
            if delay_s:
                time.sleep(delay_s)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

# Not decoupled: waits up to SECONDS (in 10 ms steps) unless cancelled; a cancelled request
# leaves "cancelled-<request id>" and answers with a CANCELLED error.
SLOW = '''
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.dir = args["model_repository"]

    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = float(pb_utils.get_input_tensor_by_name(request, "SECONDS").as_numpy()[0])
            deadline = time.monotonic() + seconds
            cancelled = False
            while time.monotonic() < deadline:
                if request.is_cancelled():
                    cancelled = True
                    break
                time.sleep(0.01)
            if cancelled:
                open(os.path.join(self.dir, "cancelled-" + request.request_id()), "w").close()
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)))
            else:
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("DONE", pb_utils.get_input_tensor_by_name(request, "SECONDS").as_numpy())]))
        return responses
'''


def _write(repo: Path, name: str, config: str, code: str) -> None:
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config).strip() + "\n")
    (repo / name / "1" / "model.py").write_text(code.lstrip())


def identity_all(repo: Path) -> None:
    ios_in = ",\n".join(f'{{ name: "IN_{dt}" data_type: {CONFIG_TYPE[dt]} dims: [ -1 ] optional: true }}'
                        for dt in CONFIG_TYPE)
    ios_out = ",\n".join(f'{{ name: "OUT_{dt}" data_type: {CONFIG_TYPE[dt]} dims: [ -1 ] }}' for dt in CONFIG_TYPE)
    _write(repo, "identity_all", f'backend: "python"\nmax_batch_size: 0\ninput [\n{ios_in}\n]\n'
                                 f'output [\n{ios_out}\n]\n', IDENTITY_ALL)


def echo_params(repo: Path) -> None:
    _write(repo, "echo_params", '''
        backend: "python"
        max_batch_size: 0
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
        output [ { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] } ]
        ''', ECHO_PARAMS)


def add_sub(repo: Path, name: str = "add_sub") -> None:
    _write(repo, name, '''
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
                 { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        ''', ADD_SUB)


def identity_fp32(repo: Path) -> None:
    """The perf_analyzer workload of ANCHORS.md: FP32 1x1024, batching, dynamic batcher."""
    _write(repo, "identity_fp32", '''
        backend: "python"
        max_batch_size: 64
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
        dynamic_batching { }
        instance_group [ { count: 1 kind: KIND_CPU } ]
        ''', IDENTITY_FP32)


def repeat(repo: Path) -> None:
    _write(repo, "repeat", '''
        backend: "python"
        max_batch_size: 0
        model_transaction_policy { decoupled: true }
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
                { name: "DELAY_MS" data_type: TYPE_UINT32 dims: [ 1 ] optional: true } ]
        output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]
        ''', REPEAT)


def slow(repo: Path) -> None:
    _write(repo, "slow", '''
        backend: "python"
        max_batch_size: 0
        input [ { name: "SECONDS" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "DONE" data_type: TYPE_FP32 dims: [ 1 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        ''', SLOW)


def shared_memory_module() -> types.ModuleType:
    """`tritonclient.utils.shared_memory`, which imports pkg_resources only to find its
    libcshm.so; setuptools >= 81 no longer ships pkg_resources, so stand in for it."""
    try:
        with warnings.catch_warnings():  # older setuptools: "pkg_resources is deprecated"
            warnings.simplefilter("ignore", UserWarning)
            import tritonclient.utils.shared_memory as shm
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.submodule_search_locations
            return str(Path(list(spec.submodule_search_locations)[0]) / resource)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
        try:
            import tritonclient.utils.shared_memory as shm
        finally:
            del sys.modules["pkg_resources"]
    return shm

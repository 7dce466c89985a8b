"""Python-backend model repositories for the gRPC and native-transport tests, written into
a temporary folder (the shared model sources are in `protocol_models`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from support.models import ADD_SUB_MODEL as ADD_SUB, IDENTITY_MODEL as IDENTITY_FP32, write_model
from support.protocol_models import DATATYPES, IDENTITY_ALL, REPEAT, REPEAT_CONFIG, identity_all_config

# The datatypes numpy holds (the tests send each as an array).
CONFIG_TYPE = {dt: c for dt, c in DATATYPES.items() if dt != "BF16"}

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
    write_model(repo, name, textwrap.dedent(config).strip() + "\n", code.lstrip())


def identity_all(repo: Path) -> None:
    _write(repo, "identity_all", 'backend: "python"\n' + identity_all_config(), IDENTITY_ALL)


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
    _write(repo, "repeat", 'backend: "python"\n' + REPEAT_CONFIG, REPEAT)


def slow(repo: Path) -> None:
    _write(repo, "slow", '''
        backend: "python"
        max_batch_size: 0
        input [ { name: "SECONDS" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "DONE" data_type: TYPE_FP32 dims: [ 1 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        ''', SLOW)

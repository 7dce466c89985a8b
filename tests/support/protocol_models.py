"""Python-backend models that the protocol tests (HTTP, gRPC, the native transports) share:
their `model.py` sources and config bodies (without `name`/`backend`)."""

from __future__ import annotations

# Wire datatype -> config enum, every datatype Triton has.
DATATYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16",
}

# One optional input IN_<dt> and one output OUT_<dt> per datatype; each output is its input.
IDENTITY_ALL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outs = []
            for t in request.inputs():
                name = "OUT_" + t.name()[3:]
                outs.append(pb_utils.Tensor(name, t.as_numpy(), t.triton_dtype()))
            responses.append(pb_utils.InferenceResponse(outs))
        return responses
'''


def identity_all_config() -> str:
    ins = ",\n".join(f'  {{ name: "IN_{w}" data_type: {c} dims: [ -1 ] optional: true }}' for w, c in DATATYPES.items())
    outs = ",\n".join(f'  {{ name: "OUT_{w}" data_type: {c} dims: [ -1 ] }}' for w, c in DATATYPES.items())
    return f"max_batch_size: 0\ninput [\n{ins}\n]\noutput [\n{outs}\n]\n"


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
        self.threads = []

    def execute(self, requests):
        for request in requests:
            t = threading.Thread(target=self._respond, args=(request,), daemon=True)
            t.start()
            self.threads.append(t)
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

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
'''

REPEAT_CONFIG = (
    "max_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n"
    'input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },'
    ' { name: "DELAY_MS" data_type: TYPE_UINT32 dims: [ 1 ] optional: true } ]\n'
    'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },'
    ' { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]\n')

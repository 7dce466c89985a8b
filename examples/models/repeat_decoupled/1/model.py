"""Decoupled: sends one response per element of IN (optionally DELAY_MS apart), then the
final flag — responses stream through the response sender, as Triton's repeat example."""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            thread = threading.Thread(target=self._respond, args=(request,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return None

    def _respond(self, request):
        sender = request.get_response_sender()
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
        delay_s = float(delay.as_numpy()[0]) / 1000 if delay is not None else 0.0
        for idx, value in enumerate(values):
            if sender.is_cancelled():
                break
            out = pb_utils.Tensor("OUT", np.array([value], dtype=np.int32))
            index = pb_utils.Tensor("IDX", np.array([idx], dtype=np.uint32))
            sender.send(pb_utils.InferenceResponse([out, index]))
            if delay_s:
                time.sleep(delay_s)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(timeout=5)

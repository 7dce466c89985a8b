"""Decoupled text generator: continues the prompt with `max_tokens` words (default 16)
picked deterministically from a small vocabulary, seeded by the prompt. With `stream`
true each word is its own response (" word"); otherwise one response holds the text."""

import threading
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

VOCAB = ("the river carries light across stone and every quiet morning opens a door "
         "to small bright fields where wind remembers old songs").split()


def words(prompt: bytes, count: int):
    state = zlib.crc32(prompt)
    for _ in range(count):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        yield VOCAB[state % len(VOCAB)]


def _scalar(request, name, default):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            thread = threading.Thread(target=self._respond, args=(request,), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.threads = [t for t in self.threads if t.is_alive()]
        return None

    def _respond(self, request):
        sender = request.get_response_sender()
        prompt = _scalar(request, "text_input", b"")
        count = max(0, int(_scalar(request, "max_tokens", 16)))
        stream = bool(_scalar(request, "stream", False))
        out = []
        for word in words(bytes(prompt), count):
            if sender.is_cancelled():
                break
            if stream:
                text = pb_utils.Tensor("text_output", np.array([(" " + word).encode()], dtype=object))
                sender.send(pb_utils.InferenceResponse([text]))
            else:
                out.append(word)
        if not stream:
            text = pb_utils.Tensor("text_output", np.array([(" " + " ".join(out)).encode()], dtype=object))
            sender.send(pb_utils.InferenceResponse([text]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(timeout=5)

"""A character-level bigram generator that streams its text one character at a time.

The bigram table is random but fixed: `np.random.default_rng(SEED)` draws a score for
every (previous, next) character pair (softmax of scaled normals, so a few successors
dominate each row). Generation samples from the row of the previous character with a
generator seeded by the prompt, so the same prompt always gives the same text. It is a
stand-in for a real language model: the point is the serving pattern, not the prose.

Inputs: PROMPT (one string; its last character seeds generation), MAX_TOKENS (how many
characters). Output: TOKEN, one character per response, then a final flag.
"""

import json
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

SEED = 20240425
VOCAB = "abcdefghijklmnopqrstuvwxyz ."


def bigram_table(seed=SEED):
    """Row i: probabilities of the character that follows VOCAB[i]."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((len(VOCAB), len(VOCAB))) * 2.5
    probs = np.exp(scores)
    return probs / probs.sum(axis=1, keepdims=True)


def generate(prompt, count, table):
    """The whole text for a prompt (what the streamed tokens add up to)."""
    rng = np.random.default_rng(zlib.crc32(prompt.encode()))
    prev = VOCAB.index(prompt[-1]) if prompt and prompt[-1] in VOCAB else VOCAB.index(" ")
    out = []
    for _ in range(count):
        prev = int(rng.choice(len(VOCAB), p=table[prev]))
        out.append(VOCAB[prev])
    return "".join(out)


class _Sequence:
    """One generation in progress (reschedule mode keeps these between executions)."""

    def __init__(self, prompt, remaining):
        self.rng = np.random.default_rng(zlib.crc32(prompt.encode()))
        last = prompt[-1] if prompt else " "
        self.prev = VOCAB.index(last) if last in VOCAB else VOCAB.index(" ")
        self.remaining = remaining

    def step(self, table):
        self.prev = int(self.rng.choice(len(VOCAB), p=table[self.prev]))
        self.remaining -= 1
        return VOCAB[self.prev]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("bigram_generator must be decoupled")
        param = config.get("parameters", {}).get("reschedule", {}).get("string_value", "false")
        self.reschedule = param.lower() in ("1", "true", "yes", "on")
        self.table = bigram_table()
        self.sequences = {}  # correlation id -> _Sequence (reschedule mode)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            ready = pb_utils.get_input_tensor_by_name(request, "READY").as_numpy().reshape(-1)[0]
            if not ready:  # an idle slot's stand-in: nothing to generate
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            if self.reschedule:
                self._step(request, sender)
            else:
                self._generate_all(request, sender)
        return None

    @staticmethod
    def _inputs(request):
        prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1)[0]
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8", "replace")
        count = int(pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS").as_numpy().reshape(-1)[0])
        return prompt.lower(), max(0, count)

    def _send(self, sender, char):
        token = pb_utils.Tensor("TOKEN", np.array([[char.encode()]], dtype=object))
        sender.send(pb_utils.InferenceResponse([token]))

    def _generate_all(self, request, sender):
        prompt, count = self._inputs(request)
        seq = _Sequence(prompt, count)
        while seq.remaining > 0:
            if request.is_cancelled():
                sender.send(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("generation cancelled", pb_utils.TritonError.CANCELLED)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            self._send(sender, seq.step(self.table))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _step(self, request, sender):
        cid = request.correlation_id()
        start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy().reshape(-1)[0]
        if start or cid not in self.sequences:
            prompt, count = self._inputs(request)
            self.sequences[cid] = _Sequence(prompt, count)
        seq = self.sequences[cid]
        if seq.remaining > 0 and not request.is_cancelled():
            self._send(sender, seq.step(self.table))
        if seq.remaining > 0 and not request.is_cancelled():
            # Run again in the next batch, beside whatever sequences are live then.
            request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
        else:
            del self.sequences[cid]
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

"""OpenAI request bodies -> naiad inference requests, and responses back.

As Triton's OpenAI frontend: the prompt goes in the `text_input` BYTES tensor, `max_tokens`
(INT32) and `stream` (BOOL) go as inputs when the model declares them, other sampling
settings (temperature, top_p, seed, stop, ...) go as request parameters; text comes back
in `text_output`. Embedding models return their first FP32 output.

Token counts in `usage` are whitespace-separated words (naiad ships no tokenizer and
downloads none): prompt_tokens counts the prompt (the rendered chat prompt for chat),
completion_tokens counts the generated text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from naiad.kernel.inference.messages import ModelMetadata
from naiad.kernel.inference.types import InferenceRequest, InferenceResponse, Tensor

TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
# Sampling settings passed through as request parameters (scalars only).
SAMPLING = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty",
            "n", "ignore_eos", "min_tokens", "logprobs")
# Documented default chat template: one "role: content" line per message, then the cue.
DEFAULT_CHAT_TEMPLATE = "{messages}assistant:"
MESSAGE_LINE = "{role}: {content}\n"


class BadRequest(ValueError):
    """A body OpenAI would answer with 400 (`param` names the field)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def count_tokens(text: str) -> int:
    return len(text.split())


def chat_prompt(messages: Any, template: str | None) -> str:
    """Render chat messages with the model's `chat_template` parameter (a Python format
    string with `{messages}`) or the default."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    lines = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest("each message needs a 'role' and 'content'", "messages")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(MESSAGE_LINE.format(role=m["role"], content=content))
    return (template or DEFAULT_CHAT_TEMPLATE).replace("{messages}", "".join(lines))


def build_request(model: str, meta: ModelMetadata, prompt: str, body: dict, max_tokens: int,
                  stream: bool) -> InferenceRequest:
    inputs = {t.name: t for t in meta.inputs}
    if TEXT_INPUT not in inputs:
        raise BadRequest(f"model '{model}' has no '{TEXT_INPUT}' input", "model")
    tensors = [Tensor.from_numpy(TEXT_INPUT, np.array([prompt.encode()], dtype=object).reshape(
        _shape(inputs[TEXT_INPUT].shape)), "BYTES")]
    if "max_tokens" in inputs:
        tensors.append(Tensor.from_numpy("max_tokens", np.full(_shape(inputs["max_tokens"].shape), max_tokens,
                                                               dtype=np.int32)))
    if "stream" in inputs:
        tensors.append(Tensor.from_numpy("stream", np.full(_shape(inputs["stream"].shape), stream, dtype=bool)))
    params: dict[str, Any] = {}
    for key in SAMPLING:
        value = body.get(key)
        if isinstance(value, (bool, int, float, str)):
            params[key] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        params["stop"] = stop
    elif isinstance(stop, list):
        params["stop"] = ",".join(str(s) for s in stop)
    return InferenceRequest(model, tensors, parameters=params, protocol="openai")


def _shape(dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d == -1 else d for d in dims) or (1,)


def response_text(response: InferenceResponse) -> str:
    if response.error is not None:
        raise response.error
    t = response.output(TEXT_OUTPUT)
    if t is None:
        return ""
    return "".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                   for v in t.array.reshape(-1))


def embedding(response: InferenceResponse) -> list[float]:
    if response.error is not None:
        raise response.error
    for t in response.outputs:
        if t.datatype in ("FP32", "FP16", "FP64"):
            return [float(x) for x in t.array.reshape(-1)]
    raise BadRequest(f"model '{response.model_name}' returned no floating-point output", "model")

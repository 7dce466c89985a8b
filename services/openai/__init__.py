"""OpenAI-compatible service: /v1/models, /v1/completions, /v1/chat/completions (SSE when
`stream: true`) and /v1/embeddings on a port of its own, mapped onto repository models as
Triton's OpenAI frontend maps them (`text_input` -> `text_output`)."""

from .service import OpenAIService

__all__ = ["OpenAIService"]

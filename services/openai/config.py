"""`[services.openai]` settings. The service is off unless `enabled = true` (or `--allow-openai`)."""

from __future__ import annotations

from dataclasses import dataclass

from naiad.kernel.schema import setting


@dataclass
class OpenAIConfig:
    address: str = setting("0.0.0.0", "address the OpenAI-compatible endpoint binds", triton="--openai-address")
    port: int = setting(9000, "port of the OpenAI-compatible endpoint (Triton's openai frontend uses 9000)",
                        triton="--openai-port",
                        minimum=0, maximum=65535)
    api_key: str = setting("", "when set, requests need `Authorization: Bearer <key>` (401 otherwise)",
                         triton="--openai-api-key")
    max_body_bytes: int = setting(16 * 1024 * 1024, "largest request body accepted (413 above)", minimum=1)
    default_max_tokens: int = setting(16, "max_tokens when a request gives none (OpenAI's default)", minimum=1)

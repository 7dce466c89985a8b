"""The OpenAI-compatible service through the real `openai` client against a real naiad:
models list, completions and chat completions (unary and streamed), embeddings, usage
counts, OpenAI's error JSON and codes (404 model, 401 key, 413 body, 400 body)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from support.models import write_model
from support.naiad_process import free_port

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "models"
KEY = "sk-test-naiad"

EMBED_CONFIG = '''
name: "tiny_embed"
backend: "python"
max_batch_size: 0
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "embedding" data_type: TYPE_FP32 dims: [ 4 ] } ]
'''
# Embedding: length, word count, vowel count, and a constant 1 — checkable by hand.
EMBED_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "text_input").as_numpy().reshape(-1)[0].decode()
            vec = np.array([len(text), len(text.split()), sum(c in "aeiou" for c in text), 1], dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("embedding", vec)]))
        return out
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support.naiad_process import NaiadProcess

    tmp = tmp_path_factory.mktemp("openai")
    repo = tmp / "models"
    shutil.copytree(EXAMPLES / "tiny_generator", repo / "tiny_generator")
    write_model(repo, "tiny_embed", EMBED_CONFIG, EMBED_MODEL)
    port = free_port()
    config = (f'[services.openai]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\n'
              f'api_key = "{KEY}"\nmax_body_bytes = 4096\n')
    proc = NaiadProcess(tmp / "run", ["--model-repository", str(repo)], config=config)
    proc.start()
    proc.openai_url = f"http://127.0.0.1:{port}/v1"
    yield proc
    proc.kill_if_running()


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.openai_url, api_key=KEY, max_retries=0, timeout=30)
    yield c
    c.close()


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert ids == {"tiny_generator", "tiny_embed"}


def test_completion_is_deterministic_and_counts_usage(client):
    a = client.completions.create(model="tiny_generator", prompt="once upon a time", max_tokens=7)
    b = client.completions.create(model="tiny_generator", prompt="once upon a time", max_tokens=7)
    text = a.choices[0].text
    assert len(text.split()) == 7 and text == b.choices[0].text
    assert a.object == "text_completion" and a.choices[0].finish_reason == "stop"
    assert (a.usage.prompt_tokens, a.usage.completion_tokens, a.usage.total_tokens) == (4, 7, 11)
    other = client.completions.create(model="tiny_generator", prompt="something else", max_tokens=7)
    assert other.choices[0].text != text


def test_completion_stream_matches_unary(client):
    unary = client.completions.create(model="tiny_generator", prompt="stream me", max_tokens=9).choices[0].text
    chunks = list(client.completions.create(model="tiny_generator", prompt="stream me", max_tokens=9, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices[0].text]
    assert len(pieces) == 9  # one SSE event per generated word
    assert "".join(pieces) == unary
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_completion_and_stream(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = client.chat.completions.create(model="tiny_generator", messages=messages, max_tokens=5)
    content = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and len(content.split()) == 5
    # The default template renders "system: be brief\nuser: hello there\nassistant:" = 7 words.
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 5
    stream = client.chat.completions.create(model="tiny_generator", messages=messages, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].usage.completion_tokens == 5


def test_embeddings(client):
    r = client.embeddings.create(model="tiny_embed", input=["hello world", "aeiou"])
    assert [d.embedding for d in r.data] == [[11.0, 2.0, 3.0, 1.0], [5.0, 1.0, 5.0, 1.0]]
    assert r.usage.prompt_tokens == 3


def test_unknown_model_is_404_with_openai_error(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="no_such_model", prompt="x")
    assert exc.value.status_code == 404
    err = exc.value.body
    assert set(err) == {"message", "type", "param", "code"} and "no_such_model" in err["message"]


def test_bad_api_key_is_401(server):
    bad = openai.OpenAI(base_url=server.openai_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.models.list()
    assert exc.value.status_code == 401 and exc.value.body["code"] == "invalid_api_key"
    bad.close()


def test_body_limit_is_413(client):
    with pytest.raises(openai.APIStatusError) as exc:
        client.completions.create(model="tiny_generator", prompt="word " * 2000)
    assert exc.value.status_code == 413
    assert exc.value.body["type"] == "invalid_request_error"


def test_bad_body_is_400(server):
    req = urllib.request.Request(server.openai_url + "/completions", data=b"{not json", method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 400
    assert json.loads(exc.value.read())["error"]["type"] == "invalid_request_error"

"""Model repositories on S3 against a real S3-compatible server (moto's server mode on
127.0.0.1): start, infer, poll for an added model and a changed version, explicit load,
credentials from the environment and from TRITON_CLOUD_CREDENTIAL_PATH, Triton's error for
a bucket that is not there, and the local cache gone after shutdown."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from naiad.kernel import objectstore
from support.models import ADD_SUB_MODEL, add_sub_config
from support.naiad_process import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

KEY, SECRET = "naiad-test-key", "naiad-test-secret"
# Version 2 answers a*b and a-b, so that a reply tells which version ran.
MUL_SUB_MODEL = ADD_SUB_MODEL.replace('"OUTPUT0", a + b', '"OUTPUT0", a * b')
CACHE_PREFIX = "naiad-repository-cache-"


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request):
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    name = "naiad-" + request.node.name.lower().replace("_", "-")[:40]
    client.create_bucket(Bucket=name)
    return client, name


def _upload(client, bucket: str, key: str, text: str) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=textwrap.dedent(text).encode())


def _upload_add_sub(client, bucket: str, name: str = "add_sub") -> None:
    config = add_sub_config(name, extra='version_policy: { all: {} }\n')
    _upload(client, bucket, f"repo/{name}/config.pbtxt", config)
    _upload(client, bucket, f"repo/{name}/1/model.py", ADD_SUB_MODEL)
    _upload(client, bucket, f"repo/{name}/2/model.py", MUL_SUB_MODEL)


def _env(tmp_path, **extra) -> dict:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {"TMPDIR": str(tmp), "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(extra)
    return env


def _infer(proc, name: str, version: str = "") -> np.ndarray:
    client = httpclient.InferenceServerClient(proc.http_address)
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([2, 2, 2, 2], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    try:
        return client.infer(name, inputs, model_version=version).as_numpy("OUTPUT0")
    finally:
        client.close()


def _wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def _caches(tmp_path) -> list:
    return sorted((tmp_path / "tmp").glob(CACHE_PREFIX + "*"))


def test_serves_both_versions_from_s3_and_removes_the_cache_at_shutdown(naiad, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    _upload_add_sub(client, name)
    proc = naiad(f"--model-repository=s3://{s3_endpoint}/{name}/repo", env=_env(tmp_path))
    assert _infer(proc, "add_sub", "1").tolist() == [3, 4, 5, 6]
    assert _infer(proc, "add_sub", "2").tolist() == [2, 4, 6, 8]
    assert _infer(proc, "add_sub").tolist() == [2, 4, 6, 8]  # the latest version
    (cache,) = _caches(tmp_path)
    assert list(cache.rglob("model.py")), "the versions were downloaded to the cache"
    assert proc.stop() == 0
    assert _caches(tmp_path) == []


def test_credentials_come_from_the_triton_cloud_credential_file(naiad, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    _upload_add_sub(client, name)
    url = f"s3://{s3_endpoint}/{name}/repo"
    creds = tmp_path / "creds.json"
    # The longest matching prefix wins; the shorter one holds a key the server refuses.
    creds.write_text(json.dumps({"s3": {
        f"s3://{s3_endpoint}": {"key_id": "", "secret_key": "", "region": "eu-west-1"},
        url: {"key_id": KEY, "secret_key": SECRET, "region": "us-east-1"},
    }}))
    env = _env(tmp_path, TRITON_CLOUD_CREDENTIAL_PATH=str(creds), AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    proc = naiad(f"--model-repository={url}", env=env)
    assert _infer(proc, "add_sub", "1").tolist() == [3, 4, 5, 6]


def test_poll_mode_loads_an_added_model_and_a_changed_version(naiad, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    _upload_add_sub(client, name)
    proc = naiad(f"--model-repository=s3://{s3_endpoint}/{name}/repo", "--model-control-mode=poll",
                 "--repository-poll-secs=1", env=_env(tmp_path))
    assert _infer(proc, "add_sub", "2").tolist() == [2, 4, 6, 8]
    _upload_add_sub(client, name, "add_sub_2")
    assert _wait_for(lambda: _infer(proc, "add_sub_2", "1").tolist() == [3, 4, 5, 6])
    _upload(client, name, "repo/add_sub/2/model.py", ADD_SUB_MODEL)  # version 2 now adds
    assert _wait_for(lambda: _infer(proc, "add_sub", "2").tolist() == [3, 4, 5, 6])
    client.delete_object(Bucket=name, Key="repo/add_sub_2/config.pbtxt")
    client.delete_object(Bucket=name, Key="repo/add_sub_2/1/model.py")
    client.delete_object(Bucket=name, Key="repo/add_sub_2/2/model.py")
    http = httpclient.InferenceServerClient(proc.http_address)
    assert _wait_for(lambda: not http.is_model_ready("add_sub_2"))
    http.close()


def test_explicit_mode_loads_a_model_uploaded_after_start(naiad, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    _upload(client, name, "repo/.keep", "")
    proc = naiad(f"--model-repository=s3://{s3_endpoint}/{name}/repo", "--model-control-mode=explicit",
                 env=_env(tmp_path))
    http = httpclient.InferenceServerClient(proc.http_address)
    assert http.get_model_repository_index() == []
    _upload_add_sub(client, name)
    assert [m["name"] for m in http.get_model_repository_index()] == ["add_sub"]
    http.load_model("add_sub")
    assert _infer(proc, "add_sub", "1").tolist() == [3, 4, 5, 6]
    http.unload_model("add_sub")
    assert _wait_for(lambda: not http.is_model_ready("add_sub"))
    http.close()


def test_a_bucket_that_is_not_there_is_tritons_error_at_start(s3_endpoint, tmp_path):
    env = {**os.environ, **_env(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "naiad.kernel.main", "serve", "--http-port=0", "--grpc-port=0",
                        "--metrics-port=0", f"--model-repository=s3://{s3_endpoint}/no-such-bucket/repo"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2
    last = r.stderr.splitlines()[-1]
    assert last.startswith("error: creating server: Internal - Unable to create S3 filesystem client. "
                           "Check account credentials. Exception: "), r.stderr
    assert "Traceback" not in r.stderr
    assert _caches(tmp_path) == []


@pytest.mark.parametrize("url, root, endpoint, account", [
    ("s3://bucket/path/to/repo", "bucket/path/to/repo", "", ""),
    ("s3://bucket//repo/", "bucket/repo", "", ""),
    ("s3://127.0.0.1:9000/bucket/repo", "bucket/repo", "http://127.0.0.1:9000", ""),
    ("s3://https://s3.example.com:443/bucket/repo", "bucket/repo", "https://s3.example.com:443", ""),
    ("gs://bucket/repo", "bucket/repo", "", ""),
    ("as://account/container/some/repo", "container/some/repo", "", "account"),
    ("as://account/container", "container", "", "account"),
])
def test_the_url_forms_triton_accepts(url, root, endpoint, account):
    where = objectstore.parse(url)
    assert (where.root, where.endpoint, where.account) == (root, endpoint, account)


def test_without_the_client_package_the_error_says_which_to_install(tmp_path):
    # A module of the same name that fails to import stands for an install without [cloud].
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "s3fs.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, **_env(tmp_path), "PYTHONPATH": str(shadow)}
    r = subprocess.run([sys.executable, "-m", "naiad.kernel.main", "serve", "--http-port=0", "--grpc-port=0",
                        "--metrics-port=0", "--model-repository=s3://127.0.0.1:1/bucket/repo"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == ("error: creating server: Internal - s3:// model repositories need the "
                                         "'s3fs' package (pip install 'naiad[cloud]')"), r.stderr


# Azurite's well-known development account (its documentation's, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service (npm `azurite`) on 127.0.0.1; skipped where it is not installed."""
    exe = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    if not exe:
        pytest.skip("azurite-blob not found (npm install azurite; put its .bin on PATH or set AZURITE_BLOB)")
    pytest.importorskip("adlfs")
    port = free_port()
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent",
                             "--skipApiVersionCheck", "--location", str(tmp_path_factory.mktemp("azurite"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "azurite did not start"
            time.sleep(0.1)
    yield (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
    proc.terminate()
    proc.wait(10)


def test_as_repository_on_azurite(naiad, azurite, tmp_path):
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite).create_container("models")
    config = add_sub_config("add_sub", extra='version_policy: { all: {} }\n')
    for key, text in [("repo/add_sub/config.pbtxt", config), ("repo/add_sub/1/model.py", ADD_SUB_MODEL),
                      ("repo/add_sub/2/model.py", MUL_SUB_MODEL)]:
        container.upload_blob(key, textwrap.dedent(text).encode())
    proc = naiad(f"--model-repository=as://{AZURITE_ACCOUNT}/models/repo",
                 env=_env(tmp_path, AZURE_STORAGE_CONNECTION_STRING=azurite))
    assert _infer(proc, "add_sub", "1").tolist() == [3, 4, 5, 6]
    assert _infer(proc, "add_sub", "2").tolist() == [2, 4, 6, 8]
    assert proc.stop() == 0
    assert _caches(tmp_path) == []

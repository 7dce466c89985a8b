"""A registered system shared-memory region that a client truncates afterwards: an inference
reading an input from it, or writing an output into it, is refused for that request
(Triton's out-of-bounds words) instead of the server dying of SIGBUS; the server keeps
serving, and the same region works again once it has its size back."""

from __future__ import annotations

import os
import uuid
import warnings

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import ADD_SUB_MODEL, add_sub_config, write_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # its pkg_resources deprecation notice
    import tritonclient.utils.shared_memory as shm

SIZE = 32  # two FP32[4] tensors


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from support.naiad_process import NaiadProcess

    root = tmp_path_factory.mktemp("shm_truncated")
    write_model(root / "models", "add_sub", add_sub_config(), ADD_SUB_MODEL)
    proc = NaiadProcess(root / "naiad", ["--model-repository", str(root / "models")])
    proc.start()
    yield proc
    proc.kill_if_running()


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    module = httpclient if request.param == "http" else grpcclient
    address = server.http_address if request.param == "http" else server.grpc_address
    c = module.InferenceServerClient(address)
    c.module = module
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions(client):
    """Input and output regions of SIZE bytes, registered; yields their /dev/shm paths."""
    tag = uuid.uuid4().hex[:8]
    handles, paths = [], {}
    for role in ("in", "out"):
        key = f"/naiad_trunc_{role}_{tag}"
        handles.append(shm.create_shared_memory_region(f"{role}_{tag}", key, SIZE))
        client.register_system_shared_memory(role, key, SIZE)
        paths[role] = f"/dev/shm{key}"
    shm.set_shared_memory_region(handles[0], [np.arange(4, dtype=np.float32), np.ones(4, np.float32)])
    yield handles, paths
    for h in handles:
        shm.destroy_shared_memory_region(h)


def _infer(client):
    m = client.module
    i0, i1 = m.InferInput("INPUT0", [4], "FP32"), m.InferInput("INPUT1", [4], "FP32")
    i0.set_shared_memory("in", 16)
    i1.set_shared_memory("in", 16, offset=16)
    out = m.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("out", 16)
    return client.infer("add_sub", [i0, i1], outputs=[out])


def _assert_refused(client, server, region):
    with pytest.raises(InferenceServerException) as info:
        _infer(client)
    assert info.value.message() == f"Invalid offset + byte size for shared memory region: '{region}'"
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert server.proc.poll() is None, server.logs()
    assert client.is_server_live() and client.is_model_ready("add_sub")


@pytest.mark.parametrize("role", ["in", "out"])
@pytest.mark.parametrize("new_size", [0, 8])
def test_truncated_region_fails_the_request_and_the_server_keeps_serving(client, server, regions, role, new_size):
    handles, paths = regions
    assert _infer(client).get_output("OUTPUT0") is not None  # works before
    os.truncate(paths[role], new_size)
    _assert_refused(client, server, role)
    # Its size back (contents of the cut part are zeros now): served again.
    os.truncate(paths[role], SIZE)
    if role == "in":
        shm.set_shared_memory_region(handles[0], [np.arange(4, dtype=np.float32), np.ones(4, np.float32)])
    _infer(client)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handles[1], np.float32, [4]),
                                  np.arange(4, dtype=np.float32) + 1)

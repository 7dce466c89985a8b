"""One inference entry: the awaited entry (HTTP on aiohttp) and the submitted one (the
native HTTP and gRPC front ends, grpcio) keep the same books. The same mix of requests —
answered, refused by the model, and failed after the model answered (a classification
asked of a BYTES output) — leaves the same success and failure counts on every path."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import identity_config, write_model
from support.naiad_process import NaiadProcess

PICKY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if t[0] == b"no":
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("refused")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", t)]))
        return out
'''



@pytest.fixture(scope="module", params=["native", "python"])
def server(request, tmp_path_factory):
    if request.param == "native":
        pytest.importorskip("naiad.ext._native_http", reason="the native HTTP front end is not built here")
        config = '[services.http]\ntransport = "native"\n'
    else:
        config = '[services.http]\ntransport = "aiohttp"\n[services.grpc]\ntransport = "grpcio"\n'
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "picky", identity_config("picky", datatype="TYPE_STRING", dims="[ 1 ]"), PICKY)
    proc = NaiadProcess(tmp_path_factory.mktemp(f"entries_{request.param}"), ["--model-repository", str(repo)],
                        config=config)
    proc.start()
    yield proc
    proc.kill_if_running()


def _counts(server) -> tuple[int, int]:
    stats = httpclient.InferenceServerClient(server.http_address).get_inference_statistics("picky")
    s = stats["model_stats"][0]["inference_stats"]
    return s["success"]["count"], s["fail"]["count"]


def _send(client_module, address: str, word: bytes, classify: bool) -> None:
    client = client_module.InferenceServerClient(address)
    inp = client_module.InferInput("INPUT0", [1], "BYTES")
    inp.set_data_from_numpy(np.array([word], dtype=object))
    out = [client_module.InferRequestedOutput("OUTPUT0", class_count=1 if classify else 0)]
    client.infer("picky", [inp], outputs=out)


def _http(server, word: bytes, classify: bool) -> None:
    _send(httpclient, server.http_address, word, classify)


def _grpc(server, word: bytes, classify: bool) -> None:
    _send(grpcclient, server.grpc_address, word, classify)


@pytest.mark.parametrize("send", [_http, _grpc], ids=["http", "grpc"])
def test_every_entry_counts_the_same_mix_the_same_way(server, send) -> None:
    success0, fail0 = _counts(server)
    send(server, b"yes", False)
    send(server, b"yes", False)
    with pytest.raises(InferenceServerException, match="refused"):
        send(server, b"no", False)
    with pytest.raises(InferenceServerException, match="class result not available"):
        send(server, b"yes", True)  # the model answered; the classification fails after it
    success, fail = _counts(server)
    assert (success - success0, fail - fail0) == (2, 2)

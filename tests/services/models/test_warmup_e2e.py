"""`model_warmup` as Triton runs it: each sample's requests reach the instance before the
model is ready, in order, `count` times, with zero, random or file data; a failing sample
fails the load with Triton's words; warm-up requests count in no statistics."""

from __future__ import annotations

import json
import struct
import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import empty_repository, write_model

# Records every execution (batch size, the inputs it saw); answers a normal request with
# its input and the record so far, as JSON in LOG.
RECORDER = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.seen = []

    def execute(self, requests):
        batch = []
        for r in requests:
            names = sorted(t.name() for t in r.inputs())
            values = {}
            for n in names:
                a = pb_utils.get_input_tensor_by_name(r, n).as_numpy()
                values[n] = [list(a.shape), [v.decode() if isinstance(v, bytes) else float(v) for v in a.reshape(-1)]]
            batch.append(values)
        self.seen.append(batch)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            log = np.array([json.dumps(self.seen).encode()], dtype=object)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x),
                                                    pb_utils.Tensor("LOG", log.reshape([1] * x.ndim))]))
        return out
'''

RAISES_ON_ZEROS = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if not x.any():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("zeros are not welcome")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
'''


def _config(name: str, warmup: str, max_batch_size: int = 8, datatype: str = "TYPE_FP32") -> str:
    return textwrap.dedent(f'''
        name: "{name}"
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "INPUT0" data_type: {datatype} dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: {datatype} dims: [ 4 ] }},
                 {{ name: "LOG" data_type: TYPE_STRING dims: [ 1 ] }} ]
        instance_group [ {{ count: 1 kind: KIND_CPU }} ]
        ''') + warmup


def _sample(name: str, data: str, batch_size: int = 1, count: int = 0, datatype: str = "TYPE_FP32",
            dims: str = "[ 4 ]") -> str:
    return (f'model_warmup [ {{ name: "{name}" batch_size: {batch_size} count: {count} '
            f'inputs {{ key: "INPUT0" value: {{ data_type: {datatype} dims: {dims} {data} }} }} }} ]\n')


def _first_log(client, name: str, datatype: str = "FP32", max_batch_size: int = 8) -> list:
    shape = [1, 4] if max_batch_size else [4]
    inp = httpclient.InferInput("INPUT0", shape, datatype)
    inp.set_data_from_numpy(np.full(shape, 7, np.float32) if datatype == "FP32"
                            else np.array([[b"x"] * 4] if max_batch_size else [b"x"] * 4, dtype=object))
    result = client.infer(name, [inp])
    return json.loads(result.as_numpy("LOG").reshape(-1)[0])


def test_samples_run_in_order_count_times_before_ready(naiad, tmp_path):
    repo = tmp_path / "models"
    warm = ('model_warmup [\n'
            '  { name: "zeros" batch_size: 2 count: 3 inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } },\n'
            '  { name: "skipped" batch_size: 0 inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } },\n'
            '  { name: "random" batch_size: 1 inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } }\n'
            ']\n')
    write_model(repo, "rec", _config("rec", warm), RECORDER)
    proc = naiad(f"--model-repository={repo}", "--log-verbose=1")
    client = httpclient.InferenceServerClient(proc.http_address)
    seen = _first_log(client, "rec")
    # 3 executions of 2 zero requests, then 1 of the random one, then the request itself.
    assert [len(batch) for batch in seen] == [2, 2, 2, 1, 1]
    for batch in seen[:3]:
        for request in batch:
            assert request["INPUT0"] == [[1, 4], [0.0, 0.0, 0.0, 0.0]]
    assert seen[3][0]["INPUT0"][0] == [1, 4]
    assert seen[4][0]["INPUT0"] == [[1, 4], [7.0] * 4]
    stats = client.get_inference_statistics("rec")["model_stats"][0]
    # Warm-up requests count as Triton's do (its warm-up requests collect statistics):
    # 3 x 2 + 1 warm-up inferences in 4 executions, then the request.
    assert (stats["inference_count"], stats["execution_count"]) == (8, 5)
    assert stats["inference_stats"]["success"]["count"] == 8
    logs = proc.logs()
    assert "Skipping batch 0 warmup sample 'skipped'" in logs
    assert "is running warmup sample 'zeros' for iteration 3" in logs
    client.close()


def test_file_data_non_batching_and_bytes(naiad, tmp_path):
    repo = tmp_path / "models"
    model = write_model(repo, "filed", _config("filed", _sample("file", 'input_data_file: "in.bin"'), 0), RECORDER)
    (model / "warmup").mkdir()
    (model / "warmup" / "in.bin").write_bytes(np.array([1, 2, 3, 4, 5], np.float32).tobytes())  # extra bytes ignored
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"bc", b"", b"d"))
    model = write_model(repo, "texts", _config("texts", _sample("file", 'input_data_file: "s.bin"', datatype="TYPE_STRING"),
                                              datatype="TYPE_STRING"), RECORDER)
    (model / "warmup").mkdir()
    (model / "warmup" / "s.bin").write_bytes(strings)
    write_model(repo, "blank", _config("blank", _sample("z", "zero_data: true", datatype="TYPE_STRING"),
                                       datatype="TYPE_STRING"), RECORDER)
    proc = naiad(f"--model-repository={repo}")
    client = httpclient.InferenceServerClient(proc.http_address)
    assert _first_log(client, "filed", max_batch_size=0)[0][0]["INPUT0"] == [[4], [1.0, 2.0, 3.0, 4.0]]
    assert _first_log(client, "texts", "BYTES")[0][0]["INPUT0"] == [[1, 4], ["a", "bc", "", "d"]]
    assert _first_log(client, "blank", "BYTES")[0][0]["INPUT0"] == [[1, 4], ["", "", "", ""]]
    client.close()


@pytest.mark.parametrize("warm, files, message", [
    (_sample("bad", "zero_data: true", batch_size=2), {},
     "failed to run warmup sample 'bad': zeros are not welcome; zeros are not welcome; "),
    (_sample("var", "zero_data: true", dims="[ -1 ]"), {},
     "warmup setting expects all variable-size dimensions are specified for input 'INPUT0'"),
    (_sample("short", 'input_data_file: "short.bin"'), {"short.bin": b"1234"},
     "[request id: <id_unknown>] warmup setting expects 16 bytes, but the data provided from short.binonly has 4 bytes"),
    (_sample("unset", ""), {},
     "[request id: <id_unknown>] warmup setting expects input 'INPUT0' to have input_data_type set"),
], ids=["failing-sample", "variable-dims", "short-file", "no-data-type"])
def test_a_warmup_that_cannot_run_fails_the_load(naiad, tmp_path, warm, files, message):
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", "--model-control-mode=explicit")
    client = httpclient.InferenceServerClient(proc.http_address)
    model_files = {"file:1/model.py": RAISES_ON_ZEROS.encode()}
    model_files.update({f"file:warmup/{k}": v for k, v in files.items()})
    config = _config("picky", warm).replace('{ name: "LOG" data_type: TYPE_STRING dims: [ 1 ] }', "")
    config = config.replace("OUTPUT0\" data_type: TYPE_FP32 dims: [ 4 ] },", "OUTPUT0\" data_type: TYPE_FP32 dims: [ 4 ] }")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("picky", config=json.dumps(_as_json(config)), files=model_files)
    assert message in info.value.message()
    assert not client.is_model_ready("picky")
    assert client.is_server_live()
    client.close()


def _as_json(pbtxt: str) -> dict:
    from google.protobuf import json_format, text_format

    from naiad.protos import model_config_pb2

    return json_format.MessageToDict(text_format.Parse(pbtxt, model_config_pb2.ModelConfig()),
                                     preserving_proto_field_name=True)

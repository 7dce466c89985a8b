"""Start-up as tritonserver 24.04: the model repository checks with Triton's words (and
`--exit-on-error=false` serving on, neither live nor ready), port values that are not
ports, the deprecated flags' warnings, and the `loading:` lines of a model load."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import tritonclient.grpc as grpcclient

from support.models import IDENTITY_MODEL, empty_repository, identity_config, write_model
from support.naiad_process import http_get


def _serve(*flags: str) -> subprocess.CompletedProcess:
    """`naiad serve` that is expected to exit by itself (bounded)."""
    return subprocess.run([sys.executable, "-m", "naiad.kernel.main", "serve", "--http-port=0", "--grpc-port=0",
                           "--metrics-port=0", *flags], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flags, line", [
    ((), "error: creating server: Invalid argument - --model-repository must be specified"),
    (("--model-repository=/no/such/repository",), "error: creating server: Internal - failed to stat file "
                                                   "/no/such/repository"),
    (("--model-repository=/etc/hostname",), "error: creating server: Invalid argument - repository path is "
                                            "not a valid directory"),
    # Cloud paths Triton cannot parse (reachable ones: tests/kernel/test_objectstore.py).
    (("--model-repository=s3://",), "error: creating server: Invalid argument - Invalid bucket name: ''"),
    (("--model-repository=as://account",), "error: creating server: Internal - Invalid azure storage path: "
                                           "as://account"),
])
def test_a_repository_triton_would_refuse_is_an_error_at_start(flags, line):
    r = _serve(*flags)
    assert r.returncode == 2
    assert line in r.stderr.splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_without_exit_on_error_the_server_runs_neither_live_nor_ready_and_answers_metadata(naiad):
    proc = naiad("--model-repository=/no/such/repository", "--exit-on-error=false", wait_ready=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = http_get(proc.url + "/v2")
            break
        except OSError:
            assert time.monotonic() < deadline, proc.logs()
            time.sleep(0.05)
    assert status == 200 and b'"name":"triton"' in body
    assert http_get(proc.url + "/v2/health/live")[0] == 400
    assert http_get(proc.url + "/v2/health/ready")[0] == 400
    client = grpcclient.InferenceServerClient(proc.grpc_address)
    assert client.is_server_live() is False and client.is_server_ready() is False
    assert client.get_server_metadata().name == "triton"
    client.close()
    assert "Internal: failed to stat file /no/such/repository" in proc.logs()
    assert proc.stop() == 0


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--metrics-port"])
@pytest.mark.parametrize("value", ["70000", "-1"])
def test_a_port_out_of_range_is_refused_not_wrapped(tmp_path, flag, value):
    r = _serve(f"--model-repository={empty_repository(tmp_path)}", f"{flag}={value}")
    assert r.returncode == 2
    assert f"argument {flag}: Provided option value is out of bound. Got {value}" in r.stderr


def test_a_value_that_is_not_a_number_is_refused_in_tritons_words(tmp_path):
    r = _serve("--exit-timeout-secs=soon")
    assert r.returncode == 2 and "Invalid option value. Got soon" in r.stderr


def test_deprecated_flags_print_tritons_warnings(tmp_path):
    # A missing repository ends the run right after the flags are read.
    r = _serve("--model-repository=/no/such/repository", "--strict-model-config=false",
               "--disable-auto-complete-config", "--trace-file=/tmp/t.json", "--trace-level=TIMESTAMPS",
               "--trace-rate=5", "--trace-config", "rate=3", "--trace-count=2", "--trace-log-frequency=4",
               "--response-cache-byte-size=100")
    err = r.stderr.splitlines()
    for line in (
        "Warning: '--strict-model-config' has been deprecated! Please use '--disable-auto-complete-config' instead.",
        "Warning: Overriding deprecated '--strict-model-config' from False to True in favor of "
        "'--disable-auto-complete-config'!",
        "Warning: '--trace-file' has been deprecated and will be removed in future releases. Please use "
        "'--trace-config triton,file=<filepath> instead.",
        "Warning: '--trace-level' has been deprecated and will be removed in future releases. Please use "
        "'--trace-config level=<OFF|TIMESTAMPS|TENSORS> instead.",
        "Warning: '--trace-rate' has been deprecated and will be removed in future releases. Please use "
        "'--trace-config rate=<rate value> instead.",
        "Warning: Overriding deprecated '--trace-rate' in favor of provided rate value in --trace-config!",
        "Warning: '--trace-count' has been deprecated and will be removed in future releases. Please use "
        "'--trace-config count=<count value> instead.",
        "Warning: '--trace-log-frequency' has been deprecated and will be removed in future releases. Please use "
        "'--trace-config triton,log-frequency=<log frequency value> instead.",
        "Warning: '--response-cache-byte-size' has been deprecated! This will default to the 'local' cache "
        "implementation with the provided byte size for its config. Please use '--cache-config' instead. The "
        "equivalent --cache-config CLI args would be: '--cache-config=local,size=100'",
    ):
        assert line in err, r.stderr


def test_trace_config_wins_over_the_deprecated_flag():
    from naiad.kernel import flags
    from naiad.kernel.main import _parser

    args = _parser().parse_args(["serve", "--trace-rate=5", "--trace-config", "rate=3"])
    overrides, _ = flags.to_overrides(args)
    assert overrides["services"]["tracing"]["trace_config"] == ["rate=5", "rate=3"]  # the later entry wins


def test_a_model_load_logs_tritons_loading_lines(naiad, tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "ident", identity_config("ident"), IDENTITY_MODEL, versions=(1, 2))
    (repo / "ident" / "config.pbtxt").write_text(identity_config("ident", extra="version_policy: { all { } }"))
    proc = naiad(f"--model-repository={repo}")
    logs = proc.logs()
    assert "loading: ident:1" in logs and "loading: ident:2" in logs
    assert "successfully loaded 'ident'" in logs
    assert logs.index("loading: ident:1") < logs.index("successfully loaded 'ident'")

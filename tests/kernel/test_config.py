"""Config: every kind of error names the file, the key and what was expected; flags
override the file; refused flags say why; `naiad config check` and `--version`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from naiad.kernel import flags
from naiad.kernel.config import load
from naiad.kernel.main import _parser
from naiad.kernel.schema import ConfigError


def _cfg(tmp_path, text, *cli):
    path = tmp_path / "naiad.toml"
    path.write_text(text)
    args = _parser().parse_args(["serve", *cli])
    overrides, notes = flags.to_overrides(args)
    return load(path, overrides), notes, str(path)


def test_defaults_without_a_file():
    cfg = load(None)
    assert cfg.server.exit_timeout_secs == 30
    assert cfg.server.exit_on_error is True and cfg.server.strict_readiness is True
    assert cfg.server.model_control_mode == "none"
    assert cfg.services["http"].config.port == 8000


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nexit_timeout_secs = \"ten\"\n", "[server].exit_timeout_secs: expected an integer, got 'ten'"),
        ("[server]\nstrict_readiness = 1\n", "[server].strict_readiness: expected a boolean (true or false), got 1"),
        ("[server]\nmodel_control_mode = \"sometimes\"\n",
         "[server].model_control_mode: expected one of 'none', 'poll', 'explicit', got 'sometimes'"),
        ("[server]\nexit_timeout_secs = -1\n", "[server].exit_timeout_secs: expected a value >= 0, got -1"),
        ("[server]\nmodel_repository = \"/models\"\n",
         "[server].model_repository: expected a list of strings, got '/models'"),
        ("[server]\ncolour = \"blue\"\n", "[server]: unknown key 'colour'"),
        ("[servers]\n", "unknown section 'servers'"),
        ("[services.http]\nport = \"80\"\n", "[services.http].port: expected an integer, got '80'"),
        ("[services.http]\nportt = 80\n", "[services.http]: unknown key 'portt'"),
        ("[services.http]\nport = 70000\n", "[services.http].port: expected a value <= 65535, got 70000"),
        ("[services.grpc]\nport = 65536\n", "[services.grpc].port: expected a value <= 65535, got 65536"),
        ("[services.telepathy]\n", "unknown service 'telepathy'"),
        ("[services.x]\nmodule = \"nope_not_a_module:Thing\"\n",
         "[services.x].module: could not import module \"nope_not_a_module\""),
        ("[services.x]\nmodule = \"json:dumps\"\n", "is not a naiad.kernel.service.Service subclass"),
        ("[services.x]\nmodule = \"json\"\n", "is not of the form \"package.module:attribute\""),
        ("[services.http]\nenabled = \"yes\"\n", "[services.http].enabled: expected a boolean"),
        ("[backends.python]\nshm = [1]\n", "[backends.python].shm: expected a string, number or boolean"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_each_config_error_names_file_key_and_expectation(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, text)
    assert message in str(info.value)
    assert str(tmp_path / "naiad.toml") in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "absent.toml")


def test_flags_override_file(tmp_path):
    cfg, notes, _ = _cfg(
        tmp_path,
        "[server]\nexit_timeout_secs = 5\nmodel_repository = [\"/a\"]\n[services.http]\nport = 9000\n",
        "--exit-timeout-secs=7", "--http-port", "9100", "--model-repository=/b", "--model-store=/c",
        "--strict-readiness=false", "--exit-on-error", "0", "--model-control-mode=EXPLICIT",
        "--load-model=a", "--load-model=*", "--log-verbose=2", "--disable-auto-complete-config",
        "--backend-config=python,shm-default-byte-size=2097152", "--backend-config=default-max-batch-size=8",
        "--http-thread-count=4", "--cache-config=local,size=4096",
    )
    assert cfg.server.exit_timeout_secs == 7
    assert cfg.services["http"].config.port == 9100
    assert cfg.server.model_repository == ["/b", "/c"]  # flags replace the file's list, as Triton's only source
    assert cfg.server.strict_readiness is False and cfg.server.exit_on_error is False
    assert cfg.server.model_control_mode == "explicit"
    assert cfg.server.load_model == ["a", "*"]
    assert cfg.log.verbose == 2 and cfg.server.disable_auto_complete_config is True
    assert cfg.backends == {"python": {"shm-default-byte-size": "2097152"}, "default": {"default-max-batch-size": "8"}}
    assert cfg.cache.enabled and cfg.cache.size == 4096
    assert any("--http-thread-count accepted with no effect" in n for n in notes)


@pytest.mark.parametrize(
    "cli, message",
    [
        (["--allow-sagemaker=true"], "--allow-sagemaker: naiad does not serve the SageMaker endpoints"),
        (["--cache-config=redis,host=x"], "naiad has the 'local' response cache only"),
        (["--response-cache-byte-size=10", "--cache-config=local,size=5"],
         "Error: Incompatible flags --response-cache-byte-size and --cache-config both provided."),
    ],
)
def test_refused_flags_give_one_line_reasons(tmp_path, cli, message):
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, "", *cli)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_false_values_of_refused_flags_are_accepted(tmp_path):
    cfg, _, _ = _cfg(tmp_path, "", "--allow-sagemaker=false")
    assert cfg.server.id == "triton"


def test_model_namespacing_flag_sets_the_server_key(tmp_path):
    assert _cfg(tmp_path, "")[0].server.model_namespacing is False
    assert _cfg(tmp_path, "", "--model-namespacing=true")[0].server.model_namespacing is True
    assert _cfg(tmp_path, "[server]\nmodel_namespacing = true\n", "--model-namespacing=false")[0].server.model_namespacing is False


def _naiad(*args, **kw):
    return subprocess.run([sys.executable, "-m", "naiad.kernel.main", *args], capture_output=True, text=True,
                          timeout=60, **kw)


def test_cli_config_check_and_errors_without_traceback(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[server]\nexit_timeout_secs = 3\n[services.http]\nport = 8123\n")
    r = _naiad("config", "check", str(good))
    assert r.returncode == 0 and f"{good}: ok" in r.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text("[services.http]\nport = \"eighty\"\n")
    for args in (("config", "check", str(bad)), ("serve", "--config", str(bad))):
        r = _naiad(*args)
        assert r.returncode == 2
        assert r.stderr.strip() == f"naiad: error: {bad}: [services.http].port: expected an integer, got 'eighty'"
        assert "Traceback" not in r.stderr

    r = _naiad("serve", "--strict-readiness=maybe")
    assert r.returncode == 2 and "invalid value for bool option: maybe" in r.stderr and "Traceback" not in r.stderr
    r = _naiad("serve", "--no-such-flag=1")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_cli_version():
    r = _naiad("--version")
    assert r.returncode == 0 and r.stdout.startswith("naiad ") and "Triton 2.45.0" in r.stdout


def test_every_spec_flag_is_known():
    # SPEC.md section 4: each flag is accepted (mapped or a no-op with a note) or refused with a reason.
    names = {f.name for f in flags.FLAGS} | {a for f in flags.FLAGS for a in f.aliases}
    expected = """--model-repository --model-store --model-control-mode --load-model --repository-poll-secs
    --strict-model-config --disable-auto-complete-config --strict-readiness --exit-on-error --exit-timeout-secs
    --id --allow-http --http-port --http-address --reuse-http-port --http-thread-count
    --http-header-forward-pattern --http-restricted-api --allow-grpc --grpc-port --grpc-address --reuse-grpc-port
    --grpc-header-forward-pattern --grpc-restricted-protocol --grpc-infer-allocation-pool-size
    --grpc-infer-response-compression-level --grpc-keepalive-time --grpc-keepalive-timeout
    --grpc-keepalive-permit-without-calls --grpc-http2-max-pings-without-data
    --grpc-http2-min-recv-ping-interval-without-data --grpc-http2-max-ping-strikes --grpc-max-connection-age
    --grpc-max-connection-age-grace --grpc-use-ssl --grpc-use-ssl-mutual --grpc-server-cert --grpc-server-key
    --grpc-root-cert --allow-metrics --allow-gpu-metrics --allow-cpu-metrics --metrics-address --metrics-port
    --metrics-interval-ms --metrics-config --log-verbose --log-info --log-warning --log-error --log-format
    --log-file --trace-config --trace-file --trace-level --trace-rate --trace-count --trace-log-frequency
    --cache-config --response-cache-byte-size --cache-directory --rate-limit --rate-limit-resource
    --pinned-memory-pool-byte-size --cuda-memory-pool-byte-size --backend-config --backend-directory
    --repoagent-directory --model-load-thread-count --model-load-retry-count --model-namespacing
    --buffer-manager-thread-count --host-policy --min-supported-compute-capability --model-load-gpu-limit
    --cuda-virtual-address-size --allow-sagemaker --allow-vertex-ai""".split()
    assert sorted(set(expected) - names) == []


def test_readme_reference_is_current():
    from naiad.kernel.main import reference_markdown
    from support.naiad_process import REPO

    readme = (REPO / "README.md").read_text()
    start, end = "<!-- reference:start -->\n", "\n<!-- reference:end -->"
    current = readme[readme.index(start) + len(start): readme.index(end)]
    assert current.strip() == reference_markdown().strip(), "README reference is stale: run `naiad config reference`"

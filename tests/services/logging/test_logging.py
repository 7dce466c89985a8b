"""Triton's logging settings through a real server: `GET/POST /v2/logging` (the kernel
answers `LogSettingRequest`), and the `--log-*` flags seen in what the server writes."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.models import IDENTITY_MODEL, identity_config, write_model

DEFAULT_LINE = re.compile(r"^[IWE]\d{4} \d{2}:\d{2}:\d{2}\.\d{6} \d+ \S+\] ")
ISO8601_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z [IWE] \d+ \S+\] ")


def post(proc, path: str, doc) -> tuple[int, dict]:
    req = urllib.request.Request(proc.url + path, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(proc, path: str) -> dict:
    with urllib.request.urlopen(proc.url + path, timeout=5) as r:
        return json.loads(r.read())


def _repo(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "ident", identity_config("ident"), IDENTITY_MODEL)
    return repo


def _wait_for(read, pattern: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read()
        if pattern in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{read()}")


def test_settings_api_reads_and_updates(naiad, tmp_path):
    proc = naiad("--model-repository", str(_repo(tmp_path)))
    assert get(proc, "/v2/logging") == {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                                        "log_verbose_level": 0, "log_format": "default"}
    status, reply = post(proc, "/v2/logging", {"log_verbose_level": 2, "log_warning": False,
                                               "log_format": "ISO8601"})
    assert status == 200
    assert reply == {"log_file": "", "log_info": True, "log_warning": False, "log_error": True,
                     "log_verbose_level": 2, "log_format": "ISO8601"}
    assert get(proc, "/v2/logging") == reply
    # tritonclient reads the same settings.
    client = httpclient.InferenceServerClient(proc.http_address)
    assert client.get_log_settings()["log_verbose_level"] == 2
    client.update_log_settings({"log_verbose_level": 0, "log_warning": True, "log_format": "default"})
    assert get(proc, "/v2/logging")["log_verbose_level"] == 0
    assert proc.stop() == 0


def test_log_file_update_refused_and_bad_values(naiad, tmp_path):
    proc = naiad("--model-repository", str(_repo(tmp_path)))
    status, reply = post(proc, "/v2/logging", {"log_file": str(tmp_path / "elsewhere.log")})
    assert status == 501
    assert reply == {"error": "log file location can not be updated through network protocol"}
    client = httpclient.InferenceServerClient(proc.http_address)
    with pytest.raises(InferenceServerException, match="log file location can not be updated"):
        client.update_log_settings({"log_file": "x.log"})
    status, reply = post(proc, "/v2/logging", {"log_format": "json"})
    assert status == 503 and "log_format" in reply["error"]
    status, reply = post(proc, "/v2/logging", {"log_info": "yes"})
    assert status == 500  # TritonJson's AsBool error, INTERNAL in Triton's HTTP front end
    assert get(proc, "/v2/logging")["log_file"] == ""  # nothing changed
    assert not (tmp_path / "elsewhere.log").exists()
    assert proc.stop() == 0


def test_log_file_flag_writes_there(naiad, tmp_path):
    log_file = tmp_path / "server.log"
    proc = naiad("--model-repository", str(_repo(tmp_path)), f"--log-file={log_file}")
    assert get(proc, "/v2/logging")["log_file"] == str(log_file)
    text = _wait_for(log_file.read_text, "naiad started")
    assert all(DEFAULT_LINE.match(line) for line in text.splitlines() if line and not line.startswith(" "))
    assert "naiad started" not in proc.logs()  # not on the console
    assert proc.stop() == 0


def test_iso8601_format_flag_and_runtime_switch(naiad, tmp_path):
    log_file = tmp_path / "server.log"
    proc = naiad("--model-repository", str(_repo(tmp_path)), "--model-control-mode=explicit",
                 "--log-format=ISO8601", f"--log-file={log_file}")
    started = _wait_for(log_file.read_text, "naiad started")
    lines = [line for line in started.splitlines() if line.strip()]
    assert lines and all(ISO8601_LINE.match(line) for line in lines), lines
    # Switched at run time: lines written afterwards use the default format.
    assert post(proc, "/v2/logging", {"log_format": "default"})[0] == 200
    client = httpclient.InferenceServerClient(proc.http_address)
    client.load_model("ident")
    text = _wait_for(log_file.read_text, "loaded model 'ident'")
    line = [line for line in text.splitlines() if "loaded model 'ident'" in line][-1]
    assert DEFAULT_LINE.match(line), line
    assert proc.stop() == 0


def test_verbose_flag_shows_verbose_lines_and_log_info_switch(naiad, tmp_path):
    quiet = naiad("--model-repository", str(_repo(tmp_path)))
    assert quiet.stop() == 0
    assert "naiad started" in quiet.logs() and "service 'models' started" not in quiet.logs()

    log_file = tmp_path / "verbose.log"
    proc = naiad("--model-repository", str(_repo(tmp_path)), "--model-control-mode=explicit", "--log-verbose=1",
                 f"--log-file={log_file}")
    _wait_for(log_file.read_text, "service 'models' started")
    assert get(proc, "/v2/logging")["log_verbose_level"] == 1
    # log_info off: INFO lines stop (a model load logs one); on again: they come back.
    assert post(proc, "/v2/logging", {"log_info": False})[0] == 200
    client = httpclient.InferenceServerClient(proc.http_address)
    client.load_model("ident")
    client.unload_model("ident")
    assert post(proc, "/v2/logging", {"log_info": True})[0] == 200
    client.load_model("ident")
    text = _wait_for(log_file.read_text, "loaded model 'ident'")
    assert text.count("loaded model 'ident'") == 1
    assert proc.stop() == 0

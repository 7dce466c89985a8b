"""A third-party service plugs in by module path, end to end in a real process."""

from __future__ import annotations

import json

from support.models import empty_repository
from support.naiad_process import REPO, free_port, http_get

EXAMPLES = str(REPO / "examples" / "services")


def test_example_service_loads_by_module_path_and_uses_the_bus(naiad, tmp_path):
    port = free_port()
    config = (
        "[services.status]\n"
        'module = "status_service:StatusService"\n'
        f"port = {port}\n"
    )
    proc = naiad(f"--model-repository={empty_repository(tmp_path)}", config=config, env={"PYTHONPATH": EXAMPLES})
    status, body = http_get(f"http://127.0.0.1:{port}/status")
    assert status == 200
    payload = json.loads(body)
    assert payload["ready"] is True  # answered by the kernel over the bus
    assert payload["services"].get("http") == "running"  # learned from bus events
    assert proc.stop() == 0


def test_plugin_config_is_validated_by_its_own_schema(naiad, tmp_path):
    import subprocess, sys, os
    cfg = tmp_path / "p.toml"
    cfg.write_text('[services.status]\nmodule = "status_service:StatusService"\nport = "x"\n')
    env = dict(os.environ, PYTHONPATH=EXAMPLES)
    r = subprocess.run([sys.executable, "-m", "naiad.kernel.main", "config", "check", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "[services.status].port: expected an integer, got 'x'" in r.stderr

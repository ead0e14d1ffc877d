"""A crashed service is restarted by the supervisor and the mesh serves again."""

import os
import signal
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_killed_orchestrator_comes_back(mesh):
    pid = int(mesh.supervisorctl("pid", "orchestrator"))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = mesh.supervisorctl("pid", "orchestrator")
        if new.isdigit() and int(new) not in (0, pid):
            break
        time.sleep(0.2)
    else:
        pytest.fail("orchestrator was not restarted")
    mesh.wait_ready(timeout_s=60)
    r = httpx.post(f"{mesh.base_url}/completions", headers=mesh.headers(), timeout=60,
                   json={"model": "SmolLM2-135M-Instruct", "prompt": "Hello", "max_tokens": 3})
    assert r.status_code == 200

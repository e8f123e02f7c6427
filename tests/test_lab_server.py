"""`make lab` serves JupyterLab: start it on a free port (no browser), fetch /lab, stop it."""
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_serves_jupyterlab(tmp_path):
    port, token = _free_port(), "labkit-test-token"
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen(["make", "-s", "lab", f"PORT={port}", "NO_BROWSER=1"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body, last = time.time() + 90, None, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
                    assert r.status == 200
                    body = r.read().decode()
                    break
            except OSError as e:
                last = e
                time.sleep(0.5)
        if body is None:
            os.killpg(proc.pid, signal.SIGTERM)
            pytest.fail(f"JupyterLab did not answer on port {port}: {last}; exit code {proc.poll()}\n"
                        + proc.communicate(timeout=20)[0].decode()[-3000:])
        assert "JupyterLab" in body
        # the kernel `make lab` registers for the course
        assert (tmp_path / "data" / "kernels" / "labkit" / "kernel.json").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/01-flops?token={token}", timeout=5) as r:
            assert b"01-flops.ipynb" in r.read()  # serves notebooks/
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode is not None  # stopped

"""`make lab` serves a student's own copies of the labs; `make lab-instructor` the course root with
the formgrader. Each is started on a free port (no browser), fetched over HTTP, and stopped."""
import json
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


class Server:
    def __init__(self, tmp_path, *make_args):
        self.port, self.token = _free_port(), "labkit-test-token"
        env = {**os.environ, "JUPYTER_TOKEN": self.token, "JUPYTER_DATA_DIR": str(tmp_path / "data"),
               "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
        self.proc = subprocess.Popen(["make", "-s", *make_args, f"PORT={self.port}", "NO_BROWSER=1"], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str, timeout: float = 180) -> bytes:
        deadline, last = time.time() + timeout, None
        while time.time() < deadline and self.proc.poll() is None:
            try:
                sep = "&" if "?" in path else "?"
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}{sep}token={self.token}", timeout=10) as r:
                    return r.read()
            except OSError as e:
                last = e
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"no answer for {path} on port {self.port}: {last}; exit code {self.proc.poll()}\n"
                    + self.proc.communicate(timeout=20)[0].decode()[-3000:])

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_make_lab_serves_the_student_s_own_copies(tmp_path):
    work = tmp_path / "mywork"
    srv = Server(tmp_path, "lab", f"WORKSPACE={work}")
    try:
        assert b"JupyterLab" in srv.get("/lab")
        assert b"01-flops.ipynb" in srv.get("/api/contents/01-flops")
        # the kernel `make lab` registers for the course, named in every copy
        assert (tmp_path / "data" / "kernels" / "labkit" / "kernel.json").exists()
        nb = json.loads(srv.get("/api/contents/01-flops/01-flops.ipynb"))["content"]
        text = json.dumps(nb)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "NotImplementedError" in text
        assert nb["metadata"]["kernelspec"]["name"] == "labkit"
    finally:
        srv.stop()
    # the student's edits are never overwritten by the next `make lab`
    mine = work / "01-flops" / "01-flops.ipynb"
    mine.write_text(mine.read_text().replace("raise NotImplementedError()", "return 42  # mine", 1))
    p = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "labkit.grading", "workspace", "--dest", str(work)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "01-flops: kept yours" in p.stdout, p.stdout + p.stderr
    assert "return 42  # mine" in mine.read_text()


def test_make_lab_instructor_serves_the_sources_and_the_formgrader(tmp_path):
    srv = Server(tmp_path, "lab-instructor")
    try:
        assert b"01-flops.ipynb" in srv.get("/api/contents/notebooks/01-flops")
        assert b"formgrader" in srv.get("/formgrader").lower()  # nbgrader's page, not a 500
    finally:
        srv.stop()

"""The README's cluster workflows, submitted with sbatch to a real SLURM, exactly as written there.

CI starts a 2-node CPU-only cluster on its own host (.ci/slurm-cluster.sh): nodes n1 and n2, no
GPUs, so the scripts' `#SBATCH --gres=gpu:N` lines are refused and every submission adds the
README's CPU-partition flag `--gres=none`. Elsewhere (a laptop without SLURM) these tests skip;
in CI (CI=true) a SLURM that is not there is a failure, never a skip.
"""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration
CPU = "--gres=none"  # the README's flag for a CPU partition


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = None
    if not shutil.which("sbatch"):
        why = "no SLURM here (sbatch not on PATH); CI starts one with .ci/slurm-cluster.sh up"
    else:
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
        if p.returncode != 0 or "idle" not in p.stdout and "mix" not in p.stdout:
            why = f"SLURM is installed but has no idle node: sinfo says {p.stdout.strip() or p.stderr.strip()!r}"
    if why and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the SLURM tests: {why}")
    if why:
        pytest.skip(why)


def sbatch(*args, cwd=REPO, env=None, wait=True, timeout=900):
    """Submit like a user at a shell prompt; with wait, wait for the job to end; return (job id,
    exit code: the job's, or sbatch's own without wait). Waiting polls scontrol every half second:
    `sbatch --wait` polls at growing intervals (up to 10 s here), which cost ~20 s per job."""
    cmd = ["sbatch", *args]
    p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
    m = re.search(r"Submitted batch job (\d+)", p.stdout)
    assert m, f"{' '.join(cmd)} was not accepted: {p.stdout}{p.stderr}"
    job = m.group(1)
    if not wait:
        return job, p.returncode
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # an array job's tasks are listed one by one: the job has ended when none is left pending or running
        info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        states = re.findall(r"JobState=(\w+)", info)
        if states and not any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in states):
            codes = [int(c) for c in re.findall(r"\bExitCode=(\d+):\d+", info)]
            return job, max(codes, default=0) or (0 if all(s == "COMPLETED" for s in states) else 1)
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not end within {timeout} s")


def job_log(cwd: Path, prefix: str, job: str) -> str:
    path = cwd / f"{prefix}-{job}.log"
    return path.read_text() if path.exists() else f"(no log at {path})"


def test_gpu_request_is_refused_on_a_cpu_partition_so_the_readme_flag_exists():
    p = subprocess.run(["sbatch", "scripts/run_notebook.sbatch", "notebooks/01-flops/01-flops.ipynb"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "gres" in p.stderr.lower(), p.stdout + p.stderr


def test_batch_notebook_runs_and_keeps_the_executed_copy():
    # README: QUICK=True sbatch scripts/run_notebook.sbatch notebooks/01-flops/01-flops.ipynb
    job, rc = sbatch(CPU, "scripts/run_notebook.sbatch", "notebooks/01-flops/01-flops.ipynb", env={"QUICK": "true"})
    log = job_log(REPO, "labkit-notebook", job)
    out = REPO / "runs" / f"01-flops-{job}.ipynb"
    try:
        assert rc == 0, log[-4000:]
        assert f"job {job} on n" in log and "QUICK=True" in log and "0 GPU(s)" in log
        nb = nbformat.read(out, 4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots are kept
        params = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert params and "QUICK = True" in params[0].source  # "true" is normalised, not a string
    finally:
        out.unlink(missing_ok=True)
        (REPO / f"labkit-notebook-{job}.log").unlink(missing_ok=True)


def test_batch_script_finds_the_kit_from_any_folder_and_says_what_is_missing(tmp_path):
    # submitted from elsewhere by its absolute path: the kit is found from the job's command
    job, rc = sbatch(CPU, str(REPO / "scripts" / "run_notebook.sbatch"), "nope.ipynb", cwd=tmp_path)
    log = job_log(tmp_path, "labkit-notebook", job)
    assert rc != 0 and f"no notebook nope.ipynb (looked in {tmp_path} and {REPO})" in log, log
    # a kit without .venv (an offline node cannot install): one clear line, not a pip error
    kit = tmp_path / "kit"
    (kit / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "slurm_env.sh", kit / "scripts")
    job, rc = sbatch(CPU, str(REPO / "scripts" / "run_notebook.sbatch"), "x.ipynb", cwd=tmp_path,
                     env={"LABKIT_REPO": str(kit)})
    log = job_log(tmp_path, "labkit-notebook", job)
    assert rc != 0 and f"no .venv in {kit}" in log and "make install" in log, log
    # a bad QUICK is refused before anything runs
    job, rc = sbatch(CPU, str(REPO / "scripts" / "run_notebook.sbatch"), "x.ipynb", cwd=tmp_path,
                     env={"QUICK": "ture"})
    assert rc != 0 and "QUICK must be True or False" in job_log(tmp_path, "labkit-notebook", job)


@pytest.mark.parametrize("nodes", [1, 2])
def test_ddp_training_on_one_and_two_nodes(nodes):
    # README: sbatch scripts/train_ddp.sbatch (2 nodes) / sbatch --nodes=1 scripts/train_ddp.sbatch
    args = [CPU] + (["--nodes=1"] if nodes == 1 else []) + ["scripts/train_ddp.sbatch"]
    job, rc = sbatch(*args, env={"STEPS": "4"})
    log = job_log(REPO, "labkit-ddp", job)
    out = REPO / "runs" / f"train_ddp-{job}.json"
    try:
        assert rc == 0, log[-4000:]
        rec = json.loads(out.read_text())
        procs = min(os.cpu_count(), 4)  # CPU partition: one gloo process per core, up to 4
        assert rec["nodes"] == nodes and rec["nodelist"] in (["n1", "n2"] if nodes == 1 else ["n[1-2]"])
        assert rec["processes_per_node"] == procs and rec["world_size"] == nodes * procs
        assert rec["backend"] == "gloo" and rec["slurm_job_id"] == job and rec["steps"] == 4
        assert rec["devices"].startswith(f"{nodes * procs} x CPU")
        assert f"--nnodes={nodes} --nproc_per_node={procs}" in rec["command"] and rec["command"].startswith("srun")
        port = 20000 + int(job) % 10000  # from the job id: two jobs on a node never share a store
        assert f"--master_addr=n1 --master_port={port}" in rec["command"]
        assert f"{nodes} node(s) x {procs} CPU processes (gloo)" in log
        assert "Traceback" not in log, log[-4000:]
    finally:
        out.unlink(missing_ok=True)
        (REPO / f"labkit-ddp-{job}.log").unlink(missing_ok=True)


def test_jupyterlab_on_a_compute_node():
    # README: sbatch scripts/lab.sbatch, then the log gives the tunnel and the URL
    job, _ = sbatch(CPU, "scripts/lab.sbatch", wait=False, timeout=60)
    try:
        deadline, url, log = time.time() + 120, None, ""
        while time.time() < deadline and url is None:
            log = job_log(REPO, "labkit-lab", job)
            m = re.search(r"http://localhost:(\d+)/lab\?token=(\w+)", log)
            if m:
                url = m.group(0)
            time.sleep(1)
        assert url, log
        assert re.search(rf"ssh -N -L {m.group(1)}:localhost:{m.group(1)} -J \S+@\S+ \S+@n[12]", log), log
        body = None
        while time.time() < deadline and body is None:
            try:  # the node's loopback: the tunnel's far end
                with urllib.request.urlopen(url.replace("localhost", "127.0.0.1"), timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(1)
        assert body and "JupyterLab" in body, job_log(REPO, "labkit-lab", job)[-3000:]
        api = url.replace("localhost", "127.0.0.1").replace("/lab?", "/api/contents/01-flops?")
        with urllib.request.urlopen(api, timeout=10) as r:
            assert b"01-flops.ipynb" in r.read()  # serves notebooks/
    finally:
        subprocess.run(["scancel", job], timeout=30)
        for _ in range(30):
            if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(1)
        (REPO / f"labkit-lab-{job}.log").unlink(missing_ok=True)


def test_grading_as_a_job_array(tmp_path):
    # README: sbatch --array=0-1 scripts/grade.sbatch LAB; each task grades its share of the hand-ins
    from labkit import grading
    from test_grading_targets import LAB, _lab
    course = tmp_path / "course"
    (course / "notebooks" / LAB).mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", course)
    nbformat.write(_lab(), course / "notebooks" / LAB / f"{LAB}.ipynb")
    release = grading.release(LAB, course) / f"{LAB}.ipynb"
    students = ["ann", "bo"]
    for s in students:
        grading.submit(LAB, s, release, course)
    job, rc = sbatch(CPU, "--array=0-1", "scripts/grade.sbatch", LAB, "--timeout", "60",
                     env={"LABKIT_COURSE": str(course)})
    logs = {k: job_log(REPO, "labkit-grade", f"{job}_{k}") for k in (0, 1)}
    try:
        assert rc == 0, logs
        for k, log in logs.items():
            assert f"task {k} of 2" in log and f"course {course}" in log, log[-3000:]
        # the table rows each task printed: task 0 graded ann, task 1 bo; every hand-in once
        rows = {k: {ln.split()[0] for ln in log.splitlines() if ln.split() and ln.split()[0] in students}
                for k, log in logs.items()}
        assert rows == {0: {"ann"}, 1: {"bo"}}, logs
        results = grading.scores(LAB, course)
        assert sorted(results) == students
        assert all(r.status in grading.SCORED and r.score == 0 for r in results.values()), results
    finally:
        for k in (0, 1):
            (REPO / f"labkit-grade-{job}_{k}.log").unlink(missing_ok=True)

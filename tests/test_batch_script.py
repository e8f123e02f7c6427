"""The batch script runs a lab notebook with papermill and keeps the executed copy (QUICK here)."""
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_sbatch_script_executes_notebook_and_keeps_it(tmp_path):
    env = {**os.environ, "QUICK": "True", "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": f"test{os.getpid()}"}
    p = subprocess.run(["bash", "scripts/run_notebook.sbatch", "notebooks/01-flops/01-flops.ipynb"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = REPO / "runs" / f"01-flops-test{os.getpid()}.ipynb"
    try:
        nb = nbformat.read(out, 4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots are kept
        params = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert params and "QUICK = True" in params[0].source
    finally:
        out.unlink(missing_ok=True)

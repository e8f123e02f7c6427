"""Every Triton kernel the kit ships compiles for an A100 (sm_80) and an H100 (sm_90), fits their
shared memory and spills no register, checked on a machine without a GPU
(scripts/compile_kernels.py: Triton's compiler and the ptxas in its wheel, in a separate process
where labkit.kernels believes a GPU is present)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "report.json"
    p = subprocess.run([sys.executable, "scripts/compile_kernels.py", "--targets", "80,90", "--shipped", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    if not out.exists():
        pytest.fail(f"compile_kernels.py wrote no report (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p, json.loads(out.read_text())


def test_every_kernel_compiles_fits_and_does_not_spill_on_a100_and_h100(report):
    p, rep = report
    assert rep["problems"] == [] and p.returncode == 0, "\n".join(rep["problems"]) or p.stderr[-3000:]


def test_the_report_covers_every_kernel_dtype_and_autotune_config(report):
    sys.path.insert(0, str(REPO))
    _, rep = report
    cases = {r["case"] for r in rep["rows"]}
    for kernel in ("add", "bias_gelu", "bias_add (unfused)", "gelu (unfused)", "softmax row", "softmax online", "matmul",
                   "lab 02 add_kernel", "lab 02 softmax_kernel", "lab 02 online_softmax_kernel", "lab 02 bias_gelu_kernel"):
        for dt in ("fp32", "fp16", "bf16"):
            assert any(c.startswith(f"{kernel} {dt}") for c in cases), (kernel, dt)
    assert {r["target"] for r in rep["rows"]} == {"sm_80", "sm_90"}
    assert all(r.get("regs") for r in rep["rows"]), "ptxas's report was read for every compilation"


def test_labkit_s_shared_memory_bound_never_exceeds_the_compiler_s(report):
    # kernels.check_tile refuses a tile before launch when this lower bound is past the limit:
    # it must never refuse a tile that fits
    _, rep = report
    rows = [r for r in rep["rows"] if "shared_estimate" in r and "error" not in r]
    assert len(rows) > 30
    for r in rows:
        assert r["shared_estimate"] <= r["shared_bytes"], r
    exact = [r for r in rows if r["target"] == "sm_80" and r["shared_estimate"] == r["shared_bytes"]]
    assert len(exact) >= len(rows) // 2 - 2, "tight on the A100, where the limit bites"

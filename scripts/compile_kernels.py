"""Compile every Triton kernel the course ships for real GPUs, on a machine without one.

Students run these kernels compiled on a cluster's A100s and H100s; CI has no GPU and runs them in
Triton's interpreter, which checks what they compute but not whether they compile for a GPU,
fit its shared memory, or spill registers. This script compiles each kernel of labkit.kernels
(with the argument types, tile sizes, warps and stages the kit launches it with: every autotune
config, every dtype), and the kernels of lab 02's instructor solutions, ahead of time for each target, with the ptxas that ships in Triton's wheel,
and reads ptxas's report: registers per thread, bytes spilled, shared memory.

    python scripts/compile_kernels.py                  # sm_80 (A100) and sm_90 (H100); a table
    python scripts/compile_kernels.py --targets 75,80,90 --json report.json

It fails (exit 1) on a compile error, on shared memory above the target's limit, or on any spill
in a configuration the kit ships (tiles a student may pass to matmul(block=...) are compiled and
their spills reported; kernels.check_tile warns the student about those). Alignment: pointers 16-byte aligned and sizes multiples of 16,
unit strides specialised to 1, as Triton's launcher specialises them for contiguous tensors of
the usual sizes.
"""
import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)   # compile for a GPU, not the interpreter
import torch  # noqa: E402

torch.cuda.is_available = lambda: True     # so that labkit.kernels defines its GPU kernels and configs
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from labkit import kernels as K  # noqa: E402

# Shared memory one block may use (bytes), per compute capability: CUDA programming guide, table
# "Technical Specifications per Compute Capability" (7.5: 64 KB; 8.0: 163 KB; 9.0: 227 KB).
SHARED_LIMIT = {75: 64 * 1024, 80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
NAMES = {75: "T4", 80: "A100", 86: "RTX 30xx / A10", 89: "L4 / RTX 40xx", 90: "H100"}
DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
EXERCISE = "exercise tile: spills reported, not a failure"  # tiles students may pass, not shipped


def cases():
    """(label, jit function, signature, constexprs, aligned args, num_warps, num_stages): every
    launch configuration of labkit.kernels."""
    for dt in DTYPES:
        p = f"*{dt}"
        yield (f"add {dt} BLOCK=1024", K._add_kernel, {"x_ptr": p, "y_ptr": p, "out_ptr": p, "n": "i32"},
               {"BLOCK": 1024}, ["x_ptr", "y_ptr", "out_ptr", "n"], 4, 3)
        yield (f"bias_gelu {dt} BLOCK=1024", K._bias_gelu_kernel,
               {"x_ptr": p, "b_ptr": p, "out_ptr": p, "n": "i32", "n_cols": "i32"},
               {"BLOCK": 1024}, ["x_ptr", "b_ptr", "out_ptr", "n", "n_cols"], 4, 3)
        yield (f"bias_add (unfused) {dt} BLOCK=1024", K._bias_add_kernel,
               {"x_ptr": p, "b_ptr": p, "out_ptr": p, "n": "i32", "n_cols": "i32"},
               {"BLOCK": 1024}, ["x_ptr", "b_ptr", "out_ptr", "n", "n_cols"], 4, 3)
        yield (f"gelu (unfused) {dt} BLOCK=1024", K._gelu_kernel, {"z_ptr": p, "out_ptr": p, "n": "i32"},
               {"BLOCK": 1024}, ["z_ptr", "out_ptr", "n"], 4, 3)
        for block in (1024, 4096, K.MAX_SINGLE_BLOCK):  # softmax(): 4 warps up to 2048, else 8
            yield (f"softmax row {dt} BLOCK={block}", K._softmax_row_kernel,
                   {"x_ptr": p, "y_ptr": p, "n_cols": "i32", "sx": "i32", "sy": "i32"}, {"BLOCK": block},
                   ["x_ptr", "y_ptr", "n_cols", "sx", "sy"], 4 if block <= 2048 else 8, 3)
        yield (f"softmax online {dt} BLOCK=2048", K._softmax_online_kernel,
               {"x_ptr": p, "y_ptr": p, "n_cols": "i32", "sx": "i32", "sy": "i32"}, {"BLOCK": 2048},
               ["x_ptr", "y_ptr", "n_cols", "sx", "sy"], 8, 3)
        mm = {"a_ptr": p, "b_ptr": p, "c_ptr": p, "M": "i32", "N": "i32", "K": "i32",
              "sam": "i32", "sbk": "i32", "scm": "i32"}
        unit = {"sak": 1, "sbn": 1, "scn": 1, "IEEE": dt == "fp32"}  # contiguous: unit strides
        aligned = ["a_ptr", "b_ptr", "c_ptr", "M", "N", "K", "sam", "sbk", "scm"]
        for cfg in K.matmul_configs(dt):
            kw = cfg.kwargs
            yield (f"matmul {dt} {kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']} w{cfg.num_warps} s{cfg.num_stages}",
                   K._matmul_kernel, mm, {**kw, **unit}, aligned, cfg.num_warps, cfg.num_stages)
        for bm, bn, bk in ((32, 32, 32), (128, 128, 32), (128, 256, 32)):  # matmul(block=...): the default, and
            warps = 4 if bm * bn < 128 * 128 else 8                      # tiles a tuning exercise may pass
            what = "fixed tile" if bm == 32 else EXERCISE
            yield (f"matmul {dt} block=({bm}, {bn}, {bk}) ({what})", K._matmul_kernel, mm,
                   {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, **unit}, aligned, warps, 3)


def lab_cases(lab: str = "02-kernels"):
    """The kernels of a lab's instructor solutions (cells with @triton.jit), as students launch them:
    what a student's correct kernel must compile to on the cluster's GPUs."""
    import nbformat
    import triton.language as tl
    nb = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / lab / f"{lab}.ipynb", 4)
    ns = {"triton": triton, "tl": tl, "torch": torch, "kernels": K}
    import linecache
    for cell in nb.cells:
        if cell.cell_type == "code" and "@triton.jit" in cell.source and cell.metadata.get("nbgrader", {}).get("solution"):
            name = f"<{lab} {cell.metadata['nbgrader']['grade_id']}>"
            # @triton.jit reads its function's source, as IPython makes it readable for a notebook's cells
            linecache.cache[name] = (len(cell.source), None, cell.source.splitlines(True), name)
            exec(compile(cell.source, name, "exec"), ns)
    for dt in DTYPES:
        p = f"*{dt}"
        rows = {"x_ptr": p, "y_ptr": p, "n_cols": "i32", "x_row_stride": "i32", "y_row_stride": "i32"}
        yield (f"lab {lab[:2]} add_kernel {dt} BLOCK=256", ns["add_kernel"],
               {"x_ptr": p, "y_ptr": p, "out_ptr": p, "n": "i32"}, {"BLOCK": 256}, ["x_ptr", "y_ptr", "out_ptr"], 4, 3)
        for block in (1024, 8192):
            yield (f"lab {lab[:2]} softmax_kernel {dt} BLOCK={block}", ns["softmax_kernel"], rows, {"BLOCK": block},
                   ["x_ptr", "y_ptr", "n_cols", "x_row_stride", "y_row_stride"], 4, 3)
        yield (f"lab {lab[:2]} online_softmax_kernel {dt} BLOCK=256", ns["online_softmax_kernel"], rows, {"BLOCK": 256},
               ["x_ptr", "y_ptr", "x_row_stride", "y_row_stride"], 4, 3)
        yield (f"lab {lab[:2]} bias_gelu_kernel {dt} BLOCK=1024", ns["bias_gelu_kernel"],
               {"x_ptr": p, "b_ptr": p, "out_ptr": p, "n": "i32", "n_cols": "i32"}, {"BLOCK": 1024},
               ["x_ptr", "b_ptr", "out_ptr", "n", "n_cols"], 4, 3)
    mm = {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32", **{a: "i32" for a in ("M", "N", "K", "sam", "sak", "sbk", "sbn", "scm", "scn")}}
    for bm, bn, bk in ((32, 32, 16), (64, 64, 32)):   # the exercise's fp32 kernel (IEEE products), as my_matmul launches it
        yield (f"lab {lab[:2]} matmul_kernel fp32 {bm}x{bn}x{bk}", ns["matmul_kernel"], mm,
               {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, ["a_ptr", "b_ptr", "c_ptr"], 4, 3)


def compile_one(fn, signature, constexprs, aligned, warps, stages, cap):
    """Compile for compute capability `cap`; return {"regs", "spill_bytes", "shared_bytes", "seconds"}."""
    sig = {name: signature.get(name, "constexpr") for name in fn.arg_names}
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    src = ASTSource(fn, sig, constexprs=constexprs, attrs=attrs)
    knobs.nvidia.dump_ptxas_log = True   # ptxas -v's report, printed by Triton's backend
    knobs.compilation.always_compile = True  # a cached kernel would skip ptxas, and its report
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        k = triton.compile(src, target=GPUTarget("cuda", cap, 32), options={"num_warps": warps, "num_stages": stages})
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
    return {"regs": int(regs.group(1)) if regs else None, "spill_bytes": max(spills, default=0),
            "shared_bytes": int(k.metadata.shared), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="80,90", help="compute capabilities, comma-separated (default 80,90)")
    ap.add_argument("--only", default=None, help="only cases whose label contains this text")
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--shipped", action="store_true", help="only what the kit launches itself (not the exercise tiles)")
    a = ap.parse_args(argv)
    caps = [int(c) for c in a.targets.split(",")]
    for c in caps:
        if c not in SHARED_LIMIT:
            ap.error(f"--targets: {c} is not one of {sorted(SHARED_LIMIT)}")
    rows, problems = [], []
    todo = [c for c in [*cases(), *lab_cases()] if (a.only is None or a.only in c[0]) and not (a.shipped and EXERCISE in c[0])]
    for cap in caps:
        for label, fn, sig, const, aligned, warps, stages in todo:
            row = {"target": f"sm_{cap}", "gpu": NAMES[cap], "case": label}
            if fn is K._matmul_kernel:  # labkit's lower bound, which check_tile uses before a launch
                size = {"*fp32": 4, "*fp16": 2, "*bf16": 2}[sig["a_ptr"]]
                row["shared_estimate"] = K.tile_shared_bytes((const["BLOCK_M"], const["BLOCK_N"], const["BLOCK_K"]),
                                                             size, stages)
            try:
                row.update(compile_one(fn, sig, const, aligned, warps, stages, cap))
            except Exception as e:  # a compile error is a finding, not a crash of the report
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                problems.append(f"sm_{cap} {label}: does not compile: {row['error']}")
            else:
                if row["shared_bytes"] > SHARED_LIMIT[cap]:
                    problems.append(f"sm_{cap} {label}: needs {row['shared_bytes'] / 1024:.0f} KiB of shared memory, "
                                    f"the {NAMES[cap]} has {SHARED_LIMIT[cap] / 1024:.0f} KiB per block")
                if row["spill_bytes"] and EXERCISE not in label:
                    problems.append(f"sm_{cap} {label}: spills {row['spill_bytes']} bytes per thread")
            rows.append(row)
            print(f"sm_{cap} {label:48s} " + (row.get("error") or
                  f"{row['regs']:>3} regs  {row['spill_bytes']:>5} B spilled  {row['shared_bytes'] / 1024:6.1f} KiB shared  "
                  f"{row['seconds']:.1f} s"), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"triton": triton.__version__, "rows": rows, "problems": problems}, indent=1))
    print(f"\n{len(rows)} compilations for {', '.join(f'sm_{c} ({NAMES[c]})' for c in caps)}: "
          + ("no problem" if not problems else f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

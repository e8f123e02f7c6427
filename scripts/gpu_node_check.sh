#!/usr/bin/env bash
# One time-boxed pass over labkit's GPU paths on a GPU node whose Python already has torch
# (a site image, or the course .venv): what it ran, what it measured, and where it failed.
#
#   bash scripts/gpu_node_check.sh [OUTDIR]      # default OUTDIR: runs/gpu-check
#   PY=.venv/bin/python bash scripts/gpu_node_check.sh
#   SKIP='record_sparse|07-parallel' NOTEBOOKS='notebooks/01-flops/01-flops.ipynb' NB_LIMIT=60 bash scripts/gpu_node_check.sh
#
# 1. the machine (nvidia-smi, versions); 2. the recordings the labs show to students without a
# GPU (scripts/bench_kernels.py --quick, record_sparse.py, record_energy.py: data/measurements/);
# 3. the GPU-marked tests; 4. every lab's code cells in quick mode on the GPU, through
# scripts/run_plain.py (no Jupyter needed). Each step has its own time limit and a failure does
# not stop the next; the last lines are a table of steps, exit codes and seconds.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu-check}}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
summary=()
step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    if [[ -n "${SKIP:-}" && "$name" =~ ^(${SKIP})$ ]]; then summary+=("$(printf '%-28s skipped (SKIP)' "$name")"); return; fi
    local t0=$SECONDS
    echo "=== $name (limit ${limit} s): $*"
    timeout -k 5 "$limit" "$@" 2>&1
    local rc=$?
    summary+=("$(printf '%-28s rc=%-3s %4d s' "$name" "$rc" $((SECONDS - t0)))")
}
{
    step machine 30 bash -c "nvidia-smi; $PY -c 'import torch, triton, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())'"
    step bench_kernels 150 $PY scripts/bench_kernels.py --quick
    step record_sparse 60 $PY scripts/record_sparse.py
    step record_energy 100 $PY scripts/record_energy.py
    cp data/measurements/*.json "$OUT"/ 2>/dev/null
    step probe_targets 90 $PY scripts/probe_gpu_targets.py
    step gpu_tests 150 $PY -m pytest -m gpu -q -p no:cacheprovider tests --continue-on-collection-errors
    for nb in ${NOTEBOOKS:-notebooks/*/*.ipynb}; do
        step "$(basename "$nb" .ipynb)" "${NB_LIMIT:-75}" $PY scripts/run_plain.py "$nb" --budget "${NB_LIMIT:-75}" --keep-going
    done
    echo "=== summary"
    printf '%s\n' "${summary[@]}"
} 2>&1 | tee "$OUT/gpu-check.log"

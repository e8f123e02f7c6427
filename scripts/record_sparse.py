"""Time 2:4 semi-structured sparsity on this GPU's sparse tensor cores and record it to data/measurements/.

    python scripts/record_sparse.py        # on a CUDA node of compute capability >= 8.0

Records data/measurements/sparse-2-4-<gpu>.json with provenance: for a few fp16 layer shapes,
dense vs 2:4 (torch.sparse.to_sparse_semi_structured) times and the speed-up, each weight checked
to round-trip exactly. Lab 05 shows it to students without such a GPU.
"""
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import prune, record  # noqa: E402

# (rows, cols, batch): an MLP's up and down projections at two widths, and the shape PyTorch's
# semi-structured tutorial times
SHAPES = [(4096, 1024, 4096), (1024, 4096, 4096), (16384, 4096, 4096), (4096, 16384, 4096), (10240, 3072, 3072)]


def main() -> None:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        raise SystemExit("2:4 sparse tensor cores need a CUDA GPU of compute capability >= 8.0: nothing to record")
    rows = []
    for r, c, b in SHAPES:
        rows.append(prune.semi_structured_speedup(r, c, b))
        print(f"{r} x {c} weight, batch {b}: dense {rows[-1]['dense_s'] * 1e6:.0f} us, "
              f"2:4 {rows[-1]['sparse_2_4_s'] * 1e6:.0f} us -> {rows[-1]['speedup']:.2f}x")
    name = "sparse-2-4-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    print("recorded to", record.save(name, rows, device="cuda", command="python scripts/record_sparse.py"))


if __name__ == "__main__":
    main()

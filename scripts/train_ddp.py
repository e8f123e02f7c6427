"""Data-parallel training of the tiny GPT with torch DDP, started by torchrun (one process per GPU,
or per CPU core with gloo).

    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py --steps 50         # one machine
    sbatch scripts/train_ddp.sbatch                                                  # SLURM, many nodes

Every rank builds the same model (same seed), wraps it in DistributedDataParallel and trains with
labkit.models.train_lm on its own random batches (seed + rank); DDP averages the gradients. The
global batch is --batch × world size. Rank 0 prints the throughput and writes a JSON record
(tokens/s, seconds per step, world size, backend, machine) to --out.
"""
import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models, record  # noqa: E402
from labkit.device import describe_machine  # noqa: E402
from labkit.seed import seed_everything  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16, help="windows of 128 tokens per rank per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/train_ddp.json"))
    args = ap.parse_args()
    if "RANK" not in os.environ:
        sys.exit("start me with torchrun, e.g. torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py")
    from torch.nn.parallel import DistributedDataParallel as DDP
    from transformers import GPT2Config, GPT2LMHeadModel

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    # one GPU per process, or CPU processes on gloo when this node has fewer GPUs than processes
    cuda = torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(1)          # one core per rank
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")

    tok = models.load_tokenizer()
    train_ids = torch.tensor(tok(data.load_corpus("train"))["input_ids"])
    seed_everything(args.seed)                # the same initial weights on every rank
    model = GPT2LMHeadModel(GPT2Config.from_json_file(models.TINY_GPT_DIR / "config.json")).to(device)
    ddp = DDP(model, device_ids=[local_rank] if cuda else None)
    t0 = time.time()
    log = models.train_lm(ddp, train_ids, args.steps, batch=args.batch, seed=args.seed + rank,
                          log_every=max(1, args.steps // 10), progress=rank == 0, desc=f"DDP x{world}")
    seconds = time.time() - t0
    dist.barrier()
    if rank == 0:
        tokens = args.steps * args.batch * world * model.config.n_positions
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        # the launcher's exact command when a batch script set it, else torchrun's equivalent
        command = os.environ.get("LABKIT_COMMAND") or record.command_line(
            f"torchrun --nnodes={world // local} --nproc_per_node={local}")
        # (no all_gather_object here: a gloo collective on Python objects at the very end can
        # deadlock the process group's teardown at exit in torch 2.13)
        rec = {"nodes": world // local, "nodelist": os.environ.get("SLURM_JOB_NODELIST", socket.gethostname()),
               "processes_per_node": local, "world_size": world, "backend": dist.get_backend(),
               "devices": f"{world} x {describe_machine(device).split(' | ')[0]}",
               "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "steps": args.steps,
               "global_batch_windows": args.batch * world, "seconds": round(seconds, 2),
               "seconds_per_step": round(seconds / args.steps, 4), "tokens_per_s": round(tokens / seconds, 1),
               "final_train_loss": log[-1]["train_loss"],
               **record.provenance(device, command=command)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=2) + "\n")
        print(json.dumps(rec, indent=2))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Train the course's small CNN on the Fashion-MNIST subset, on a CPU, reproducibly.

    python scripts/train_cnn.py        # about a minute on the 2-core course machine

labkit.models.SmallCNN (421 k parameters), Adam with a cosine schedule, batches of 128,
random horizontal flips; the checkpoint goes to data/cnn/model.safetensors with the
training log and the test accuracy in data/cnn/provenance.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models, record  # noqa: E402
from labkit.seed import seed_everything  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=models.CNN_DIR)
    args = ap.parse_args()
    from safetensors.torch import save_file

    seed_everything(args.seed)
    ds = data.load_fashion_mnist()
    x, y = ds.tensors("train")
    x_test, y_test = ds.tensors("test")
    model = models.SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (len(x) + 127) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    log, t0 = [], time.time()
    for epoch in tqdm(range(args.epochs), desc="training CNN", unit="epoch"):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.append({"epoch": epoch + 1, "train_loss": round(total / len(x), 4),
                    "test_accuracy": round(models.accuracy(model, x_test, y_test), 4),
                    "seconds": round(time.time() - t0, 1)})
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "model.safetensors"))
    prov = {"model": "labkit.models.SmallCNN", "parameters": sum(p.numel() for p in model.parameters()),
            "data": "data/fashion_mnist (12000 train / 2000 test, see its provenance.json)",
            "training": {"epochs": args.epochs, "batch": 128, "lr": args.lr, "seed": args.seed,
                         "augmentation": "random horizontal flip", "seconds": round(time.time() - t0, 1)},
            "test_accuracy": log[-1]["test_accuracy"], "train_accuracy": round(models.accuracy(model, x, y), 4),
            "log": log, **record.provenance("cpu")}
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps({k: v for k, v in prov.items() if k != "log"}, indent=2))


if __name__ == "__main__":
    main()

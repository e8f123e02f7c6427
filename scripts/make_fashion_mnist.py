"""Build the Fashion-MNIST subset in data/fashion_mnist/ from Debian's dataset-fashion-mnist package.

    python scripts/make_fashion_mnist.py     # uses the installed package, or fetches its .deb with apt-get

Fashion-MNIST (Zalando Research, MIT licence): 28×28 greyscale images of 10 kinds of clothing.
The subset keeps, per class, 1200 random images of the official training set and 200 of the
official test set (seeded), as uint8 arrays in one compressed .npz (about 6 MB).
"""
import datetime as dt
import gzip
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "data" / "fashion_mnist"
INSTALLED = Path("/usr/share/datasets/fashion-mnist")
PER_CLASS = {"train": 1200, "test": 200}
SEED = 0


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dimensions, then uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def source_dir(tmp: Path) -> tuple[Path, str]:
    """The folder holding the idx files, and the package version they come from."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dataset-fashion-mnist"],
                             capture_output=True, text=True).stdout
    if INSTALLED.exists() and version:
        return INSTALLED, version
    subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, check=True)
    deb = next(tmp.glob("dataset-fashion-mnist_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
    return tmp / "root" / INSTALLED.relative_to("/"), deb.name.split("_")[1]


def subset(x: np.ndarray, y: np.ndarray, per_class: int, rng) -> tuple[np.ndarray, np.ndarray]:
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)])
    keep = rng.permutation(keep)
    return x[keep], y[keep].astype(np.int64)


def main() -> None:
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        src, version = source_dir(Path(tmp))
        sets = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            x = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
            y = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
            assert x.shape[1:] == (28, 28) and len(x) == len(y)
            sets[f"x_{split}"], sets[f"y_{split}"] = subset(x, y, PER_CLASS[split], rng)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "fashion_mnist_subset.npz"
    np.savez_compressed(path, **sets)
    prov = {"source": f"Debian package dataset-fashion-mnist {version} (Fashion-MNIST, Zalando Research, MIT licence)",
            "subset": {k: f"{v} images per class, seed {SEED}" for k, v in PER_CLASS.items()},
            "shapes": {k: list(v.shape) for k, v in sets.items()},
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python scripts/make_fashion_mnist.py"}
    (OUT / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()

"""The course's datasets, all shipped in data/ (or in installed packages): nothing is downloaded.

- load_corpus(split): the King James Version text (Debian bible-kjv-text), train / held-out.
- load_fashion_mnist(): a Fashion-MNIST subset (Debian dataset-fashion-mnist), uint8 images.
- load_digits(): scikit-learn's bundled 8×8 digits, a fallback image set that needs no file.
Each loader names the missing file and the command that makes it when something is absent.
"""
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"
SPLITS = ("train", "heldout")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def require(path: Path, command: str) -> Path:
    """Return path if it exists; otherwise raise FileNotFoundError naming the command that makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; create it with: {command}")
    return path


def load_corpus(split: str = "train") -> str:
    """The corpus text of `split` ("train" or "heldout"): 1130 and 59 chapters of the KJV."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = require(DATA / "corpus" / f"kjv-{split}.txt.xz", "python scripts/make_corpus.py")
    return lzma.decompress(path.read_bytes()).decode()


@dataclass
class ImageSet:
    """Images as uint8 arrays (N, H, W) with integer labels (N,), split into train and test."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    def tensors(self, split: str = "train"):
        """(x, y) as torch tensors: x float32 in [0, 1] with a channel axis (N, 1, H, W), y int64."""
        import torch
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return torch.from_numpy(x).float().div_(255).unsqueeze(1), torch.from_numpy(y).long()


def load_fashion_mnist() -> ImageSet:
    """The Fashion-MNIST subset in data/fashion_mnist/ (28×28 uint8; see its provenance.json)."""
    path = require(DATA / "fashion_mnist" / "fashion_mnist_subset.npz", "python scripts/make_fashion_mnist.py")
    with np.load(path) as z:
        return ImageSet(z["x_train"], z["y_train"], z["x_test"], z["y_test"], FASHION_CLASSES)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageSet:
    """scikit-learn's bundled digits (1797 images, 8×8, 17 grey levels scaled to uint8 0..255)."""
    from sklearn.datasets import load_digits as sk_digits
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    d = sk_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return ImageSet(x[train], d.target[train], x[test], d.target[test], tuple(str(i) for i in range(10)))


def provenance(name: str) -> dict:
    """The provenance record of a dataset folder in data/ ("corpus", "fashion_mnist", "tiny_gpt", "bitnet_gpt", "cnn")."""
    path = require(DATA / name / "provenance.json", f"the script named in data/README.md for {name}")
    return json.loads(path.read_text())

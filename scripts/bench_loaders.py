"""Time every data and model loader of labkit (seconds, median of 3 in this process).

    python scripts/bench_loaders.py

The first line per loader includes importing its libraries (what a fresh notebook pays once);
the median is the steady cost of the call itself.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models  # noqa: E402
from labkit.quant import bitnet  # noqa: E402

LOADERS = {
    "data.load_corpus('train')": lambda: data.load_corpus("train"),
    "data.load_corpus('heldout')": lambda: data.load_corpus("heldout"),
    "data.load_fashion_mnist()": data.load_fashion_mnist,
    "data.load_digits()": data.load_digits,
    "models.load_tiny_gpt()": models.load_tiny_gpt,
    "models.load_minilm()": models.load_minilm,
    "models.load_cnn()": models.load_cnn,
    "bitnet.load_ternary(bitnet_gpt)": lambda: bitnet.load_ternary(data.DATA / "bitnet_gpt"),
}

if __name__ == "__main__":
    print(f"{'loader':32s} {'first call':>11s} {'median of 3':>12s}")
    for name, fn in LOADERS.items():
        times = []
        for _ in range(4):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"{name:32s} {times[0]:9.3f} s {statistics.median(times[1:]):10.3f} s")
    total = sum(p.stat().st_size for p in data.DATA.rglob("*") if p.is_file())
    print(f"data/ holds {total / 2**20:.1f} MiB")

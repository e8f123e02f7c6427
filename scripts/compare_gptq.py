"""Tiny GPT at 4 bits: round-to-nearest vs GPTQ (with and without act-order), held-out perplexity.

    python scripts/compare_gptq.py            # about 3 minutes on the 2-core course machine
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models  # noqa: E402
from labkit.quant import kbit  # noqa: E402

if __name__ == "__main__":
    torch.manual_seed(0)
    gpt, tok = models.load_tiny_gpt()
    held, train = data.load_corpus("heldout"), data.load_corpus("train")
    calib = tok(train[:100_000], return_tensors="pt")["input_ids"][:, : 32 * 128].view(32, 128)
    run = lambda m: m(calib)  # noqa: E731
    n = 8192
    fp32 = models.perplexity(gpt, tok, held, max_tokens=n)
    print(f"fp32: {fp32:.3f} (first {n} held-out tokens)")
    for group in (128, 32):
        rtn = models.perplexity(kbit.quantize_model_4bit(gpt, run, "rtn", group=group), tok, held, max_tokens=n)
        print(f"INT4 g{group} round-to-nearest: {rtn:.3f}")
        for act_order in (False, True):
            q = models.perplexity(kbit.quantize_model_4bit(gpt, run, "gptq", group=group, act_order=act_order),
                                  tok, held, max_tokens=n)
            print(f"INT4 g{group} GPTQ{' act-order' if act_order else ''}: {q:.3f} "
                  f"(closes {(rtn - q) / (rtn - fp32):.0%} of the gap to fp32)")

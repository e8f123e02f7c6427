"""Tiny GPT at 4, 3 and 2 bits: round-to-nearest vs GPTQ (with and without act-order), held-out perplexity.

    python scripts/compare_gptq.py            # about 5 minutes on the 2-core course machine

Groups of 128 input columns with an fp16 scale and zero each; 32 calibration windows of 128 tokens
from the train split; perplexity on every held-out token. Prints, per bit width, the perplexity of
each method and the share of round-to-nearest's gap to fp32 that GPTQ closes.
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
    calib = tok(train[:400_000], return_tensors="pt")["input_ids"][0][: 32 * 128].view(32, 128)
    run = lambda m: m(calib)  # noqa: E731
    fp32 = models.perplexity(gpt, tok, held)
    print(f"fp32: {fp32:.3f} (all held-out tokens)")
    for bits in (4, 3, 2):
        rtn = models.perplexity(kbit.quantize_model_4bit(gpt, "rtn", bits=bits, group=128), tok, held)
        print(f"INT{bits} g128 round-to-nearest: {rtn:.3f}")
        for act_order in (False, True):
            q = models.perplexity(kbit.quantize_model_4bit(gpt, "gptq", run, bits=bits, group=128, act_order=act_order),
                                  tok, held)
            print(f"INT{bits} g128 GPTQ{' act-order' if act_order else ''}: {q:.3f} "
                  f"(closes {(rtn - q) / (rtn - fp32):.0%} of the gap to fp32)")

"""Figures of the 04-lowbit deck, drawn by labkit.quant.kbit and labkit.quant.bitnet at build time.

The weights are the tiny GPT's own (data/tiny_gpt, read with safetensors); GPTQ's calibration inputs
are the real inputs of its first attention layer (token and position embeddings of training text
through ln_1), computed without importing transformers; the BitNet curves are the recorded run in
data/bitnet_gpt. Each figure computes with one torch thread: on a shared 2-core box, two threads
that fight over the cores make small products many times slower.
"""
import functools
import json

import matplotlib.pyplot as plt
import torch

from labkit.data import DATA
from labkit.quant import bitnet, kbit
from labkit.quant.int8 import relative_error
from labkit.seed import seed_everything


@functools.lru_cache(maxsize=1)
def _state() -> dict:
    from safetensors.torch import load_file
    return load_file(str(DATA / "tiny_gpt" / "model.safetensors"))


def _weights() -> dict:
    """{name: (out, in) weight} of the tiny GPT's 16 block linear layers (GPT-2 stores them (in, out))."""
    return {k[len("transformer."):-len(".weight")].replace("h.", "h"): v.t().contiguous()
            for k, v in _state().items() if k.endswith(".weight") and (".attn.c_" in k or ".mlp.c_" in k)}


def _calibration(windows: int = 16, context: int = 128) -> torch.Tensor:
    """The real inputs of the tiny GPT's first layer, h0.attn.c_attn: ln_1(token + position embeddings)
    of the first windows × context tokens of the training text, as (tokens, 256)."""
    from tokenizers import Tokenizer

    from labkit.data import load_corpus
    sd = _state()
    tok = Tokenizer.from_file(str(DATA / "tiny_gpt" / "tokenizer.json"))
    ids = torch.tensor(tok.encode(load_corpus("train")[:60_000]).ids[: windows * context]).view(windows, context)
    h = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][torch.arange(context)]
    x = torch.nn.functional.layer_norm(h, (h.shape[-1],), sd["transformer.h.0.ln_1.weight"], sd["transformer.h.0.ln_1.bias"])
    return x.reshape(-1, h.shape[-1])


def fig_memory():
    P = 175e9
    rows = [("fp32", 32.0), ("fp16 / bf16", kbit.bits_per_param("fp16")), ("int8", kbit.bits_per_param("int8-channel")),
            ("NF4, blocks of 64", kbit.bits_per_param("nf4")), ("INT4, groups of 128", kbit.bits_per_param("int4")),
            ("INT3, groups of 128", kbit.bits_per_param("int4") - 1),
            ("ternary, 5 per byte", bitnet.ternary_bits_per_weight(10**9))]
    fig, ax = plt.subplots(figsize=(8, 3.3))
    gb = [P * b / 8 / 1e9 for _, b in rows]
    bars = ax.barh([f"{n} ({b:.3g} bits)" for n, b in rows], gb, color=["C1" if g > 80 else "C0" for g in gb])
    ax.bar_label(bars, [f"{g:,.0f} GB" for g in gb], fontsize=8, padding=3)
    ax.axvline(80, color="0.3", ls="--")
    ax.text(82, len(rows) - 0.6, "one 80 GB GPU", fontsize=8, color="0.3")
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="weights of a 175 B-parameter model [GB, log scale]",
           title="175 B parameters × bits per parameter (labkit's formulas)")
    ax.set_xlim(right=2500)
    return fig


def fig_levels():
    w = _weights()["h0.mlp.c_fc"]
    blocks = w.reshape(-1, 64)
    normed = (blocks / blocks.abs().amax(dim=1, keepdim=True)).flatten()
    books = {"INT4 symmetric": torch.arange(-7, 8) / 7, "NF4": kbit.nf4_codebook(), "FP4 (E2M1)": kbit.fp4_codebook()}
    fig, (ax, rug) = plt.subplots(2, 1, figsize=(8.5, 3.6), sharex=True, height_ratios=(2.6, 1.3))
    ax.hist(normed.numpy(), bins=160, density=True, color="0.7")
    ax.set(ylabel="density", title="the tiny GPT's h0.mlp.c_fc, each block of 64 divided by its absmax")
    for k, (name, book) in enumerate(books.items()):
        rug.plot(book.numpy(), [k] * len(book), "|", ms=11, mew=2, color=f"C{k}")
    rug.set(yticks=range(len(books)), yticklabels=[f"{n} ({len(b)})" for n, b in books.items()],
            ylim=(-0.6, len(books) - 0.4), xlabel="weight / block absmax")
    rug.invert_yaxis()
    rug.grid(False, axis="y")
    fig.tight_layout()
    return fig


def fig_bits():
    ws = list(_weights().values())

    def model_error(fq):
        num = sum(((w - fq(w)) ** 2).sum() for w in ws)
        return (num / sum((w ** 2).sum() for w in ws)).sqrt().item()

    ints = [(g, kbit.bits_per_param("int4", group=g), model_error(lambda w, g=g: kbit.fake_quant_int4(w, g)))
            for g in (256, 128, 64, 32)]
    others = [("INT4 symmetric, g128", kbit.bits_per_param("int4-sym", group=128),
               model_error(lambda w: kbit.fake_quant_int4(w, 128, symmetric=True))),
              ("FP4, blocks of 64", kbit.bits_per_param("fp4"), model_error(kbit.fake_quant_fp4)),
              ("NF4, blocks of 64", kbit.bits_per_param("nf4"), model_error(kbit.fake_quant_nf4))]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.plot([b for _, b, _ in ints], [e for _, _, e in ints], "o-", color="C0", label="INT4 with a zero point, groups of g")
    for g, b, e in ints:
        ax.annotate(f"g{g}", (b, e), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for k, (name, b, e) in enumerate(others):
        ax.scatter(b, e, s=50, marker="sD^"[k], color=f"C{k + 1}", label=name, zorder=3)
    ax.set(xlabel="bits per parameter (codes + scales + zero points)", ylabel="relative error ‖W − Q(W)‖ / ‖W‖",
           title="4-bit schemes on the tiny GPT's 16 block weight matrices")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def fig_gptq():
    w = _weights()["h0.attn.c_attn"]
    x = _calibration()
    H = x.t() @ x / x.shape[0]

    def out_err(q):
        return ((x @ (w - q).t()).norm() / (x @ w.t()).norm()).item()

    bits = [2, 3, 4]
    rtn = [out_err(kbit.rtn_quantize(w, b, 128)) for b in bits]
    gptq = [out_err(kbit.gptq_quantize(w, H, b, 128)) for b in bits]
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    xs = torch.arange(len(bits)).float()
    for k, (label, vals) in enumerate([("round to nearest (RTN)", rtn), ("GPTQ", gptq)]):
        bars = ax.bar(xs + (0.2 if k else -0.2), [100 * v for v in vals], 0.4, label=label, color=f"C{k}")
        ax.bar_label(bars, [f"{100 * v:.1f}" for v in vals], fontsize=8)
    ax.set_xticks(xs.tolist(), [f"INT{b}, groups of 128" for b in bits])
    ax.set(ylabel="output error ‖(W − Q)X‖ / ‖WX‖ [%]",
           title=f"the tiny GPT's h0.attn.c_attn ({w.shape[0]} × {w.shape[1]}), {x.shape[0]:,} real input tokens")
    ax.legend(fontsize=8)
    return fig


def fig_ternary():
    w = _weights()["h0.mlp.c_fc"]
    codes, gamma = bitnet.ternarize(w)
    signs, beta = bitnet.binarize(w)
    err_t = relative_error(w, codes.float() * gamma)
    err_b = relative_error(w, signs.float() * beta)
    r = (w / gamma).flatten().numpy()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for lo, hi, c, v in ((-4, -0.5, "C1", -1), (-0.5, 0.5, "0.6", 0), (0.5, 4, "C0", 1)):
        ax.hist(r[(r >= lo) & (r < hi)], bins=int(60 * (hi - lo) / 8) + 1, range=(lo, hi), color=c,
                label=f"→ {v:d}: {(codes == v).float().mean():.0%} of the weights")
    for t in (-0.5, 0.5):
        ax.axvline(t, color="0.3", ls="--", lw=1)
    ax.set_xlim(-4, 4)
    ax.set(xlabel="W / γ (γ = mean |W|)", ylabel="weights",
           title=f"absmean ternary on the tiny GPT's h0.mlp.c_fc: relative error {err_t:.2f} "
                 f"(1-bit sign: {err_b:.2f})")
    ax.legend(fontsize=8)
    return fig


def fig_training():
    folder = DATA / "bitnet_gpt"
    prov = json.loads((folder / "provenance.json").read_text())
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(9, 3.3), width_ratios=(1.6, 1))
    for k, (name, label) in enumerate([("float", "fp32 weights"), ("bitnet", "ternary (BitNet b1.58)")]):
        ev = [e for e in log if e["model"] == name and "heldout_loss" in e]
        ax.plot([e["step"] for e in ev], [e["heldout_loss"] for e in ev], "o-", ms=3, color=f"C{k}", label=label)
    ax.set(xlabel=f"step ({prov['training']['batch']} windows of {prov['training']['context']} tokens)",
           ylabel="held-out loss [nats/token]", ylim=(3, 6), title="same initial weights, same batches")
    ax.legend(fontsize=8)
    ppl = prov["heldout_perplexity"]
    rows = [("fp32", ppl["float"]), ("trained\nternary", ppl["bitnet"]),
            ("fp32, ternarized\nafter training", ppl["float_ternarized_after_training"])]
    bars = bar.bar([r[0] for r in rows], [r[1] for r in rows], color=["C0", "C1", "0.5"])
    bar.bar_label(bars, [f"{r[1]:.1f}" for r in rows], fontsize=8)
    bar.set(ylabel="held-out perplexity", title=f"after {prov['training']['steps']:,} steps")
    bar.tick_params(axis="x", labelsize=8)
    for a in (ax, bar):
        a.title.set_fontsize(10)
    fig.suptitle(f"recorded: {prov['command']}, {prov['date'][:10]}, {prov['machine'].split('|')[0].strip()}", fontsize=9)
    fig.tight_layout()
    return fig


def fig_product():
    from labkit.bench import benchmark
    from labkit.quant.int8 import int8_matmul, quantize
    seed_everything(0)
    out_f, in_f, tokens = 512, 512, 32
    codes, gamma = bitnet.ternarize(torch.randn(out_f, in_f))
    x = torch.randn(tokens, in_f)
    w = codes.float() * gamma
    xq, s, _ = quantize(x, "token")
    index = bitnet.ternary_index(codes)
    runs = {"fp32 matmul\n(BLAS)": lambda: x @ w.t(),
            "int8 × int8\n→ int32": lambda: int8_matmul(xq, codes).float() * s * gamma,
            "add-only\n(ternary_matmul)": lambda: bitnet.ternary_matmul(x, codes, gamma, index=index)}
    # the same product three ways (torch.allclose: torch.testing imports torch.distributed, 2 s)
    ref = runs["fp32 matmul\n(BLAS)"]()
    for k, fn in runs.items():
        if not torch.allclose(fn(), ref, atol=0.05 * ref.abs().max().item() if "int8" in k else 1e-4, rtol=1e-4):
            raise AssertionError(f"{k!r} differs from the fp32 product")
    t = {k: min(benchmark(fn, device="cpu", warmup=1, min_repeats=5, min_time_s=0.03, max_repeats=30).times_s)
         for k, fn in runs.items()}
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    bars = ax.bar(list(t), [1e6 * v for v in t.values()], color=["C0", "C2", "C1"])
    ax.bar_label(bars, [f"{1e6 * v:,.0f} µs" for v in t.values()], fontsize=8)
    ax.set(yscale="log", ylabel="time per product [µs, log scale]",
           title=f"a {out_f} × {in_f} ternary layer on {tokens} tokens, one core of this machine's CPU")
    ax.title.set_fontsize(10)
    ax.margins(y=0.2)
    return fig

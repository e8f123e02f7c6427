"""Train the tiny GPT twice from scratch, in full precision and as BitNet b1.58, on the same batches.

    python scripts/train_bitnet_gpt.py             # about 15 min on the 2-core course machine
    python scripts/train_bitnet_gpt.py --steps 30 --out /tmp/smoke   # a quick smoke run

Both models have the tiny GPT's shape and tokenizer (data/tiny_gpt) and train with
labkit.models.train_lm for the same number of steps on the same seeded batches, with the
same learning rate (a short run: the larger rate BitNet trains with suits both); the BitNet one
has BitLinear attention and MLP layers (ternary weights, int8 activations, straight-through
estimator). Written to --out (default data/bitnet_gpt/):
    model.safetensors + config.json   the BitNet model in its inference form (packed ternary weights)
    train_log.jsonl                   both training curves
    provenance.json                   held-out perplexity of the float model, the BitNet model and the
                                      float model ternarized after training; machine, date, command
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models, record  # noqa: E402
from labkit.quant import bitnet  # noqa: E402
from labkit.seed import seed_everything  # noqa: E402

OUT = data.DATA / "bitnet_gpt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, the same for both models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = models.load_tokenizer()
    train_text, heldout_text = data.load_corpus("train"), data.load_corpus("heldout")
    train_ids = torch.tensor(tok(train_text)["input_ids"], dtype=torch.long)
    heldout_ids = torch.tensor(tok(heldout_text)["input_ids"], dtype=torch.long)
    cfg = GPT2Config.from_json_file(models.TINY_GPT_DIR / "config.json")

    logs, seconds, ppl = {}, {}, {}
    seed_everything(args.seed)
    float_model = GPT2LMHeadModel(cfg)
    seed_everything(args.seed)
    bitnet_model = bitnet.bitnet_gpt(cfg)          # same initial latent weights as the float model
    for name, model in (("float", float_model), ("bitnet", bitnet_model)):
        t0 = time.time()
        logs[name] = models.train_lm(model, train_ids, args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                     eval_ids=heldout_ids, log_every=50, eval_every=250, desc=f"training {name}")
        seconds[name] = round(time.time() - t0, 1)

    deployed = bitnet.ternary_gpt(bitnet_model)
    size = bitnet.save_ternary(deployed, args.out)
    reloaded = bitnet.load_ternary(args.out)
    ppl["float"] = models.perplexity(float_model, tok, heldout_text)
    ppl["bitnet"] = models.perplexity(reloaded, tok, heldout_text)
    ppl["bitnet_latent"] = models.perplexity(bitnet_model, tok, heldout_text)   # must equal "bitnet"
    ppl["float_ternarized_after_training"] = models.perplexity(bitnet.ternary_gpt(float_model), tok, heldout_text)
    with open(args.out / "train_log.jsonl", "w") as f:
        for name, log in logs.items():
            for e in log:
                f.write(json.dumps({"model": name, **e}) + "\n")
    n_ternary = sum(m.in_features * m.out_features for m in deployed.modules()
                    if isinstance(m, bitnet.TernaryLinear))
    prov = {
        "what": "tiny GPT (data/tiny_gpt shape and tokenizer) trained from scratch in fp32 weights and as "
                "BitNet b1.58 (BitLinear in attention and MLP; embeddings, LayerNorms and the tied LM head "
                "in fp32), same steps, same seeded batches",
        "config": {k: getattr(cfg, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")},
        "training": {"steps": args.steps, "batch": args.batch, "context": cfg.n_positions,
                     "tokens_seen": args.steps * args.batch * cfg.n_positions, "lr": args.lr,
                     "seed": args.seed, "seconds": seconds,
                     "recipe": "labkit.models.train_lm (AdamW, warm-up + cosine, bf16 autocast)"},
        "heldout_tokens": len(heldout_ids),
        "heldout_perplexity": {k: round(v, 3) for k, v in ppl.items()},
        "ternary_weights": n_ternary, "checkpoint_bytes": size,
        **record.provenance("cpu"),
    }
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()

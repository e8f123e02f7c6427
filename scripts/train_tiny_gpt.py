"""Train the course's tiny GPT on the KJV corpus, on a CPU, reproducibly.

    python scripts/train_tiny_gpt.py            # about 12 min on the 2-core course machine
    python scripts/train_tiny_gpt.py --steps 50 --out /tmp/smoke   # a quick smoke run

1. A byte-level BPE tokenizer (4096 tokens) trained on the train split with `tokenizers`.
2. A transformers GPT2LMHeadModel (4 layers, width 256, 4 heads, context 128: 4.3 M parameters)
   trained by labkit.models.train_lm (AdamW, warm-up, cosine decay, bf16 autocast with fp32
   weights, seeded) on random 128-token windows of the train split.
3. Held-out perplexity of the model and of a unigram model on the same tokens, a sample
   generation, and the training log, written next to the checkpoint (safetensors).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import data, models, record  # noqa: E402
from labkit.seed import seed_everything  # noqa: E402

SPECIAL = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int, out: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([text], vocab_size=vocab_size, min_frequency=2, special_tokens=[SPECIAL],
                            show_progress=False)
    tok.save(str(out / "tokenizer.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=models.TINY_GPT_DIR)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    seed_everything(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    train_text, heldout_text = data.load_corpus("train"), data.load_corpus("heldout")
    train_tokenizer(train_text, 4096, args.out)
    tok = models.load_tokenizer(args.out)
    train_ids = torch.tensor(tok(train_text)["input_ids"], dtype=torch.long)
    heldout_ids = torch.tensor(tok(heldout_text)["input_ids"], dtype=torch.long)
    print(f"tokens: train {len(train_ids):,}, held-out {len(heldout_ids):,} "
          f"({len(train_text) / len(train_ids):.2f} characters per token)")

    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=256, n_layer=4, n_head=4,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.time()
    log = models.train_lm(model, train_ids, args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                          eval_ids=heldout_ids, desc="training tiny GPT")
    train_seconds = time.time() - t0
    T = cfg.n_positions

    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    ppl = models.perplexity(model, tok, heldout_text)
    # the unigram baseline on the very tokens the model predicts (all but each window's first)
    predicted = torch.cat([heldout_ids[s + 1:s + T] for s in range(0, len(heldout_ids) - 1, T)])
    uni = models.unigram_perplexity(train_ids, predicted, len(tok))
    prompt = "And the LORD said unto Moses,"
    seed_everything(args.seed)
    out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=40, do_sample=True,
                         top_k=40, temperature=0.8, pad_token_id=tok.eos_token_id)
    sample = tok.decode(out[0])
    (args.out / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    prov = {
        "model": "GPT2LMHeadModel", "parameters": n_params, "config": {k: getattr(cfg, k) for k in (
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head")},
        "training": {"steps": args.steps, "batch": args.batch, "context": T, "tokens_seen": args.steps * args.batch * T,
                     "lr": args.lr, "seed": args.seed, "precision": "bf16 autocast, fp32 weights",
                     "seconds": round(train_seconds, 1)},
        "corpus": "data/corpus (KJV, see its provenance.json)",
        "heldout_tokens": len(heldout_ids),
        "heldout_perplexity": round(ppl, 3), "unigram_heldout_perplexity": round(uni, 3),
        "sample": {"prompt": prompt, "text": sample, "decoding": "top-k 40, temperature 0.8, seed 0"},
        **record.provenance("cpu"),
    }
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()

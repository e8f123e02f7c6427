"""Where the bytes of training go, and how to fit a model that does not fit.

A training step holds four things: the weights, their gradients, the optimizer's state (Adam:
two moments per weight) and the activations the backward pass needs. The first three grow with
the parameter count, the last with batch × sequence × width (and, in attention, × sequence
again). Each technique of the lab cuts one of them:

    state_bytes_per_param(optimizer, mixed)   weights + gradients + optimizer state per parameter
    zero_bytes_per_param(stage, world)        the same, per rank, with ZeRO stage 0..3 sharding
    Block, Stack                              a pre-LN transformer block written out (explicit
                                              attention, so the T² scores are visible), no dropout
    block_activation_bytes(b, T, d, heads)    what autograd keeps for one block's backward pass
    saved_bytes(fn)                           measured: bytes of the tensors autograd saves in fn
    peak_bytes(fn)                            measured: peak bytes allocated while fn runs (CUDA:
                                              the caching allocator; CPU: profiler memory events)
    checkpointed(stack, x, every)             activation checkpointing, every `every` blocks
    check_sharded_adam, fsdp_bytes            on ranks (labkit.parallel.run): ZeRO-1 by hand and
                                              PyTorch's FSDP2 against the formula
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

OPTIMIZERS = ("sgd", "momentum", "adam")


def state_bytes_per_param(optimizer: str = "adam", mixed: bool = False) -> int:
    """Bytes per parameter of everything but the activations. fp32: weight 4 + gradient 4 +
    optimizer state (SGD 0, momentum 4, Adam 8). Mixed precision (Micikevicius et al., 2018): a
    16-bit weight and gradient (2 + 2) for the passes, plus an fp32 master weight (4) and the
    fp32 state: Adam 2 + 2 + 4 + 8 = 16 bytes (ZeRO, Rajbhandari et al., 2020)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    state = {"sgd": 0, "momentum": 4, "adam": 8}[optimizer]
    return 2 + 2 + 4 + state if mixed else 4 + 4 + state


def zero_bytes_per_param(stage: int, world: int, optimizer: str = "adam", mixed: bool = True) -> float:
    """Bytes per parameter held by one of `world` data-parallel ranks under ZeRO stage 0 (all
    replicated), 1 (optimizer state sharded), 2 (+ gradients), 3 (+ weights; FSDP's full shard).
    In mixed precision the fp32 master weight counts as optimizer state."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive int, got {world!r}")
    total = state_bytes_per_param(optimizer, mixed)
    w, g = (2, 2) if mixed else (4, 4)
    opt = total - w - g
    shard = {0: 0, 1: opt, 2: opt + g, 3: opt + g + w}[stage]
    return total - shard + shard / world


# ---------------------------------------------------------------- the model


class Block(nn.Module):
    """A GPT block, pre-LayerNorm, attention written out: softmax(QKᵀ/√dₕ + causal) V, then an
    MLP of width 4d with GELU. No dropout (a dropout mask would be one more saved tensor)."""

    def __init__(self, d: int = 256, heads: int = 4, context: int = 1024):
        super().__init__()
        if d % heads:
            raise ValueError(f"d ({d}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        causal = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def attention(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d // self.heads)) + self.causal[:t, :t]
        y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Stack(nn.Module):
    """`layers` Blocks on token embeddings, a final LayerNorm and a tied LM head."""

    def __init__(self, layers: int = 4, d: int = 256, heads: int = 4, vocab: int = 4096, context: int = 256):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        nn.init.normal_(self.embed.weight, std=0.02)         # GPT-2's: a first loss near ln(vocab)
        self.pos = nn.Parameter(torch.zeros(context, d))
        self.blocks = nn.ModuleList(Block(d, heads, context) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, ids, run_blocks=None):
        """Logits (b, T, vocab). run_blocks(blocks, x) -> x, if given, runs the blocks (the
        checkpointed runners plug in here); default: one after the other."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = run_blocks(self.blocks, x) if run_blocks else _plain(self.blocks, x)
        return self.ln(x) @ self.embed.weight.t()


def _plain(blocks, x):
    for blk in blocks:
        x = blk(x)
    return x


def block_activation_bytes(b: int, T: int, d: int, heads: int, act_bytes: int = 4) -> int:
    """Bytes one Block keeps for its backward pass, batch b, sequence T, width d. Per token and
    layer: the inputs of both LayerNorms, both their outputs (the inputs of qkv and fc), qkv's
    output (3d: Q, K, V), the attention output (proj's input), GELU's input and output (4d each):
    16·d values; plus the softmax output, heads·T per token (the T² term); plus each LayerNorm's
    mean and 1/std in fp32 (4 values per token, 16 bytes). In 16-bit with dropout masks this is
    Korthikanti et al.'s (2022) 34·sbh + 5·as²b."""
    return act_bytes * (16 * b * T * d + heads * b * T * T) + 16 * b * T


# ---------------------------------------------------------------- measuring


@dataclass
class Saved:
    bytes: int          # distinct storages autograd saved (parameters and buffers excluded)
    tensors: int        # how many save calls there were


def saved_bytes(fn, *args, exclude=()) -> Saved:
    """Run fn(*args) and count what autograd saves for the backward pass: every tensor packed by
    torch.autograd.graph.saved_tensors_hooks, counted once per storage (views of one tensor share
    it), leaving out the storages of `exclude` (pass the model's parameters and buffers)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen, calls = {}, [0]

    def pack(t):
        calls[0] += 1
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return Saved(sum(seen.values()), calls[0])


def peak_bytes(fn, *args, device=None) -> int:
    """Peak bytes allocated while fn(*args) runs, above what was allocated before it. On CUDA:
    torch.cuda.max_memory_allocated. On the CPU: torch.profiler's memory events (every allocation
    and free of the CPU allocator, in order), their running sum's maximum."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(*args)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    from .bench import quiet_native_stderr
    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*args)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:             # nbytes: + for an allocation, - for a free
        live += e.nbytes()
        peak = max(peak, live)
    return peak


# ---------------------------------------------------------------- checkpointing


def checkpointed(blocks, x, every: int):
    """Run the blocks in segments of `every`, each under torch.utils.checkpoint: only a segment's
    input is kept, and its inside is computed again during the backward pass. every=0: plain."""
    from torch.utils.checkpoint import checkpoint
    if not isinstance(every, int) or every < 0:
        raise ValueError(f"every must be an int >= 0 (0: no checkpointing), got {every!r}")
    if every == 0:
        return _plain(blocks, x)
    for i in range(0, len(blocks), every):
        x = checkpoint(_plain, blocks[i:i + every], x, use_reentrant=False)
    return x


class ForwardCounter:
    """Counts Block forward calls (a recomputation is one more): `with ForwardCounter(model) as c`."""

    def __init__(self, model):
        self.blocks = [m for m in model.modules() if isinstance(m, Block)]
        self.calls = 0

    def __enter__(self):
        self.handles = [b.register_forward_pre_hook(self._count) for b in self.blocks]
        return self

    def _count(self, *_):
        self.calls += 1

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------- sharding, on ranks (labkit.parallel.run)


def _mlp(d: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


def check_sharded_adam(step, steps: int = 5, d: int = 16, batch: int = 32, lr: float = 1e-2, seed: int = 0) -> dict:
    """On every rank: an MLP trained `steps` Adam steps two ways: torch.optim.Adam on the whole
    batch in one process (the reference), and data-parallel with a ZeRO-1 step, each rank on its
    shard of the batch: gradients all-reduced and averaged, flattened into one vector, then
    step(param, grad, state, lr, t) (flat tensors, t counted from 1) must update `param` in place,
    this rank keeping Adam's state for its 1/p of the entries only. Returns the largest parameter
    difference and the optimizer-state bytes this rank held against unsharded Adam's."""
    import torch.distributed as dist
    p, r = dist.get_world_size(), dist.get_rank()
    ref, mine = _mlp(d, seed), _mlp(d, seed)
    n = sum(q.numel() for q in mine.parameters())
    if n % p:
        raise ValueError(f"{n} parameters do not split evenly over {p} ranks: choose d so they do")
    opt = torch.optim.Adam(ref.parameters(), lr=lr)
    flat = torch.cat([q.detach().flatten() for q in mine.parameters()])
    state = {}
    g = torch.Generator().manual_seed(seed)
    for t in range(1, steps + 1):
        x = torch.randn(batch, d, generator=g)
        y = x.roll(1, dims=1)
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
        torch.nn.utils.vector_to_parameters(flat, mine.parameters())
        mine.zero_grad()
        lo, hi = r * batch // p, (r + 1) * batch // p
        F.mse_loss(mine(x[lo:hi]), y[lo:hi]).backward()
        grad = torch.cat([q.grad.flatten() for q in mine.parameters()])
        dist.all_reduce(grad)
        grad /= p
        step(flat, grad, state, lr, t)
    torch.nn.utils.vector_to_parameters(flat, mine.parameters())
    ref_flat = torch.cat([q.detach().flatten() for q in ref.parameters()])
    held = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    full = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.dim() > 0)
    return {"vs torch Adam": (flat - ref_flat).abs().max().item(), "moved": (ref_flat - torch.cat(
        [q.detach().flatten() for q in _mlp(d, seed).parameters()])).abs().max().item(),
        "state bytes held": held, "unsharded state bytes": full}


def fsdp_bytes(d: int = 64, layers: int = 4, seed: int = 0) -> dict:
    """On every rank: a stack of `layers` MLPs sharded with PyTorch's FSDP2 (fully_shard on each,
    then on the whole: ZeRO stage 3), one Adam step; the bytes this rank holds of parameters,
    gradients and Adam state (local shards), and the parameter count."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(seed)
    model = nn.Sequential(*[_mlp(d, seed + i) for i in range(layers)])
    n = sum(q.numel() for q in model.parameters())
    # a CPU mesh, named: FSDP's default mesh is on CUDA whenever a GPU is visible, even under gloo ranks
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for m in model:
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(8, d)
    model(x).pow(2).mean().backward()
    opt.step()
    local = lambda t: t.to_local() if hasattr(t, "to_local") else t
    size = lambda t: local(t).numel() * local(t).element_size()
    return {"parameters": n,
            "weight bytes": sum(size(q) for q in model.parameters()),
            "gradient bytes": sum(size(q.grad) for q in model.parameters()),
            "optimizer bytes": sum(size(v) for s in opt.state.values() for v in s.values() if v.dim() > 0)}

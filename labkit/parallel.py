"""Data and tensor parallelism with torch.distributed, small enough to read top to bottom.

Processes
    run(fn, world_size, *args)  start `world_size` ranks on this machine; each joins a process group
                                (gloo on CPU, NCCL on GPUs) and returns fn(*args); the results come
                                back in rank order. A function typed into a notebook (fn, or one
                                passed in args) travels as its source code, see run().
                                scripts/train_ddp.py shows the torchrun way for clusters.
Data parallel: every rank holds the whole model and 1/p of the batch; after backward one
all-reduce averages the gradients, so every rank takes the same step as one big-batch process.
    shard(x), average_gradients(model)
    check_bucketed_ddp, time_bucketed_step   a student's DDP (buckets filled by gradient hooks,
                                all-reduced while the backward pass goes on) against torch's DDP
Tensor parallel (Megatron-LM, Shoeybi et al. 2019): one layer's weights split across ranks.
    ColumnParallelLinear  W split by output features: each rank computes its slice of the outputs
    RowParallelLinear     W split by input features: partial outputs summed with one all-reduce
    TensorParallelMLP     column then row: one all-reduce in the forward pass, one in the backward
Communication
    ring_allreduce_bytes(n, p)   bytes each rank sends in a ring all-reduce of n bytes: 2(p-1)/p · n
    time_all_reduce(sizes)       time per all-reduce and bus bandwidth, per message size
Compression (Top-k SGD with error feedback, arXiv:1809.10505): send only the largest k gradient
entries, keep the rest in a local residual added to the next step's gradient.
    topk_compress(grad, residual, ratio), topk_all_reduce(grad, residual, ratio)
Checks that each rank runs (module-level, so run() can start them): check_data_parallel,
check_tensor_parallel, time_dp_step, train_topk; fit_alpha_beta for the α–β model.
"""
import math
import os
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .layers import gelu_stack

# ---------------------------------------------------------------- processes


_RANK_IMPORTS = ("import math\nimport time\nimport torch\nimport torch.distributed as dist\n"
                 "import torch.nn as nn\nimport torch.nn.functional as F\nfrom labkit import parallel as P\n")
_SENT_NAMESPACES: dict = {}     # per rank process: the namespace each set of sent sources was run in


def _typed_in(fn) -> bool:
    """A function whose module a spawned process cannot import (a notebook's __main__)."""
    import sys
    mod = getattr(fn, "__module__", None)
    return callable(fn) and hasattr(fn, "__code__") and (mod == "__main__" or mod not in sys.modules)


class _Sent:
    """A function typed into a notebook, sent to the ranks as source code. On the rank, the
    sources of every such function of the same run() call are executed together, once, in a
    namespace holding math, time, torch, dist, nn, F and P (labkit.parallel)."""

    def __init__(self, name: str, sources: tuple):
        self.name, self.sources = name, sources

    def __call__(self, *args, **kwargs):
        ns = _SENT_NAMESPACES.get(self.sources)
        if ns is None:
            ns = {"__name__": "__sent__"}
            exec(_RANK_IMPORTS, ns)
            for name, src in self.sources:
                exec(compile(src, f"<notebook: {name}>", "exec"), ns)
            _SENT_NAMESPACES[self.sources] = ns
        return ns[self.name](*args, **kwargs)


def _send_typed_in(fn, args):
    """fn and args with every notebook function replaced by a _Sent carrying the sources."""
    import inspect
    import textwrap
    typed = [f for f in (fn, *args) if _typed_in(f)]
    if not typed:
        return fn, args
    sources = []
    for f in typed:
        try:
            sources.append((f.__name__, textwrap.dedent(inspect.getsource(f))))
        except (OSError, TypeError):
            raise ValueError(f"{f.__name__!r} is defined in __main__ and its source cannot be read, so it cannot be sent "
                             "to the ranks: define it in a notebook cell or a module") from None
    sources = tuple(sources)
    swap = lambda f: _Sent(f.__name__, sources) if _typed_in(f) else f
    return swap(fn), tuple(swap(a) for a in args)


def _worker(rank, world_size, port, backend, threads, fn, args, queue):
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
        try:
            queue.put((rank, "ok", fn(*args)))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, "error", traceback.format_exc()))


def run(fn, world_size: int = 2, *args, backend: str | None = None, threads_per_rank: int = 1,
        timeout_s: float = 300):
    """[fn(*args) on rank 0, on rank 1, ...]: `world_size` processes on this machine, each in the
    process group. backend: "gloo" (CPU) or "nccl" (one GPU per rank); default NCCL when there are
    at least world_size GPUs, else gloo. Each rank gets `threads_per_rank` torch threads.
    A rank that raises makes run() raise RuntimeError with that rank's traceback.

    Spawned processes import fn by name, so fn normally lives in a module. A function typed into
    a notebook (fn itself, or a function among args) is sent as its source code instead and
    defined again on each rank, where it can use math, time, torch, dist, nn, F, P and the other
    notebook functions of the same call, but not the notebook's other globals."""
    import queue as queue_mod

    import torch.multiprocessing as mp
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"backend 'nccl' needs one GPU per rank: world_size={world_size}, "
                         f"GPUs={torch.cuda.device_count()}")
    fn, args = _send_typed_in(fn, args)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    # The rendezvous store lives here, on a port the OS picks while we hold it (port 0): no other
    # run() (another notebook grading beside this one) can take it between choosing and using it.
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    port = store.port
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, backend, threads_per_rank, fn, args, q))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results, deadline = {}, time.time() + timeout_s
    try:
        while len(results) < world_size:
            try:
                rank, status, value = q.get(timeout=max(0.1, min(1.0, deadline - time.time())))
            except queue_mod.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead or time.time() > deadline:
                    raise RuntimeError(f"ranks did not finish within {timeout_s} s" if not dead else
                                       f"a rank died (exit code {dead[0].exitcode}) without a result")
                continue
            if status == "error":
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        del store
    return [results[r] for r in range(world_size)]


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def device() -> torch.device:
    """This rank's device: its own GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- data parallel


def shard(x: torch.Tensor, r: int | None = None, p: int | None = None) -> torch.Tensor:
    """Rank r's contiguous 1/p of x along dim 0 (len(x) must be a multiple of p)."""
    r, p = rank() if r is None else r, world() if p is None else p
    if len(x) % p:
        raise ValueError(f"a batch of {len(x)} does not split evenly over {p} ranks")
    n = len(x) // p
    return x[r * n:(r + 1) * n]


def average_gradients(model: nn.Module) -> None:
    """All-reduce every gradient and divide by the number of ranks (one message per tensor; DDP
    groups them into ~25 MB buckets and overlaps them with the backward pass)."""
    p = world()
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= p


# ---------------------------------------------------------------- tensor parallel


class _CopyToTP(torch.autograd.Function):
    """Identity forward; all-reduce of the gradient backward (every rank used the same input)."""
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class _ReduceFromTP(torch.autograd.Function):
    """All-reduce forward (sum the partial outputs); identity backward."""
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g


def _split(n: int, p: int, what: str) -> int:
    if n % p:
        raise ValueError(f"{what} ({n}) must be a multiple of the number of ranks ({p})")
    return n // p


class ColumnParallelLinear(nn.Module):
    """This rank's rows of W (out/p output features) and of the bias: y_r = x W_rᵀ + b_r."""

    def __init__(self, linear: nn.Linear, r: int | None = None, p: int | None = None):
        super().__init__()
        r, p = rank() if r is None else r, world() if p is None else p
        n = _split(linear.out_features, p, "out_features")
        self.weight = nn.Parameter(linear.weight.detach()[r * n:(r + 1) * n].clone())
        self.bias = nn.Parameter(linear.bias.detach()[r * n:(r + 1) * n].clone()) if linear.bias is not None else None

    def forward(self, x):
        return F.linear(_CopyToTP.apply(x), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """This rank's columns of W (in/p input features): partial y_r = x_r W_rᵀ, summed over ranks,
    plus the full bias once."""

    def __init__(self, linear: nn.Linear, r: int | None = None, p: int | None = None):
        super().__init__()
        r, p = rank() if r is None else r, world() if p is None else p
        n = _split(linear.in_features, p, "in_features")
        self.weight = nn.Parameter(linear.weight.detach()[:, r * n:(r + 1) * n].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None

    def forward(self, x):
        y = _ReduceFromTP.apply(F.linear(x, self.weight))
        return y + self.bias if self.bias is not None else y


class MLP(nn.Module):
    """A transformer's MLP: d -> hidden -> d with GELU."""

    def __init__(self, d: int = 64, hidden: int = 256):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TensorParallelMLP(nn.Module):
    """An MLP split over the ranks: fc1 by columns (the GELU acts on each rank's slice, no
    communication), fc2 by rows (one all-reduce). Same outputs and gradients as the MLP."""

    def __init__(self, mlp: MLP, r: int | None = None, p: int | None = None):
        super().__init__()
        self.fc1, self.fc2 = ColumnParallelLinear(mlp.fc1, r, p), RowParallelLinear(mlp.fc2, r, p)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


# ---------------------------------------------------------------- communication


def ring_allreduce_bytes(n_bytes: float, p: int) -> float:
    """Bytes each rank sends in a ring all-reduce of n_bytes: reduce-scatter then all-gather,
    each p-1 steps of n/p bytes: 2(p-1)/p · n (independent of p for large p: bandwidth-optimal)."""
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    return 2 * (p - 1) / p * n_bytes


def time_all_reduce(sizes_bytes=(2**10, 2**14, 2**18, 2**20, 2**22, 2**24), repeats: int | None = None) -> list[dict]:
    """On every rank: median seconds of one all_reduce of float32 tensors of each size, and the
    bus bandwidth, ring bytes sent per rank / time (nccl-tests' "busbw"). Every rank makes the
    same number of calls (a collective waits for all ranks, so no time-based stopping): `repeats`,
    or by default 50 for small messages down to 5 for the largest."""
    from .bench import benchmark
    for _ in range(20):                     # connections and buffers set up before any timing
        dist.all_reduce(torch.ones(256, device=device()))
    rows = []
    for n in sizes_bytes:
        t = torch.ones(max(1, int(n) // 4), device=device())
        reps = repeats or max(5, min(50, 2**24 // max(int(n), 1)))
        dist.barrier()
        timing = benchmark(lambda: dist.all_reduce(t), min_repeats=reps, max_repeats=reps)
        rows.append({"bytes": t.numel() * 4, "seconds": timing.median_s,
                     "bus_bytes_per_s": ring_allreduce_bytes(t.numel() * 4, world()) / timing.median_s})
    return rows


# ---------------------------------------------------------------- gradient compression


def topk_compress(grad: torch.Tensor, residual: torch.Tensor, ratio: float):
    """(indices, values, new residual): the k = ceil(ratio · n) largest |grad + residual| entries
    are sent; everything not sent stays in the residual (error feedback), so nothing is lost,
    only delayed."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    acc = (grad + residual).flatten()
    k = max(1, math.ceil(ratio * acc.numel()))
    idx = acc.abs().topk(k).indices
    values = acc[idx]
    new_residual = acc.clone()
    new_residual[idx] = 0
    return idx, values, new_residual.view_as(grad)


def topk_all_reduce(grad: torch.Tensor, residual: torch.Tensor, ratio: float, compress=None):
    """(averaged sparse gradient, new residual, bytes this rank sent): every rank all-gathers the
    others' top-k (index, value) pairs and sums them; 8 bytes per pair (int32 index, fp32 value).
    compress(grad, residual, k), if given, chooses the pairs instead of topk_compress."""
    if compress is None:
        idx, values, residual = topk_compress(grad, residual, ratio)
    else:
        idx, values, residual = compress(grad, residual, max(1, math.ceil(ratio * grad.numel())))
    idx = idx.to(torch.int32)  # topk's indices are int64: 4 bytes more per pair, for nothing
    p = world()
    idxs, vals = [torch.empty_like(idx) for _ in range(p)], [torch.empty_like(values) for _ in range(p)]
    dist.all_gather(idxs, idx)
    dist.all_gather(vals, values)
    out = torch.zeros(grad.numel(), dtype=grad.dtype, device=grad.device)
    for i, v in zip(idxs, vals):
        out.index_add_(0, i.long(), v)
    return (out / p).view_as(grad), residual, (p - 1) * idx.numel() * (idx.element_size() + values.element_size())


# ---------------------------------------------------------------- checks each rank runs


def _regression(seed: int, n: int = 64, d: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x @ torch.randn(d, d, generator=g)).tanh()


def check_data_parallel(steps: int = 5, batch: int = 64, seed: int = 0) -> dict:
    """On every rank: train the same MLP three ways for `steps` SGD steps: alone on the whole
    batch (the reference, no communication), data-parallel by hand (average_gradients) and with
    torch DDP, each rank on its shard. Returns the largest parameter differences."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(seed)
    ref = MLP(32, 64)
    by_hand, ddp = MLP(32, 64), MLP(32, 64)
    by_hand.load_state_dict(ref.state_dict())
    ddp.load_state_dict(ref.state_dict())
    ddp = DDP(ddp)
    models = {"reference": ref, "by hand": by_hand, "ddp": ddp}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.1) for k, m in models.items()}
    for step in range(steps):
        x, y = _regression(seed + step, batch)
        for name, m in models.items():
            xs, ys = (x, y) if name == "reference" else (shard(x), shard(y))
            loss = F.mse_loss(m(xs), ys)
            opts[name].zero_grad()
            loss.backward()
            if name == "by hand":
                average_gradients(m)
            opts[name].step()
    params = {k: torch.cat([p.detach().flatten() for p in (m.module if k == "ddp" else m).parameters()])
              for k, m in models.items()}
    moved = (params["reference"] - torch.cat([p.flatten() for p in MLP(32, 64).parameters()])).abs().max()
    return {"by hand vs reference": (params["by hand"] - params["reference"]).abs().max().item(),
            "ddp vs reference": (params["ddp"] - params["reference"]).abs().max().item(),
            "by hand vs ddp": (params["by hand"] - params["ddp"]).abs().max().item(),
            "parameters moved": moved.item()}


def check_tensor_parallel(d: int = 64, hidden: int = 256, tokens: int = 8, seed: int = 0) -> dict:
    """On every rank: an MLP's output and gradients computed whole (the reference) and with
    TensorParallelMLP, and the output of the same split done by torch's DTensor
    (ColwiseParallel / RowwiseParallel). Returns the largest differences."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    import copy
    torch.manual_seed(seed)
    mlp = MLP(d, hidden)
    x = torch.randn(tokens, d)
    x_ref, x_tp = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = mlp(x_ref)
    tp = TensorParallelMLP(mlp)
    y_tp = tp(x_tp)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y_tp.backward(g)
    r, p = rank(), world()
    n1 = hidden // p
    mesh = init_device_mesh(device().type, (p,))
    dt = parallelize_module(copy.deepcopy(mlp), mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
    with torch.no_grad():
        y_dt = dt(x)
    return {"output": (y_tp - y_ref).abs().max().item(),
            "input gradient": (x_tp.grad - x_ref.grad).abs().max().item(),
            "fc1 weight gradient": (tp.fc1.weight.grad - mlp.fc1.weight.grad[r * n1:(r + 1) * n1]).abs().max().item(),
            "fc2 weight gradient": (tp.fc2.weight.grad - mlp.fc2.weight.grad[:, r * n1:(r + 1) * n1]).abs().max().item(),
            "DTensor output": (y_dt - y_ref).abs().max().item(),
            "weights held": sum(q.numel() for q in tp.parameters()) / sum(q.numel() for q in mlp.parameters())}


def time_dp_step(d: int = 512, hidden: int = 2048, global_batches=(256, 1024), steps: int = 10, seed: int = 0) -> list[dict]:
    """On every rank, for each global batch size: median time of a data-parallel training step of an
    MLP (d-hidden-d), split into compute (forward + backward on this rank's shard) and
    communication (the gradient all-reduce), in seconds; the gradient bytes and the bytes this
    rank sends (ring all-reduce)."""
    torch.manual_seed(seed)
    model = MLP(d, hidden).to(device())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    n_bytes = sum(q.numel() * q.element_size() for q in model.parameters())
    sync = torch.cuda.synchronize if device().type == "cuda" else (lambda: None)
    rows = []
    for global_batch in global_batches:
        xs = shard(torch.randn(global_batch, d, device=device()))
        compute, comm = [], []
        for step in range(steps + 2):             # 2 warm-up steps
            dist.barrier()
            t0 = time.perf_counter()
            loss = model(xs).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            sync()
            t1 = time.perf_counter()
            if world() > 1:
                average_gradients(model)
            sync()
            t2 = time.perf_counter()
            opt.step()
            if step >= 2:
                compute.append(t1 - t0)
                comm.append(t2 - t1)
        rows.append({"global_batch": global_batch, "compute_s": sorted(compute)[len(compute) // 2],
                     "comm_s": sorted(comm)[len(comm) // 2], "gradient_bytes": n_bytes,
                     "sent_bytes": ring_allreduce_bytes(n_bytes, world())})
    return rows


def _watch_all_reduce():
    """A wrapper for dist.all_reduce that counts calls and how many were made while `during` is set."""
    real, seen = dist.all_reduce, {"calls": 0, "during backward": 0, "backward": False}

    def counting(*a, **k):
        seen["calls"] += 1
        seen["during backward"] += seen["backward"]
        return real(*a, **k)
    return real, counting, seen


def _bucketed_step(model, opt, x, y, finish, seen):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    seen["backward"] = True
    loss.backward()
    seen["backward"] = False
    finish()
    opt.step()


def check_bucketed_ddp(attach, assign, cap_bytes: int = 2**16, steps: int = 3, layers: int = 6,
                       width: int = 64, batch: int = 32, seed: int = 0) -> dict:
    """On every rank: train gelu_stack(layers, width) for `steps` SGD steps with a student's DDP,
    buckets = assign(gradient bytes per parameter, cap_bytes), finish = attach(model, buckets),
    then per step backward() and finish(); against one process on the whole batch (the
    reference) and torch's DDP with the same cap. Returns the largest parameter differences, the
    all-reduces per step, how many were started while backward() was still running, the buckets."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(seed)
    ref = gelu_stack(layers, width)
    mine, theirs = gelu_stack(layers, width), gelu_stack(layers, width)
    mine.load_state_dict(ref.state_dict())
    theirs.load_state_dict(ref.state_dict())
    theirs = DDP(theirs, bucket_cap_mb=cap_bytes / 2**20)
    buckets = assign([q.numel() * q.element_size() for q in mine.parameters()], cap_bytes)
    real, counting, seen = _watch_all_reduce()
    dist.all_reduce = counting
    try:
        finish = attach(mine, buckets)
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.1) for k, m in (("ref", ref), ("mine", mine), ("ddp", theirs))}
        for step in range(steps):
            x, y = _regression(seed + step, batch, width)
            _bucketed_step(mine, opts["mine"], shard(x), shard(y), finish, seen)
        calls, during = seen["calls"], seen["during backward"]
    finally:
        dist.all_reduce = real
    for step in range(steps):
        x, y = _regression(seed + step, batch, width)
        for name, m, xs, ys in (("ref", ref, x, y), ("ddp", theirs, shard(x), shard(y))):
            opts[name].zero_grad()
            F.mse_loss(m(xs), ys).backward()
            opts[name].step()
    flat = lambda m: torch.cat([q.detach().flatten() for q in m.parameters()])
    return {"vs one process": (flat(mine) - flat(ref)).abs().max().item(),
            "vs torch DDP": (flat(mine) - flat(theirs.module)).abs().max().item(),
            "all-reduces per step": calls / steps, "started during backward": during / steps,
            "buckets": [list(b) for b in buckets]}


def time_bucketed_step(attach, assign, caps_bytes=(0, 2**16, 2**20, 2**30), layers: int = 8, width: int = 256,
                       batch: int = 64, steps: int = 10, seed: int = 0) -> list[dict]:
    """On every rank: median seconds per data-parallel training step of gelu_stack(layers, width)
    with a student's DDP at each bucket cap (0: every tensor alone; 2**30: one bucket), and with
    torch's DDP at its default (25 MiB, a 1 MiB first bucket). 2 warm-up steps each."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    x, y = _regression(seed, batch * world(), width)
    x, y = shard(x), shard(y)
    sync = torch.cuda.synchronize if device().type == "cuda" else (lambda: None)
    x, y = x.to(device()), y.to(device())
    rows = []
    for cap in (*caps_bytes, "ddp"):
        torch.manual_seed(seed)
        model = gelu_stack(layers, width).to(device())
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        real, counting, seen = _watch_all_reduce()
        dist.all_reduce = counting
        try:
            if cap == "ddp":
                ddp = DDP(model)
                opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
                model, finish, n_buckets = ddp, (lambda: None), None
            else:
                buckets = assign([q.numel() * q.element_size() for q in model.parameters()], cap)
                finish, n_buckets = attach(model, buckets), len(buckets)
            times = []
            for step in range(steps + 2):
                dist.barrier()
                t0 = time.perf_counter()
                _bucketed_step(model, opt, x, y, finish, seen)
                sync()
                if step >= 2:
                    times.append(time.perf_counter() - t0)
        finally:
            dist.all_reduce = real
        rows.append({"cap_bytes": cap, "buckets": n_buckets, "seconds": sorted(times)[len(times) // 2],
                     "gradient_bytes": sum(q.numel() * q.element_size() for q in model.parameters())})
    return rows


def fit_alpha_beta(sizes_bytes, seconds) -> tuple[float, float]:
    """(α seconds, β bytes/s) of t(n) = α + n/β, least squares on relative error (each point
    weighted by 1/t, so small messages count as much as large ones); α clipped at 0."""
    n = torch.as_tensor(sizes_bytes, dtype=torch.float64)
    t = torch.as_tensor(seconds, dtype=torch.float64)
    A = torch.stack([torch.ones_like(n), n], dim=1) / t[:, None]
    alpha, inv_beta = torch.linalg.lstsq(A, torch.ones_like(t)[:, None]).solution.flatten().tolist()
    return max(alpha, 0.0), (1 / inv_beta if inv_beta > 0 else float("inf"))


def train_topk(ratios=(1.0, 0.1, 0.01), steps: int = 200, batch: int = 64, lr: float | dict = 0.1, seed: int = 0,
               compress=None) -> dict:
    """On every rank: data-parallel SGD of an MLP classifier (784-128-10) on the Fashion-MNIST
    subset, once per ratio, gradients exchanged as top-k (index, value) pairs with error feedback
    (ratio 1: a plain all-reduce). Each rank takes its shard of a global batch of batch · p.
    `compress(grad, residual, k)` -> (indices, values, new residual) replaces topk_compress (a
    student's version). `lr`: one learning rate, or {ratio: learning rate}.
    Returns {ratio: {"loss": [per step], "test_accuracy", "sent_bytes_per_step"}}."""
    from .data import load_fashion_mnist
    ds = load_fashion_mnist()
    x, y = ds.tensors("train")
    xt, yt = ds.tensors("test")
    x, xt = x.flatten(1), xt.flatten(1)
    p, out = world(), {}
    for ratio in ratios:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.SGD(model.parameters(), lr=lr[ratio] if isinstance(lr, dict) else lr)
        residuals = [torch.zeros_like(q) for q in model.parameters()]
        gen = torch.Generator().manual_seed(seed)
        losses, sent = [], 0.0
        for _ in range(steps):
            idx = shard(torch.randint(0, len(x), (batch * p,), generator=gen))
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            for k, q in enumerate(model.parameters()):
                if ratio >= 1:
                    dist.all_reduce(q.grad)
                    q.grad /= p
                    sent += ring_allreduce_bytes(q.grad.numel() * 4, p)
                else:
                    q.grad, residuals[k], n = topk_all_reduce(q.grad, residuals[k], ratio, compress)
                    sent += n
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        out[ratio] = {"loss": losses, "test_accuracy": acc, "sent_bytes_per_step": sent / steps}
    return out

"""Counting work: model FLOP by formula, measured FLOP by torch's counter, and what they buy.

Conventions (the same as torch.utils.flop_counter.FlopCounterMode, so the two can be compared):
a multiply-add is 2 FLOP; bias adds, softmax, normalisation and activations count 0 in the
model formulas; a backward pass costs twice its forward (gradient w.r.t. the input and
w.r.t. the weight, each a matmul of the same size).
"""
import math
import operator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .bench import benchmark, quiet_native_stderr

# ---------------------------------------------------------------- model FLOP (formulas)


def _check_int(name: str, value, low: int = 1) -> int:
    """value as a Python int (NumPy integers accepted), or a ValueError naming the argument."""
    try:
        as_int = operator.index(value)
    except TypeError:
        as_int = None
    if isinstance(value, bool) or as_int is None or as_int < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return as_int


def matmul_flops(m: int, n: int, k: int, batch: int = 1) -> int:
    """FLOP of `batch` products of an (m×k) by a (k×n) matrix: 2·batch·m·n·k."""
    for name, v in (("m", m), ("n", n), ("k", k), ("batch", batch)):
        _check_int(name, v)
    return 2 * batch * m * n * k


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """FLOP of nn.Linear(in_features, out_features) applied to `tokens` vectors (bias not counted)."""
    return matmul_flops(tokens, out_features, in_features)


def attention_flops(seq_len: int, d_model: int, batch_size: int = 1, causal: bool = False) -> int:
    """FLOP of the two attention matmuls, scores = Q·Kᵀ and out = P·V, summed over heads.

    Heads split d_model, so the head count drops out: each matmul is 2·B·T·T·d_model.
    causal=True counts only the (T² + T)/2 query-key pairs a causal mask keeps: the work a
    kernel that skips masked blocks (FlashAttention) really does. FlopCounterMode and an eager
    implementation compute the full T×T scores and then mask, so they count causal=False.
    """
    for name, value in (("seq_len", seq_len), ("d_model", d_model), ("batch_size", batch_size)):
        _check_int(name, value)
    pairs = seq_len * (seq_len + 1) // 2 if causal else seq_len * seq_len
    return 2 * (2 * batch_size * pairs * d_model)


def gpt_block_flops(seq_len: int, d_model: int, batch_size: int = 1, causal: bool = False,
                    mlp_ratio: int = 4) -> int:
    """Forward FLOP of one GPT-2 block: QKV projection, attention, output projection, MLP.

    Per token: QKV 2·d·3d, projection 2·d·d, MLP 2·2·d·(mlp_ratio·d): 24·d² for mlp_ratio 4.
    """
    _check_int("mlp_ratio", mlp_ratio)
    tokens = _check_int("batch_size", batch_size) * _check_int("seq_len", seq_len)
    d = _check_int("d_model", d_model)
    dense = (linear_flops(tokens, d, 3 * d) + linear_flops(tokens, d, d)
             + linear_flops(tokens, d, mlp_ratio * d) + linear_flops(tokens, mlp_ratio * d, d))
    return dense + attention_flops(seq_len, d, batch_size, causal)


def transformer_flops(config, seq_len: int, batch_size: int = 1, backward: bool = False,
                      causal: bool = False) -> int:
    """FLOP of a GPT-2-style language model (n_layer blocks + the LM head) on one batch.

    config: a transformers GPT2Config, or any object with n_layer, n_embd, n_head, vocab_size
        (n_inner, when set and not None, is the MLP width; else 4·n_embd).
    backward=True: forward + backward (3× the forward, as FlopCounterMode counts it).
    causal=True: attention counts only unmasked pairs (see attention_flops).
    GPT-2 small (12 layers, 768 wide, vocab 50257) at seq_len 1024: 291,648,307,200 forward.
    """
    missing = [a for a in ("n_layer", "n_embd", "n_head", "vocab_size") if not hasattr(config, a)]
    if missing:
        raise TypeError(f"config must have n_layer, n_embd, n_head and vocab_size; "
                        f"{type(config).__name__} lacks {', '.join(missing)}")
    n_layer, d, n_head, vocab = (_check_int(f"config.{a}", getattr(config, a))
                                 for a in ("n_layer", "n_embd", "n_head", "vocab_size"))
    if d % n_head:
        raise ValueError(f"config.n_embd ({d}) must be divisible by config.n_head ({n_head})")
    inner = getattr(config, "n_inner", None) or 4 * d
    if inner % d:
        raise ValueError(f"config.n_inner ({inner}) must be a multiple of n_embd ({d}) here")
    block = gpt_block_flops(seq_len, d, batch_size, causal, mlp_ratio=inner // d)
    head = linear_flops(batch_size * seq_len, d, vocab)
    forward = n_layer * block + head
    return 3 * forward if backward else forward


def training_flops(n_params: float, n_tokens: float) -> float:
    """The 6·N·D rule of thumb: FLOP to train N parameters on D tokens (2 forward + 4 backward)."""
    if n_params <= 0 or n_tokens <= 0:
        raise ValueError(f"n_params and n_tokens must be > 0, got {n_params}, {n_tokens}")
    return 6.0 * n_params * n_tokens


# ---------------------------------------------------------------- measured FLOP (FlopCounterMode)


def count_flops(fn, *args, **kwargs) -> tuple[int, dict[str, int]]:
    """Run fn(*args, **kwargs) under FlopCounterMode; return (total FLOP, FLOP per aten op).

    The counter sees the aten ops torch dispatches and has a formula only for some of them
    (matmuls, convolutions, some attention kernels). Ops it has no formula for count 0.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args, **kwargs)
    by_op = {str(op): int(v)
             for op, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def is_view_op(func, args, kwargs, out) -> bool:
    """True for an aten op that moves no data: its results all share memory with its inputs and it
    writes nothing (view, transpose, expand, and _unsafe_view, a view that does not say so).
    In-place ops (add_) share memory too, but they read and write it."""
    from torch.utils._pytree import tree_leaves
    if func.is_view:
        return True
    if func._schema.is_mutable:
        return False
    ins = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    return bool(outs) and all(t.untyped_storage().data_ptr() in ins for t in outs)


def count_bytes(fn, *args, **kwargs) -> dict[str, int]:
    """Run fn(*args, **kwargs) and count, per aten op ("aten::addmm"), the bytes its tensors hold:
    every tensor argument read once, every tensor result written once. That is the least memory
    traffic an op causes when nothing stays in a cache between ops: the bytes a roofline needs.
    Views move nothing and count 0 (is_view_op); an in-place op reads and writes its tensor."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    counts: dict[str, int] = {}

    class _Bytes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if not is_view_op(func, args, kwargs, out):
                tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
                name = "aten::" + func.overloadpacket.__name__
                counts[name] = counts.get(name, 0) + sum(t.numel() * t.element_size() for t in tensors)
            return out

    with _Bytes():
        fn(*args, **kwargs)
    return counts


# ---------------------------------------------------------------- rates, MFU, roofline


def flop_rate(flops: float, seconds: float) -> float:
    """Achieved FLOP/s."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if flops < 0:
        raise ValueError(f"flops must be >= 0, got {flops!r}")
    return flops / seconds


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s (model FLOP / time) as a fraction of a peak."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0 FLOP/s, got {peak_flops!r}")
    return flop_rate(flops, seconds) / peak_flops


def training_days(total_flops: float, n_gpus: int, peak_flops: float, mfu: float) -> float:
    """Wall-clock days to do `total_flops` on n_gpus, each reaching mfu × peak_flops."""
    _check_int("n_gpus", n_gpus)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    if total_flops <= 0 or peak_flops <= 0:
        raise ValueError(f"total_flops and peak_flops must be > 0, got {total_flops}, {peak_flops}")
    return total_flops / (n_gpus * peak_flops * mfu) / 86400.0


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOP per byte moved to or from main memory."""
    if nbytes <= 0:
        raise ValueError(f"nbytes must be > 0, got {nbytes!r}")
    return flops / nbytes


def attainable_flops(intensity: float, peak_flops: float, peak_bytes_per_s: float) -> float:
    """The roofline: min(peak FLOP/s, intensity × peak bandwidth)."""
    if intensity < 0 or peak_flops <= 0 or peak_bytes_per_s <= 0:
        raise ValueError("intensity must be >= 0 and the peaks > 0, got "
                         f"{intensity}, {peak_flops}, {peak_bytes_per_s}")
    return min(peak_flops, intensity * peak_bytes_per_s)


@dataclass
class OpPoint:
    """One measured operation on the roofline."""
    name: str
    flops: float      # FLOP of one call (model count)
    nbytes: float     # bytes one call must at least read + write in main memory
    seconds: float    # median time of one call

    def __post_init__(self):
        if not self.seconds > 0 or not self.nbytes > 0 or self.flops < 0:
            raise ValueError(f"OpPoint {self.name!r} needs seconds > 0, nbytes > 0 and flops >= 0, "
                             f"got {self.seconds}, {self.nbytes}, {self.flops}")

    @property
    def intensity(self) -> float:
        return arithmetic_intensity(self.flops, self.nbytes)

    @property
    def flop_rate(self) -> float:
        return self.flops / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.nbytes / self.seconds


def matmul_sweep(device, sizes, dtypes=("fp32",), min_time_s: float = 0.1, timer=None) -> list[dict]:
    """Time square n×n×n matmuls for each size and dtype; return rows with the achieved rate.

    timer: how to time one matmul, a function of a no-argument callable returning its median
    seconds (a student's harness); None uses labkit.bench.benchmark with `min_time_s`.
    Small matmuls cannot fill the machine (launch overhead, too little parallel work, data
    not reused enough): the sweep shows how large a matmul must be to approach the peak.
    Rows: {"n", "dtype", "flops", "seconds", "flop_rate"}.
    """
    from tqdm.auto import tqdm
    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    device = torch.device(device)
    dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    for dtype in dtypes:
        if dtype not in names:
            raise ValueError(f"dtypes must be among {sorted(names)}, got {dtype!r}")
    sizes = [_check_int("sizes[i]", n) for n in sizes]
    rows = []
    for dtype in dtypes:
        for n in tqdm(sizes, desc=f"matmul sweep {dtype}", leave=False):
            a = torch.randn(n, n, device=device, dtype=names[dtype])
            b = torch.randn(n, n, device=device, dtype=names[dtype])
            seconds = (float(timer(lambda: a @ b)) if timer else
                       benchmark(lambda: a @ b, device=device, min_time_s=min_time_s).median_s)
            if not seconds > 0:
                raise ValueError(f"timer must return a time > 0 seconds, got {seconds!r} for n={n} {dtype}")
            f = matmul_flops(n, n, n)
            rows.append({"n": n, "dtype": dtype, "flops": f, "seconds": seconds, "flop_rate": f / seconds})
    return rows


# Estimated FLOP per element for ops FlopCounterMode gives 0 (exp, max, divide… each counted 1).
SOFTMAX_FLOP_PER_ELEMENT = 5      # max, subtract, exp, sum, divide
LAYERNORM_FLOP_PER_ELEMENT = 8    # mean, subtract, square, mean, rsqrt-multiply, scale, shift, +eps


def roofline_ops(device, sizes=(256, 1024, 2048), elements: int = 2**24, dtype: str = "fp32",
                 min_time_s: float = 0.1) -> list[OpPoint]:
    """Measure the ops that the roofline places: square matmuls, a matrix-vector product,
    an elementwise add, a row softmax and a layer norm. Bytes are the minimum traffic:
    each input read once and each output written once. `elements` sizes the memory-bound ops
    (and the matrix-vector product, 4·elements entries): keep it well past the last-level cache,
    or the points measure the cache, not main memory (GPUs have 40-50 MB of L2; this kit's CPU
    machines up to hundreds of MB of L3). dtype: "fp32", "fp16" or "bf16"."""
    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    if _check_int("elements", elements, 1024) % 1024:
        raise ValueError(f"elements must be a multiple of 1024 (rows of 1024 for softmax), got {elements}")
    sizes = [_check_int("sizes[i]", n) for n in sizes]
    dtype = names[dtype]
    device = torch.device(device)
    size = torch.tensor([], dtype=dtype).element_size()
    points = []
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        t = benchmark(lambda: a @ b, device=device, min_time_s=min_time_s)
        points.append(OpPoint(f"matmul {n}³", matmul_flops(n, n, n), 3 * n * n * size, t.median_s))
    n = math.isqrt(4 * elements)
    a = torch.randn(n, n, device=device, dtype=dtype)
    v = torch.randn(n, 1, device=device, dtype=dtype)
    t = benchmark(lambda: a @ v, device=device, min_time_s=min_time_s)
    points.append(OpPoint(f"matvec {n}×{n}", matmul_flops(n, 1, n), (n * n + 2 * n) * size, t.median_s))
    x, y = torch.randn(elements, device=device, dtype=dtype), torch.randn(elements, device=device, dtype=dtype)
    z = torch.empty_like(x)  # preallocated: a fresh 64 MB output would time page faults, not the add
    t = benchmark(lambda: torch.add(x, y, out=z), device=device, min_time_s=min_time_s)
    points.append(OpPoint("add", elements, 3 * elements * size, t.median_s))
    rows = x.view(-1, 1024)
    t = benchmark(lambda: torch.softmax(rows, dim=-1), device=device, min_time_s=min_time_s)
    points.append(OpPoint("softmax", SOFTMAX_FLOP_PER_ELEMENT * elements, 2 * elements * size, t.median_s))
    t = benchmark(lambda: F.layer_norm(rows, (1024,)), device=device, min_time_s=min_time_s)
    points.append(OpPoint("layernorm", LAYERNORM_FLOP_PER_ELEMENT * elements, 2 * elements * size, t.median_s))
    return points


# ---------------------------------------------------------------- data movement in a transformer


class EncoderLayer(nn.Module):
    """A BERT encoder layer written op by op (no fused attention), so that a profiler sees
    every matmul, softmax, layer norm and elementwise op separately, as in
    "Data Movement Is All You Need" (Ivanov et al., arXiv:2007.00072)."""

    def __init__(self, d_model: int = 1024, n_head: int = 16, d_ff: int = 4096, dropout: float = 0.1):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, D = x.shape
        H = self.n_head
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // H))
        attn = self.drop(torch.softmax(scores, dim=-1)) @ v
        x = self.ln1(x + self.drop(self.proj(attn.transpose(1, 2).reshape(B, T, D))))
        return self.ln2(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


CONTRACTION = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm"}
NORMALIZATION = {"aten::_softmax": SOFTMAX_FLOP_PER_ELEMENT,
                 "aten::_softmax_backward_data": SOFTMAX_FLOP_PER_ELEMENT,
                 "aten::native_layer_norm": LAYERNORM_FLOP_PER_ELEMENT,
                 "aten::native_layer_norm_backward": LAYERNORM_FLOP_PER_ELEMENT}
# Dropout is one fused op on a GPU (native_dropout: draw + scale) and three on a CPU
# (bernoulli_, div_, mul): both count about 2-3 FLOP per element.
ELEMENTWISE = {"aten::add": 1, "aten::add_": 1, "aten::mul": 1, "aten::mul_": 1, "aten::div": 1,
               "aten::div_": 1, "aten::gelu": 8, "aten::gelu_backward": 8, "aten::native_dropout": 2,
               "aten::native_dropout_backward": 1, "aten::bernoulli_": 1, "aten::dropout": 0}
CLASSES = ("tensor contraction", "statistical normalization", "element-wise", "other")


def op_class(name: str) -> str:
    """The operator class of an aten op name, as in Ivanov et al.'s table."""
    if name in CONTRACTION:
        return "tensor contraction"
    if name in NORMALIZATION:
        return "statistical normalization"
    if name in ELEMENTWISE:
        return "element-wise"
    return "other"


def profile_ops(layer: nn.Module, x: torch.Tensor, backward: bool = True, iters: int = 3) -> list[dict]:
    """Profile layer(x) (and its backward) op by op, one row per aten op, per iteration:
    {"op", "class", "flop", "self_s", "total_s", "calls"}.

    self_s is the time inside the op itself; total_s also holds the ops it called (aten::linear's
    total holds its aten::addmm), so totals of nested ops overlap and only self times add up.
    Time is CPU time on a CPU, kernel time on a GPU (the kernels each aten op launched).
    FLOP of tensor contractions come from FlopCounterMode (exact); FLOP of normalisation and
    element-wise ops are estimated per element (see NORMALIZATION / ELEMENTWISE costs), since
    the counter gives them 0. Rows are sorted by self time, largest first.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    _check_int("iters", iters)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if backward:  # as for a layer inside a stack: the gradient w.r.t. its input is computed too
        x = x.detach().requires_grad_()

    def step():
        layer.zero_grad(set_to_none=True)  # as in training: no gradient accumulation ops
        out = layer(x)
        if backward:
            out.sum().backward()

    for _ in range(2):  # warm-up: allocator, caches, lazy init
        step()
    cuda = x.device.type == "cuda"
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []), record_shapes=True)
    with quiet_native_stderr():
        prof.start()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize(x.device)
    with quiet_native_stderr():
        prof.stop()
    _, counted = count_flops(step)
    counted = {"aten::" + str(op).split(".")[1]: n for op, n in counted.items()}  # aten.mm -> aten::mm
    rows: dict[str, dict] = {}
    for evt in prof.key_averages(group_by_input_shape=True):
        if evt.device_type != DeviceType.CPU:
            continue  # a GPU kernel's own row: its time is already in the aten op that launched it
        row = rows.setdefault(evt.key, {"op": evt.key, "class": op_class(evt.key), "flop": 0.0,
                                        "self_s": 0.0, "total_s": 0.0, "calls": 0})
        row["self_s"] += (evt.self_device_time_total if cuda else evt.self_cpu_time_total) * 1e-6 / iters
        row["total_s"] += (evt.device_time_total if cuda else evt.cpu_time_total) * 1e-6 / iters
        row["calls"] += evt.count // iters
        cost = NORMALIZATION.get(evt.key) or ELEMENTWISE.get(evt.key)
        if cost and evt.input_shapes and evt.input_shapes[0]:
            row["flop"] += cost * math.prod(evt.input_shapes[0]) * evt.count / iters
    for op, n in counted.items():
        rows.setdefault(op, {"op": op, "class": op_class(op), "flop": 0.0, "self_s": 0.0, "total_s": 0.0,
                             "calls": 0})["flop"] = float(n)
    if not any(r["self_s"] for r in rows.values()):
        raise RuntimeError("the profiler recorded no operator time (on a GPU: is CUPTI available to "
                           "this process? another profiler, e.g. DCGM, may hold it)")
    return sorted(rows.values(), key=lambda r: -r["self_s"])


def class_shares(rows: list[dict]) -> dict[str, dict]:
    """Ivanov et al.'s table from profile_ops rows: for each class, its FLOP and self time, and
    their shares of the total in percent: {class: {"flop", "seconds", "flop_pct", "runtime_pct"}}.
    Self times, never totals: a nested op's time is in its parent's total too."""
    flop, seconds = dict.fromkeys(CLASSES, 0.0), dict.fromkeys(CLASSES, 0.0)
    for r in rows:
        cls = op_class(r["op"])
        flop[cls] += r["flop"]
        seconds[cls] += r["self_s"]
    total_f, total_s = sum(flop.values()), sum(seconds.values())
    if total_f <= 0 or total_s <= 0:
        raise ValueError(f"rows must hold some FLOP and some time, got {total_f} FLOP in {total_s} s")
    return {c: {"flop": flop[c], "seconds": seconds[c], "flop_pct": 100 * flop[c] / total_f,
                "runtime_pct": 100 * seconds[c] / total_s} for c in CLASSES}

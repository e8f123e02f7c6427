"""GPU kernels in Triton, each beside the plain PyTorch it replaces.

    add(x, y)           vector add: the "hello world", purely memory-bound
    softmax(x)          row-wise softmax over the last dim, numerically stable, any row length
    bias_gelu(x, bias)  gelu(x + bias) fused: one trip through memory instead of two
    matmul(a, b)        tiled matrix product, fp32 accumulation, grouped tile order
    count_traffic()     the bytes the kernels load and store, counted (interpreter only)

Where it runs. With a CUDA GPU, Triton compiles each kernel for it. Without one, this module
switches on Triton's interpreter (TRITON_INTERPRET=1) *before* any kernel is defined, so the
same kernels run, slowly, on CPU tensors: correct, testable, but its timings say nothing about
hardware. INTERPRETED tells which mode is on. Import this module before defining kernels of
your own in a notebook, and they get the same mode. In the interpreter, use fp32 or fp16
(bf16 tl.dot gives wrong results there).
"""
import contextlib
import os
from dataclasses import dataclass

import torch

# No GPU, or LABKIT_DEVICE=cpu (labkit's device switch): the interpreter, on CPU tensors.
INTERPRETED = (os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available()
               or os.environ.get("LABKIT_DEVICE", "auto").startswith("cpu"))
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"  # labkit/__init__.py sets it first; read by @triton.jit

try:
    import triton  # noqa: E402
    import triton.language as tl  # noqa: E402
except ImportError as e:  # Triton ships wheels for Linux only
    import platform
    raise ImportError(
        f"labkit.kernels (lab 02) needs Triton, which is not installed here ({platform.system()} {platform.machine()}; "
        f"{e}). Triton publishes wheels for Linux (x86_64 and aarch64) only: on macOS or Windows run lab 02 on a "
        "Linux machine, in WSL2 (Windows) or in a Linux container, or on the course's cluster. Every other lab "
        "works without Triton.") from e

if INTERPRETED:
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(tl.standard.max, InterpretedFunction):
        raise ImportError("Triton was imported before its interpreter was switched on, so its library functions "
                          "(tl.max, tl.sum, ...) cannot run on CPU tensors. Import labkit before anything that "
                          "imports triton, or start Python with TRITON_INTERPRET=1.")

DEVICE = "cpu" if INTERPRETED else "cuda"
_DTYPES = (torch.float32, torch.float16) if INTERPRETED else (torch.float32, torch.float16, torch.bfloat16)


def _check(name: str, t, ndim: int | None = None) -> None:
    """A clear error for anything a kernel cannot take: type, device, dtype, rank."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != DEVICE:
        why = "Triton's interpreter runs on CPU tensors (no CUDA GPU here)" if INTERPRETED else \
            "kernels are compiled for the GPU"
        raise ValueError(f"{name} is on {t.device}, but {why}: move it with .to({DEVICE!r})")
    if t.dtype not in _DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; supported here: {[str(d) for d in _DTYPES]}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")


def _same(a_name, a, b_name, b, shape=True) -> None:
    if a.dtype != b.dtype:
        raise ValueError(f"{a_name} and {b_name} must have the same dtype, got {a.dtype} and {b.dtype}")
    if shape and a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


@dataclass
class Traffic:
    """The bytes kernels asked memory for while counting: every element of every tl.load and
    tl.store that its mask let through, times its size. No cache is modelled: it is the traffic
    a kernel would cause if nothing it loaded were found on chip (what Triton's tiles decide)."""
    read: int = 0
    written: int = 0

    @property
    def total(self) -> int:
        return self.read + self.written


@contextlib.contextmanager
def count_traffic():
    """Count the bytes every kernel launched inside the block loads and stores (a Traffic).

    Counted by Triton's interpreter, so only where the kernels are interpreted (no GPU, or
    LABKIT_DEVICE=cpu); on a GPU, Nsight Compute measures the DRAM traffic instead
    (ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum python script.py)."""
    if not INTERPRETED:
        raise RuntimeError("count_traffic counts in Triton's interpreter, which is off on this GPU; measure DRAM "
                           "traffic with Nsight Compute (ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum)")
    import numpy as np
    from triton.runtime.interpreter import InterpreterBuilder
    traffic = Traffic()
    load, store = InterpreterBuilder.create_masked_load, InterpreterBuilder.create_masked_store

    def counted_load(self, ptrs, mask, other, *args):
        out = load(self, ptrs, mask, other, *args)
        traffic.read += int(np.count_nonzero(mask.data)) * out.data.dtype.itemsize
        return out

    def counted_store(self, ptrs, value, mask, *args):
        traffic.written += int(np.count_nonzero(mask.data)) * value.data.dtype.itemsize
        return store(self, ptrs, value, mask, *args)

    InterpreterBuilder.create_masked_load, InterpreterBuilder.create_masked_store = counted_load, counted_store
    try:
        yield traffic
    finally:
        InterpreterBuilder.create_masked_load, InterpreterBuilder.create_masked_store = load, store


# ---------------------------------------------------------------- vector add


@triton.jit
def _add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)                       # which block of BLOCK elements this program owns
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n                              # the last block may run past the end
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


def add(x: torch.Tensor, y: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """x + y elementwise (same shape and dtype), one program per `block` elements."""
    _check("x", x), _check("y", y), _same("x", x, "y", y)
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    x, y = x.contiguous(), y.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    _add_kernel[(triton.cdiv(n, block),)](x, y, out, n, BLOCK=block)
    return out


# ---------------------------------------------------------------- softmax


@triton.jit
def _softmax_row_kernel(x_ptr, y_ptr, n_cols, sx, sy, BLOCK: tl.constexpr):
    # one program per row, the whole row in one block: read once, write once
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sx + offs, mask=mask, other=-float("inf")).to(tl.float32)
    z = x - tl.max(x, axis=0)                    # exp of a large x overflows; of x - max never does
    e = tl.exp(z)
    tl.store(y_ptr + row * sy + offs, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_online_kernel(x_ptr, y_ptr, n_cols, sx, sy, BLOCK: tl.constexpr):
    # rows longer than a block: pass 1 keeps, per lane, a running max m and a running sum s of
    # exp(x - m), rescaling s whenever m grows ("online softmax"); pass 2 writes the result.
    row = tl.program_id(0)
    m = tl.full((BLOCK,), -float("inf"), tl.float32)
    s = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * sx + offs, mask=offs < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # a lane that has seen only -inf keeps s = 0; shifting it by 0 avoids exp(-inf - -inf) = nan
        shift = tl.where(m_new > -float("inf"), m_new, 0.0)
        s = s * tl.exp(m - shift) + tl.exp(x - shift)
        m = m_new
    row_max = tl.max(m, axis=0)
    total = tl.sum(s * tl.exp(m - row_max), axis=0)
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n_cols
        x = tl.load(x_ptr + row * sx + offs, mask=mask, other=-float("inf")).to(tl.float32)
        tl.store(y_ptr + row * sy + offs, (tl.exp(x - row_max) / total).to(y_ptr.dtype.element_ty), mask=mask)


MAX_SINGLE_BLOCK = 8192 if not INTERPRETED else 4096


def softmax(x: torch.Tensor, online_block: int | None = None) -> torch.Tensor:
    """Softmax over the last dimension, computed in fp32, returned in x's dtype.

    Rows of up to MAX_SINGLE_BLOCK elements take one block per row; longer rows (or any row,
    when online_block is given) take the two-pass online kernel with blocks of online_block.
    """
    _check("x", x)
    n_cols = x.shape[-1]
    x2 = x.contiguous().view(-1, n_cols)
    y = torch.empty_like(x2)
    block = triton.next_power_of_2(n_cols)
    if online_block is None and block <= MAX_SINGLE_BLOCK:
        warps = 4 if block <= 2048 else 8
        _softmax_row_kernel[(x2.shape[0],)](x2, y, n_cols, x2.stride(0), y.stride(0), BLOCK=block, num_warps=warps)
    else:
        online_block = online_block or 2048
        if online_block < 16 or online_block & (online_block - 1):
            raise ValueError(f"online_block must be a power of two >= 16, got {online_block}")
        _softmax_online_kernel[(x2.shape[0],)](x2, y, n_cols, x2.stride(0), y.stride(0), BLOCK=online_block,
                                              num_warps=8)
    return y.view(x.shape)


# ---------------------------------------------------------------- fused bias + GELU


@triton.jit
def _gelu(z):
    return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))  # exact GELU, as F.gelu


@triton.jit
def _bias_gelu_kernel(x_ptr, b_ptr, out_ptr, n, n_cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + offs % n_cols, mask=mask).to(tl.float32)   # the bias repeats every row
    z = x + b
    y = _gelu(z)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """gelu(x + bias) in one kernel; bias has shape (x.shape[-1],).

    Unfused, PyTorch reads x and writes x + bias, then reads that back and writes the GELU:
    4 trips of x's size through memory. Fused: 2 (read x, write the result).
    """
    _check("x", x), _check("bias", bias, ndim=1), _same("x", x, "bias", bias, shape=False)
    if bias.shape[0] != x.shape[-1]:
        raise ValueError(f"bias must have shape ({x.shape[-1]},) to match x's last dim, got {tuple(bias.shape)}")
    x = x.contiguous()
    out = torch.empty_like(x)
    _bias_gelu_kernel[(triton.cdiv(x.numel(), block),)](x, bias.contiguous(), out, x.numel(), x.shape[-1], BLOCK=block)
    return out


@triton.jit
def _bias_add_kernel(x_ptr, b_ptr, out_ptr, n, n_cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = tl.load(x_ptr + offs, mask=mask) + tl.load(b_ptr + offs % n_cols, mask=mask)
    tl.store(out_ptr + offs, z, mask=mask)


@triton.jit
def _gelu_kernel(z_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = tl.load(z_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, _gelu(z).to(out_ptr.dtype.element_ty), mask=mask)


def bias_gelu_unfused(x: torch.Tensor, bias: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """gelu(x + bias) as eager PyTorch runs it, in two Triton kernels: x + bias goes to memory
    and is read back. The fused kernel's yardstick (count_traffic shows the difference)."""
    _check("x", x), _check("bias", bias, ndim=1), _same("x", x, "bias", bias, shape=False)
    if bias.shape[0] != x.shape[-1]:
        raise ValueError(f"bias must have shape ({x.shape[-1]},) to match x's last dim, got {tuple(bias.shape)}")
    x = x.contiguous()
    z, out = torch.empty_like(x), torch.empty_like(x)
    grid = (triton.cdiv(x.numel(), block),)
    _bias_add_kernel[grid](x, bias.contiguous(), z, x.numel(), x.shape[-1], BLOCK=block)
    _gelu_kernel[grid](z, out, x.numel(), BLOCK=block)
    return out


def bias_gelu_reference(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The unfused PyTorch version: two kernels, two round trips through memory."""
    return torch.nn.functional.gelu(x + bias)


# ---------------------------------------------------------------- matmul


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, IEEE: tl.constexpr):
    # Each program computes one BLOCK_M x BLOCK_N tile of C, walking K in steps of BLOCK_K.
    # Tiles are handed out in groups of GROUP_M rows, so programs running at the same time
    # share rows of A and columns of B in the L2 cache.
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = a_ptr + rm[:, None] * sam + rk[None, :] * sak
    b = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)          # accumulate in fp32
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a_tile = tl.load(a, mask=(rm[:, None] < M) & (rk[None, :] < k_left), other=0.0)
        b_tile = tl.load(b, mask=(rk[:, None] < k_left) & (rn[None, :] < N), other=0.0)
        if IEEE:
            acc = tl.dot(a_tile, b_tile, acc, input_precision="ieee")  # true fp32, as torch's default
        else:
            acc = tl.dot(a_tile, b_tile, acc)
        a += BLOCK_K * sak
        b += BLOCK_K * sbk
    c = c_ptr + rm[:, None] * scm + rn[None, :] * scn
    tl.store(c, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


# The tiles the GPU autotuner tries, (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps), per element size.
# Each must fit an A100's shared memory (163 KiB per block) and spill no registers on sm_80 and
# sm_90: scripts/compile_kernels.py compiles every one for both and checks (tests/test_kernels_compile.py).
# fp32 tiles are smaller: each element takes twice the shared memory, and its IEEE product twice
# the registers (the fp16 set in fp32 needs 192 KiB and spills 1.2-1.7 KiB per thread).
_TILES = {
    2: [(128, 256, 64, 3, 8), (256, 128, 32, 3, 8), (128, 128, 64, 4, 4), (128, 128, 32, 4, 4),
        (128, 64, 32, 4, 8), (64, 128, 32, 4, 4), (64, 64, 32, 5, 2)],
    4: [(128, 128, 32, 3, 8), (128, 64, 32, 4, 8), (64, 128, 32, 3, 4), (128, 128, 16, 4, 8),
        (64, 64, 32, 4, 4), (32, 64, 32, 5, 2)],
}


def matmul_configs(dtype) -> list:
    """The autotuner's configs for `dtype` ("fp32", "fp16", "bf16" or a torch dtype)."""
    size = {"fp32": 4, "fp16": 2, "bf16": 2}.get(dtype) if isinstance(dtype, str) else dtype.itemsize
    if size not in _TILES:
        raise ValueError(f"dtype must be fp32, fp16 or bf16, got {dtype!r}")
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for m, n, k, s, w in _TILES[size]]


def _tile(c) -> tuple:
    return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages, c.num_warps


def _configs_for_dtype(configs, named_args, **kwargs):
    """Autotune's early prune: only the tiles meant for this call's element size."""
    keep = {_tile(c) for c in matmul_configs(named_args["a_ptr"].dtype)}
    return [c for c in configs if _tile(c) in keep]


# On a GPU the tile sizes are tuned once per (M, N, K, dtype); the interpreter uses small fixed tiles.
_matmul_tuned = None if INTERPRETED else triton.autotune(
    list({_tile(c): c for dt in ("fp32", "fp16") for c in matmul_configs(dt)}.values()),
    key=["M", "N", "K"], prune_configs_by={"early_config_prune": _configs_for_dtype})(_matmul_kernel)


def tile_shared_bytes(block: tuple[int, int, int], element_size: int, stages: int) -> int:
    """Shared memory one program of the matmul kernel needs at least: stages − 1 pipeline buffers,
    each a BLOCK_M×BLOCK_K tile of A and a BLOCK_K×BLOCK_N tile of B. Triton may take more (on
    Hopper it keeps every stage; the store may stage the output tile), never less: checked against
    the compiler's own figure for every config on sm_80 and sm_90 (tests/test_kernels_compile.py).
    A tile whose lower bound is past the GPU's limit cannot launch."""
    bm, bn, bk = block
    return (stages - 1) * (bm * bk + bk * bn) * element_size


def check_tile(block: tuple[int, int, int], element_size: int, warps: int, stages: int, shared_limit: int) -> None:
    """Refuse, before launch, a matmul tile this GPU cannot run well: one that needs more shared
    memory than a block may have (the launch would fail with OutOfResources), or more fp32
    accumulators per thread than a thread has registers (255: the kernel would spill to memory)."""
    need = tile_shared_bytes(block, element_size, stages)
    if need > shared_limit:
        raise ValueError(f"block={block} needs at least {need / 1024:.0f} KiB of shared memory per program ({stages} stages of "
                         f"{element_size}-byte tiles), this GPU allows {shared_limit / 1024:.0f} KiB per block: "
                         "use a smaller BLOCK_K or tile")
    acc = block[0] * block[1] // (32 * warps)
    if acc > 255:
        raise ValueError(f"block={block} keeps {acc} fp32 accumulators per thread ({block[0]}×{block[1]} over "
                         f"{warps} warps of 32), more than the 255 registers a thread has: use a smaller tile")
    # measured (scripts/compile_kernels.py, sm_80 and sm_90): past 64 accumulators per thread for
    # fp32 inputs, or 128 for 16-bit ones, the kernel spills registers to memory
    if acc > (64 if element_size >= 4 else 128):
        import warnings
        warnings.warn(f"block={block} keeps {acc} fp32 accumulators per thread with {element_size}-byte inputs: "
                      "on A100/H100 this tile spills registers to memory, so expect it to be slow", stacklevel=3)


def matmul(a: torch.Tensor, b: torch.Tensor, block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """a @ b for 2-D a (M×K) and b (K×N) of the same dtype; fp32 accumulation, output in a's dtype.

    block=(BLOCK_M, BLOCK_N, BLOCK_K) fixes the tile (tuning exercises), run with 4 warps (8 from
    128×128 up) and 3 stages; on a GPU a tile that cannot fit is refused before launch (check_tile).
    By default the GPU autotunes it and the interpreter uses (32, 32, 32).
    """
    _check("a", a, ndim=2), _check("b", b, ndim=2), _same("a", a, "b", b, shape=False)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a's columns must equal b's rows, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    ieee = a.dtype == torch.float32
    args = (a, b, c, M, N, K, *a.stride(), *b.stride(), *c.stride())
    if block is None and not INTERPRETED:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
        _matmul_tuned[grid](*args, IEEE=ieee)
    else:
        bm, bn, bk = block or (32, 32, 32)
        for v in (bm, bn, bk):
            if v < 16 or v & (v - 1):
                raise ValueError(f"block sizes must be powers of two >= 16, got {block}")
        warps, stages = (4 if bm * bn < 128 * 128 else 8), 3
        if not INTERPRETED:
            limit = getattr(torch.cuda.get_device_properties(a.device), "shared_memory_per_block_optin", None)
            check_tile((bm, bn, bk), a.element_size(), warps, stages, limit or 2**31)  # (ROCm does not report it)
        _matmul_kernel[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](*args, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                                                 GROUP_M=8, IEEE=ieee, num_warps=warps,
                                                                 num_stages=stages)
    return c


# ---------------------------------------------------------------- benchmarks


def _inputs(name: str, size: int, rows: int, dtype: torch.dtype, device):
    if name == "add":
        return (torch.randn(size, device=device, dtype=dtype), torch.randn(size, device=device, dtype=dtype))
    if name == "softmax":
        return (torch.randn(rows, size, device=device, dtype=dtype),)
    if name == "bias_gelu":
        return (torch.randn(rows, size, device=device, dtype=dtype), torch.randn(size, device=device, dtype=dtype))
    return (torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype))


KERNELS = {"add": (add, torch.add), "softmax": (softmax, lambda x: torch.softmax(x, -1)),
           "bias_gelu": (bias_gelu, bias_gelu_reference), "matmul": (matmul, torch.matmul)}


def work(name: str, size: int, rows: int, element_size: int) -> tuple[float, float]:
    """(FLOP, minimum bytes moved) of one call: each input read once, the output written once.
    FLOP of softmax and GELU are per-element estimates (5 and 8), as in labkit.flops."""
    if name == "add":
        return size, 3 * size * element_size
    if name == "softmax":
        return 5 * rows * size, 2 * rows * size * element_size
    if name == "bias_gelu":
        return 9 * rows * size, (2 * rows * size + size) * element_size
    if name == "matmul":
        return 2 * size**3, 3 * size * size * element_size
    raise ValueError(f"name must be one of {sorted(KERNELS)}, got {name!r}")


def kernel_sweep(name: str, sizes, dtype: str = "fp32", rows: int = 4096, with_compile: bool | None = None,
                 min_time_s: float = 0.1) -> list[dict]:
    """Time the Triton kernel `name` against torch eager (and torch.compile on a GPU) per size.

    size is the vector length (add), the row length (softmax, bias_gelu; `rows` rows) or n of
    an n×n×n matmul. Rows: {"kernel", "size", "impl", "seconds", "flops", "bytes",
    "bytes_per_s", "flop_rate", "interpreted"}. Interpreter timings measure Python, not a GPU:
    the "interpreted" flag says so, and they must never be compared with hardware peaks.
    """
    from tqdm.auto import tqdm

    from .bench import benchmark
    if name not in KERNELS:
        raise ValueError(f"name must be one of {sorted(KERNELS)}, got {name!r}")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes or dtypes[dtype] not in _DTYPES:
        raise ValueError(f"dtype must be one of {[k for k, v in dtypes.items() if v in _DTYPES]}, got {dtype!r}")
    with_compile = (not INTERPRETED) if with_compile is None else with_compile
    ours, ref = KERNELS[name]
    impls = {"triton" + (" (interpreter)" if INTERPRETED else ""): ours, "torch eager": ref}
    if with_compile:
        impls["torch.compile"] = torch.compile(ref)
    out = []
    for size in tqdm(sizes, desc=f"{name} sweep", leave=False):
        args = _inputs(name, size, rows, dtypes[dtype], DEVICE)
        flops, nbytes = work(name, size, rows, args[0].element_size())
        for impl, fn in impls.items():
            t = benchmark(lambda: fn(*args), device=DEVICE, min_time_s=min_time_s,
                          warmup=1 if "interpreter" in impl else 3, min_repeats=2 if "interpreter" in impl else 5)
            out.append({"kernel": name, "size": size, "impl": impl, "seconds": t.median_s, "flops": flops,
                        "bytes": nbytes, "bytes_per_s": nbytes / t.median_s, "flop_rate": flops / t.median_s,
                        "interpreted": "interpreter" in impl, "dtype": dtype})
    return out

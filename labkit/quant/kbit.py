"""4-bit weights: INT4 groups, NF4 with double quantization, packing, and the bits they cost.

INT4 (group g):  each run of g weights gets its own scale (and zero point): 16 levels per group.
NF4 (QLoRA, Dettmers et al. 2023): 16 values placed at quantiles of a normal distribution, since
    trained weights are roughly normal; each block of 64 weights is scaled by its absmax.
Double quantization: the fp32 block scales are themselves quantized to 8 bits, in blocks of 256.
Bits per parameter count everything stored: codes + scales (+ zeros) + second-level scales.
"""
import math

import torch

NF4_OFFSET = 0.9677083  # QLoRA: the outermost quantile, so that the extremes are not infinite


def nf4_codebook() -> torch.Tensor:
    """The 16 NF4 values, derived as QLoRA defines them: 8 positive and 7 negative normal quantiles
    (evenly spaced probabilities between 0.5 and NF4_OFFSET), zero, normalised to [-1, 1]."""
    from scipy.stats import norm
    pos = norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 9)[:-1].double().numpy()).tolist()
    neg = (-norm.ppf(torch.linspace(NF4_OFFSET, 0.5, 8)[:-1].double().numpy())).tolist()
    v = torch.tensor(sorted(pos + [0.0] + neg), dtype=torch.float32)
    return v / v.max()


def _check(w):
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point() or w.numel() == 0:
        raise ValueError(f"w must be a non-empty floating-point tensor, got {w.dtype} of shape {tuple(w.shape)}")


def _blocks(w: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, int]:
    """w flattened into rows of `blocksize` (the last one zero-padded); returns (blocks, pad)."""
    if not isinstance(blocksize, int) or blocksize < 2:
        raise ValueError(f"blocksize must be an int >= 2, got {blocksize!r}")
    flat = w.detach().float().reshape(-1)
    pad = (-flat.numel()) % blocksize
    return torch.cat([flat, flat.new_zeros(pad)]).view(-1, blocksize), pad


def quantize_nf4(w: torch.Tensor, blocksize: int = 64):
    """(codes uint8 in 0..15, absmax per block fp32): blockwise absmax scaling, nearest NF4 value."""
    _check(w)
    b, _ = _blocks(w, blocksize)
    absmax = b.abs().amax(dim=1)
    scaled = b / absmax.clamp(min=1e-12)[:, None]
    book = nf4_codebook()
    codes = torch.bucketize(scaled, (book[1:] + book[:-1]) / 2).to(torch.uint8)  # nearest value
    return codes, absmax


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor, shape) -> torch.Tensor:
    values = nf4_codebook()[codes.long()] * absmax[:, None]
    n = math.prod(shape)
    return values.reshape(-1)[:n].reshape(shape)


def fake_quant_nf4(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """w through NF4 and back (same values as bitsandbytes' quantize_4bit/dequantize_4bit, nf4)."""
    codes, absmax = quantize_nf4(w, blocksize)
    return dequantize_nf4(codes, absmax, w.shape).to(w.dtype)


def double_quant(absmax: torch.Tensor, blocksize: int = 256) -> torch.Tensor:
    """The block scales after double quantization: subtract their mean, quantize the rest to int8
    with one fp32 absmax per `blocksize` scales, and dequantize (what a model then uses)."""
    mean = absmax.mean()
    b, pad = _blocks(absmax - mean, blocksize)
    s = b.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    q = torch.round(b / s).clamp(-127, 127)
    return (q * s).reshape(-1)[: absmax.numel()] + mean


def fake_quant_nf4_dq(w: torch.Tensor, blocksize: int = 64, dq_blocksize: int = 256) -> torch.Tensor:
    """NF4 with double-quantized block scales."""
    codes, absmax = quantize_nf4(w, blocksize)
    return dequantize_nf4(codes, double_quant(absmax, dq_blocksize), w.shape).to(w.dtype)


def fake_quant_int4(w: torch.Tensor, group: int = 128, symmetric: bool = False) -> torch.Tensor:
    """INT4 groups of `group` consecutive weights along the last dim, scale (and zero) in fp16.
    Asymmetric: 16 levels spanning [min, max] of the group; symmetric: [-7, 7] × absmax / 7."""
    _check(w)
    if w.shape[-1] % group:
        raise ValueError(f"the last dimension ({w.shape[-1]}) must be a multiple of group={group}")
    g = w.detach().float().reshape(-1, group)
    if symmetric:
        s = (g.abs().amax(dim=1, keepdim=True) / 7).half().float().clamp(min=1e-8)
        out = torch.round(g / s).clamp(-7, 7) * s
    else:
        lo, hi = g.amin(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)
        s = ((hi - lo) / 15).half().float().clamp(min=1e-8)
        z = torch.round(-lo / s).clamp(0, 15).half().float()
        out = (torch.round(g / s) + z).clamp(0, 15)
        out = (out - z) * s
    return out.reshape(w.shape).to(w.dtype)


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte (first code in the high nibble); an odd count gets a zero nibble."""
    c = codes.reshape(-1).to(torch.uint8)
    if c.numel() and int(c.max()) > 15:
        raise ValueError("codes must be in 0..15 to pack into 4 bits")
    if c.numel() % 2:
        c = torch.cat([c, c.new_zeros(1)])
    return (c[0::2] << 4) | c[1::2]


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first n codes of pack_4bit's bytes."""
    out = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    return out[:n]


def bits_per_param(scheme: str, blocksize: int = 64, dq_blocksize: int = 256, group: int = 128) -> float:
    """Exact storage cost per weight of a scheme (for large tensors): codes + scales (+ zeros).

    "nf4": 4 + 32/blocksize;  "nf4-dq": 4 + 8/blocksize + 32/(blocksize·dq_blocksize) (+ one mean);
    "int4": 4 + (16 + 16)/group (fp16 scale and zero);  "int4-sym": 4 + 16/group;
    "int8-channel": 8 (+ one scale per row, negligible); "fp16": 16; "fp32": 32."""
    table = {"nf4": 4 + 32 / blocksize, "nf4-dq": 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize),
             "int4": 4 + 32 / group, "int4-sym": 4 + 16 / group, "int8-channel": 8.0, "fp16": 16.0, "fp32": 32.0}
    if scheme not in table:
        raise ValueError(f"scheme must be one of {sorted(table)}, got {scheme!r}")
    return table[scheme]


# ---------------------------------------------------------------- GPTQ


def _int4_row_params(w: torch.Tensor, bits: int = 4):
    """Per-row asymmetric scale and zero for the columns in w (out, k): 2^bits levels over [min, max]."""
    qmax = 2**bits - 1
    lo, hi = w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0)
    s = ((hi - lo) / qmax).clamp(min=1e-8)
    return s, torch.round(-lo / s), qmax


def _q(w, s, z, qmax):
    return (torch.clamp(torch.round(w / s) + z, 0, qmax) - z) * s


def rtn_quantize(w: torch.Tensor, bits: int = 4, group: int = 128) -> torch.Tensor:
    """Round-to-nearest: each group of `group` input columns quantized per output row, no correction."""
    out = torch.empty_like(w, dtype=torch.float32)
    w = w.float()
    for c in range(0, w.shape[1], group):
        s, z, qmax = _int4_row_params(w[:, c:c + group], bits)
        out[:, c:c + group] = _q(w[:, c:c + group], s[:, None], z[:, None], qmax)
    return out


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group: int = 128, blocksize: int = 128,
                  damp: float = 0.01, act_order: bool = False) -> torch.Tensor:
    """GPTQ (Frantar et al., 2023): quantize W (out, in) column by column; after each column, spread
    its rounding error over the columns not yet quantized, weighted by the inverse Hessian of the
    layer's loss ‖WX − QX‖² (H = X Xᵀ over calibration inputs). Lazy batched updates in blocks of
    `blocksize` columns; `damp` × mean diag(H) is added to H's diagonal for stability; act_order
    quantizes the columns with the largest H diagonal (most active inputs) first.
    Returns the dequantized weight, same shape as w."""
    W = w.detach().float().clone()
    n = W.shape[1]
    H = hessian.detach().float().clone()
    if H.shape != (n, n):
        raise ValueError(f"hessian must be ({n}, {n}) for a weight with {n} input columns, got {tuple(H.shape)}")
    if group % 1 or blocksize % group and group % blocksize:
        raise ValueError(f"group ({group}) and blocksize ({blocksize}) must divide one another")
    dead = torch.diag(H) == 0               # inputs never active: their weights cannot matter
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(n)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    params = None
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1, Err = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group == 0:            # scales from the group's (already error-corrected) weights
                params = _int4_row_params(torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group], bits)
            s, z, qmax = params
            q = _q(W1[:, i], s, z, qmax)
            Q[:, col] = q
            err = (W1[:, i] - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]


@torch.no_grad()
def quantize_model_4bit(model, calibrate, method: str = "gptq", bits: int = 4, group: int = 128, **gptq_kw):
    """A copy of a transformers model whose linear layers (not the LM head) hold 4-bit group-quantized
    weights (dequantized in place), by "rtn" or "gptq". GPTQ goes layer by layer in forward order,
    each layer's Hessian collected from the inputs it sees in the partly quantized model."""
    import copy

    from ..layers import linear_layers, linear_weight, watch_inputs
    if method not in ("rtn", "gptq"):
        raise ValueError(f"method must be 'rtn' or 'gptq', got {method!r}")
    model = copy.deepcopy(model)
    for name, m in linear_layers(model):
        w = linear_weight(m)
        if method == "rtn":
            w.copy_(rtn_quantize(w, bits, group))
            continue
        H = torch.zeros(w.shape[1], w.shape[1])
        count = [0]

        def on_input(n, x, target=name):
            if n == target:
                H.add_(x.float().t() @ x.float())
                count[0] += x.shape[0]
        watch_inputs(model, calibrate, on_input)
        w.copy_(gptq_quantize(w, H / max(count[0], 1), bits, group, **gptq_kw))
    return model

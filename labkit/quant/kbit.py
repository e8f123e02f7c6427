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

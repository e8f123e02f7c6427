"""4-bit weights: INT4 groups, NF4 with double quantization, packing, and the bits they cost.

INT4 (group g):  each run of g weights gets its own scale (and zero point): 16 levels per group.
NF4 (QLoRA, Dettmers et al. 2023): 16 values placed at quantiles of a normal distribution, since
    trained weights are roughly normal; each block of 64 weights is scaled by its absmax.
FP4 (E2M1): a tiny floating-point format, same blockwise absmax scaling, levels dense near zero.
Double quantization: the fp32 block scales are themselves quantized to 8 bits, in blocks of 256.
Bits per parameter count everything stored: codes + scales (+ zeros) + second-level scales.
"""
import functools
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


def fp4_codebook() -> torch.Tensor:
    """The 15 distinct FP4 values (E2M1: a sign, 2 exponent bits, 1 mantissa bit) as bitsandbytes
    defines them, normalised to [-1, 1]: normal magnitudes (1 + m/2)·2^e for e = 1, 2, 3 and m = 0, 1
    (2, 3, 4, 6, 8, 12), zero, and the one subnormal, which bitsandbytes sets to 0.0625 (IEEE-style
    E2M1 would give 1); all divided by the largest, 12. (+0 and -0 are two codes, one value.)"""
    mags = [0.0, 0.0625] + [(1 + m / 2) * 2.0**e for e in (1, 2, 3) for m in (0, 1)]
    v = torch.tensor(sorted({x for m in mags for x in (m, -m)}), dtype=torch.float32)
    return v / v.max()


CODEBOOKS = {"nf4": nf4_codebook, "fp4": fp4_codebook}


def _codebook(quant_type: str) -> torch.Tensor:
    if quant_type not in CODEBOOKS:
        raise ValueError(f"quant_type must be one of {sorted(CODEBOOKS)}, got {quant_type!r}")
    return CODEBOOKS[quant_type]()


def quantize_4bit(w: torch.Tensor, blocksize: int = 64, quant_type: str = "nf4"):
    """(codes uint8 in 0..15, absmax per block fp32): each block of `blocksize` weights (flattened)
    is divided by its absmax and every weight replaced by the index of the nearest codebook value."""
    _check(w)
    book = _codebook(quant_type).to(w.device)
    b, _ = _blocks(w, blocksize)
    absmax = b.abs().amax(dim=1)
    scaled = b / absmax.clamp(min=1e-12)[:, None]
    codes = torch.bucketize(scaled, (book[1:] + book[:-1]) / 2).to(torch.uint8)  # nearest value
    return codes, absmax


def dequantize_4bit(codes: torch.Tensor, absmax: torch.Tensor, shape, quant_type: str = "nf4") -> torch.Tensor:
    """Codebook value × block absmax, back in `shape` (the padding of the last block dropped)."""
    values = _codebook(quant_type).to(codes.device)[codes.long()] * absmax[:, None]
    return values.reshape(-1)[:math.prod(shape)].reshape(shape)


def fake_quant_nf4(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """w through NF4 and back (same values as bitsandbytes' quantize_4bit/dequantize_4bit, nf4)."""
    codes, absmax = quantize_4bit(w, blocksize, "nf4")
    return dequantize_4bit(codes, absmax, w.shape, "nf4").to(w.dtype)


def fake_quant_fp4(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """w through FP4 and back (same values as bitsandbytes' quantize_4bit/dequantize_4bit, fp4)."""
    codes, absmax = quantize_4bit(w, blocksize, "fp4")
    return dequantize_4bit(codes, absmax, w.shape, "fp4").to(w.dtype)


@functools.lru_cache(maxsize=1)
def _dynamic_map() -> torch.Tensor:
    import bitsandbytes.functional as bnbf
    return bnbf.create_dynamic_map(signed=True).float()


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed dynamic 8-bit map (256 values in [-1, 1], dense near 0: a sign, an
    exponent written as a run of zero bits, then linear fraction bits): the code double
    quantization stores block scales in."""
    return _dynamic_map().clone()          # built once (bitsandbytes loops in Python over 256 codes)


def double_quant(absmax: torch.Tensor, blocksize: int = 256) -> torch.Tensor:
    """The block scales after double quantization, as bitsandbytes does it (QLoRA): subtract their
    mean, divide each run of `blocksize` by its absmax (kept in fp32), store the nearest value of
    the dynamic 8-bit map, and dequantize (what a model then uses). bitsandbytes' search rounds a
    few scales in a thousand to the neighbouring code; the values agree to one code step."""
    mean = absmax.mean()
    b, pad = _blocks(absmax - mean, blocksize)
    s = b.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    code = dynamic_map().to(b.device)
    idx = torch.bucketize(b / s, (code[1:] + code[:-1]) / 2)      # nearest of 256 sorted values
    return (code[idx] * s).reshape(-1)[: absmax.numel()] + mean


def fake_quant_nf4_dq(w: torch.Tensor, blocksize: int = 64, dq_blocksize: int = 256) -> torch.Tensor:
    """NF4 with double-quantized block scales."""
    codes, absmax = quantize_4bit(w, blocksize, "nf4")
    return dequantize_4bit(codes, double_quant(absmax, dq_blocksize), w.shape, "nf4").to(w.dtype)


def fake_quant_int4(w: torch.Tensor, group: int = 128, symmetric: bool = False) -> torch.Tensor:
    """INT4 groups of `group` consecutive weights along the last dim, scale (and zero) in fp16.
    Asymmetric: 16 levels spanning [min(group, 0), max(group, 0)], so that 0 is a level (the zero
    point is a code in 0..15: a group all of one sign still gets its full range); symmetric:
    [-7, 7] × absmax / 7."""
    _check(w)
    if w.shape[-1] % group:
        raise ValueError(f"the last dimension ({w.shape[-1]}) must be a multiple of group={group}")
    g = w.detach().float().reshape(-1, group)
    if symmetric:
        s = (g.abs().amax(dim=1, keepdim=True) / 7).half().float().clamp(min=1e-8)
        out = torch.round(g / s).clamp(-7, 7) * s
    else:
        lo, hi = g.amin(dim=1, keepdim=True).clamp(max=0), g.amax(dim=1, keepdim=True).clamp(min=0)
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

    "nf4" (and "fp4"): 4 + 32/blocksize;  "nf4-dq": 4 + 8/blocksize + 32/(blocksize·dq_blocksize) (+ one mean);
    "int4": 4 + (16 + 16)/group (fp16 scale and zero);  "int4-sym": 4 + 16/group;
    "int8-channel": 8 (+ one scale per row, negligible); "fp16": 16; "fp32": 32."""
    table = {"nf4": 4 + 32 / blocksize, "fp4": 4 + 32 / blocksize, "nf4-dq": 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize),
             "int4": 4 + 32 / group, "int4-sym": 4 + 16 / group, "int8-channel": 8.0, "fp16": 16.0, "fp32": 32.0}
    if scheme not in table:
        raise ValueError(f"scheme must be one of {sorted(table)}, got {scheme!r}")
    return table[scheme]


# ---------------------------------------------------------------- GPTQ


def int_row_params(w: torch.Tensor, bits: int = 4):
    """(scale, zero, qmax): per-row asymmetric parameters for the columns in w (out, k), 2^bits
    levels over [min(row, 0), max(row, 0)]."""
    qmax = 2**bits - 1
    lo, hi = w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0)
    s = ((hi - lo) / qmax).clamp(min=1e-8)
    return s, torch.round(-lo / s), qmax


def int_round(w, s, z, qmax):
    """w rounded to its nearest level: (clamp(round(w / s) + z, 0, qmax) - z) · s."""
    return (torch.clamp(torch.round(w / s) + z, 0, qmax) - z) * s


def rtn_quantize(w: torch.Tensor, bits: int = 4, group: int = 128) -> torch.Tensor:
    """Round-to-nearest: each group of `group` input columns quantized per output row, no correction."""
    out = torch.empty_like(w, dtype=torch.float32)
    w = w.float()
    for c in range(0, w.shape[1], group):
        s, z, qmax = int_row_params(w[:, c:c + group], bits)
        out[:, c:c + group] = int_round(w[:, c:c + group], s[:, None], z[:, None], qmax)
    return out


def gptq_hinv(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + damp · mean diag(H) · I)⁻¹. Row i of U, divided by
    U[i, i], is how the rounding error of column i spreads over columns i+1.. once columns < i are
    fixed: the inverse Hessian of the remaining problem, without recomputing an inverse per column."""
    H = H + damp * torch.diag(H).mean() * torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group: int = 128, blocksize: int = 128,
                  damp: float = 0.01, act_order: bool = False, column_step=None) -> torch.Tensor:
    """GPTQ (Frantar et al., 2023): quantize W (out, in) column by column; after each column, spread
    its rounding error over the columns not yet quantized, weighted by the inverse Hessian of the
    layer's loss ‖WX − QX‖² (H = X Xᵀ over calibration inputs). Lazy batched updates in blocks of
    `blocksize` columns; `damp` × mean diag(H) is added to H's diagonal for stability; act_order
    quantizes the columns with the largest H diagonal (most active inputs) first. `column_step`
    (W1, U1, i, s, z, qmax) -> W1, if given, does the rounding and the in-block update of each
    column instead of the built-in lines (the lab plugs the student's version in here).
    Returns the dequantized weight, same shape as w."""
    W = w.detach().float().clone()
    n = W.shape[1]
    H = hessian.detach().float().to(W.device).clone()
    if H.shape != (n, n):
        raise ValueError(f"hessian must be ({n}, {n}) for a weight with {n} input columns, got {tuple(H.shape)}")
    if group % 1 or blocksize % group and group % blocksize:
        raise ValueError(f"group ({group}) and blocksize ({blocksize}) must divide one another")
    dead = torch.diag(H) == 0               # inputs never active: their weights cannot matter
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = gptq_hinv(H, damp)
    Q = torch.zeros_like(W)
    params = None
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1, Err = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1, device=W.device)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group == 0:            # scales from the group's (already error-corrected) weights
                params = int_row_params(torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group], bits)
            s, z, qmax = params
            if column_step is None:
                q = int_round(W1[:, i], s, z, qmax)
                err = (W1[:, i] - q) / Hinv1[i, i]
                W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            else:
                before = W1[:, i].clone()
                W1 = column_step(W1, Hinv1, i, s, z, qmax)
                q = W1[:, i]
                err = (before - q) / Hinv1[i, i]
            Q[:, col] = q
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]


METHODS = ("rtn", "gptq", "nf4", "nf4-dq", "fp4")


@torch.no_grad()
def quantize_model_4bit(model, method: str = "gptq", calibrate=None, bits: int = 4, group: int = 128,
                        blocksize: int = 64, **gptq_kw):
    """A copy of a transformers model whose linear layers (not the LM head) hold 4-bit weights,
    dequantized in place (fake quantization: same numbers, fp32 storage).

    "rtn" / "gptq": INT-`bits` groups of `group` input columns per output row; GPTQ goes layer by
    layer in forward order, each layer's Hessian collected by running calibrate(model) on the partly
    quantized model. "nf4" / "nf4-dq" / "fp4": blockwise codebooks over the (out, in) weight, as
    bitsandbytes' Linear4bit stores them (blocks of `blocksize`; -dq: double-quantized scales).
    `method` may also be a function w -> dequantized w, applied to every such layer's weight."""
    import copy

    from ..layers import linear_layers, linear_weight, watch_inputs
    if not callable(method) and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or a function w -> quantized w, got {method!r}")
    if method == "gptq" and not callable(calibrate):
        raise ValueError("method='gptq' needs calibrate: a function that runs calibration inputs through the model")
    model = copy.deepcopy(model)
    for name, m in linear_layers(model):
        w = linear_weight(m)
        if callable(method):
            w.copy_(method(w.detach().float().clone()))
        elif method == "rtn":
            w.copy_(rtn_quantize(w, bits, group))
        elif method == "nf4":
            w.copy_(fake_quant_nf4(w, blocksize))
        elif method == "nf4-dq":
            w.copy_(fake_quant_nf4_dq(w, blocksize))
        elif method == "fp4":
            w.copy_(fake_quant_fp4(w, blocksize))
        else:
            H = torch.zeros(w.shape[1], w.shape[1], device=w.device)
            count = [0]

            def on_input(n, x, target=name):
                if n == target:
                    H.add_(x.float().t() @ x.float())
                    count[0] += x.shape[0]
            watch_inputs(model, calibrate, on_input)
            w.copy_(gptq_quantize(w, H / max(count[0], 1), bits, group, **gptq_kw))
    return model


def load_bnb(path, scheme: str, device="cpu"):
    """A transformers model from a local folder, quantized by bitsandbytes while it loads:
    scheme "int8" (LLM.int8), "nf4", "nf4-dq" (double quantization) or "fp4"; compute in fp32.
    Note: save_pretrained on a 4-bit model can change the model in memory: reload after saving."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    schemes = {"int8": dict(load_in_8bit=True),
               "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
               "nf4-dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
               "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4")}
    if scheme not in schemes:
        raise ValueError(f"scheme must be one of {sorted(schemes)}, got {scheme!r}")
    cfg = BitsAndBytesConfig(bnb_4bit_compute_dtype=torch.float32, **schemes[scheme])
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg, device_map=str(device),
                                                local_files_only=True).eval()


@torch.no_grad()
def layer_output_errors(model, quantized: dict, calibrate) -> dict:
    """{layer name: {label: ‖(W − Q) X‖ / ‖W X‖}}: how far each quantized copy's layer output moves,
    on the inputs X that layer sees in the original model while calibrate(model) runs. The
    quantity GPTQ minimizes, layer by layer; a steadier yardstick than perplexity when the gaps
    are small."""
    from ..layers import linear_layers, linear_weight, watch_inputs
    weights = {label: dict((n, linear_weight(m)) for n, m in linear_layers(q)) for label, q in quantized.items()}
    originals = dict((n, linear_weight(m)) for n, m in linear_layers(model))
    num = {n: {label: 0.0 for label in quantized} for n in originals}
    den = dict.fromkeys(originals, 0.0)

    def on_input(name, x):
        w = originals[name]
        den[name] += (x @ w.t()).pow(2).sum().item()
        for label in quantized:
            num[name][label] += (x @ (w - weights[label][name]).t()).pow(2).sum().item()
    watch_inputs(model, calibrate, on_input)
    return {n: {label: (num[n][label] / max(den[n], 1e-30)) ** 0.5 for label in quantized} for n in originals}

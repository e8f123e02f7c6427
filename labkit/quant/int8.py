"""8-bit quantization, from the rounding rule to whole models.

Symmetric (absmax):    q = round(x / s),          s = max|x| / 127,          q in [-127, 127]
Asymmetric (zero-pt):  q = round(x / s) + z,      s = (max - min) / 255,     q in [0, 255], z = round(-min / s)
Dequantize:            x ≈ s · (q - z)

Granularity says which elements share a scale:
    "tensor"   one scale for the whole tensor;
    "channel"  one scale per index of dim 0: per output channel of a weight (out_features, in_features);
    "token"    one scale per vector along the last dim: per token of an activation (..., features).
On a 2-D weight, "channel" and "token" both give one scale per row.

Then: W8A8 linear layers (fake-quant or a real int8 matmul with int32 accumulation), static
calibration of activation scales, SmoothQuant (Xiao et al. 2023) and LLM.int8's mixed-precision
decomposition (Dettmers et al. 2022), each checked against bitsandbytes in tests/test_quant_int8.py.
"""
import torch
import torch.nn as nn

from ..layers import linear_layers, linear_weight, replace_linears, watch_inputs

GRANULARITIES = ("tensor", "channel", "token")
QMAX = 127


def _check(x, name="x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor to quantize, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")


def _reduce_dims(x: torch.Tensor, granularity: str) -> tuple[int, ...]:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "tensor" or x.dim() == 1:
        return tuple(range(x.dim()))
    if granularity == "channel":
        return tuple(range(1, x.dim()))
    return (x.dim() - 1,)


def quantize(x: torch.Tensor, granularity: str = "tensor", symmetric: bool = True):
    """(q, scale, zero_point): int8 codes for symmetric, uint8 for asymmetric; scale and
    zero_point broadcast against x (zero_point is 0 when symmetric)."""
    _check(x)
    dims = _reduce_dims(x, granularity)
    xf = x.float()
    if symmetric:
        scale = xf.abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / QMAX
        q = torch.round(xf / scale).clamp(-QMAX, QMAX).to(torch.int8)
        return q, scale, torch.zeros_like(scale)
    lo = xf.amin(dim=dims, keepdim=True).clamp(max=0.0)   # the range always holds 0.0 ...
    hi = xf.amax(dim=dims, keepdim=True).clamp(min=0.0)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    zero = torch.round(-lo / scale)                       # ... which is then exactly the code z
    q = (torch.round(xf / scale) + zero).clamp(0, 255).to(torch.uint8)
    return q, scale, zero


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """scale · (q - zero_point), in fp32."""
    return scale * (q.float() - zero_point)


def fake_quant(x: torch.Tensor, granularity: str = "tensor", symmetric: bool = True) -> torch.Tensor:
    """Quantize to 8 bits and back: x with the rounding error int8 would give it, in x's dtype."""
    return dequantize(*quantize(x, granularity, symmetric)).to(x.dtype)


def relative_error(x: torch.Tensor, approx: torch.Tensor) -> float:
    """‖x - approx‖_F / ‖x‖_F."""
    return ((x.float() - approx.float()).norm() / x.float().norm()).item()


# ---------------------------------------------------------------- calibration of static activation scales


class Observer:
    """Watches activations during calibration and proposes a static absmax scale.

    method "minmax" keeps the largest |x| ever seen; "percentile" the given percentile of |x|
    (e.g. 99.99), which ignores the rarest extremes: they clip, everything else gets finer steps.
    """

    def __init__(self, method: str = "minmax", percentile: float = 99.99, max_samples: int = 2**20):
        if method not in ("minmax", "percentile"):
            raise ValueError(f"method must be 'minmax' or 'percentile', got {method!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
        self.method, self.percentile, self.max_samples = method, percentile, max_samples
        self.absmax, self.samples = 0.0, []

    def update(self, x: torch.Tensor) -> None:
        a = x.detach().abs().float().flatten()
        self.absmax = max(self.absmax, a.max().item())
        if self.method == "percentile":
            step = max(1, a.numel() // self.max_samples)
            self.samples.append(a[::step])

    def scale(self) -> float:
        if self.absmax == 0.0:
            raise RuntimeError("the observer has seen no non-zero activation: run calibration data first")
        if self.method == "minmax":
            return self.absmax / QMAX
        a = torch.cat(self.samples)
        if a.numel() > 2**24:  # torch.quantile's limit: a random subsample of every batch seen
            a = a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[: 2**24]]
        return torch.quantile(a, self.percentile / 100).item() / QMAX


# ---------------------------------------------------------------- linear layers


def int8_matmul(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """(tokens × in) int8 @ (out × in)ᵀ int8 -> int32, exact (torch._int_mm where it runs)."""
    if xq.dtype != torch.int8 or wq.dtype != torch.int8:
        raise ValueError(f"int8_matmul needs int8 tensors, got {xq.dtype} and {wq.dtype}")
    try:
        return torch._int_mm(xq, wq.t())
    except RuntimeError:
        # shapes the fused kernel refuses (on CUDA: M <= 16, K or N not a multiple of 8). Products
        # of int8 summed in float64 are exact up to K ~ 2^37, and float64 matmul runs on every device.
        return (xq.double() @ wq.t().double()).round().to(torch.int32)


class W8A8Linear(nn.Module):
    """A linear layer with int8 weights (per "tensor" or "channel") and int8 activations
    (per "tensor" or "token", dynamic; or a static scale from calibration).

    mode "fake": quantize and dequantize in float (what the model's accuracy sees);
    mode "int8": the real path: int8 × int8 -> int32 accumulate, then rescale to float.
    act=None keeps activations in float (weight-only quantization, "W8").
    """

    def __init__(self, module: nn.Module, weight: str = "channel", act: str | None = "token",
                 static_scale: float | None = None, mode: str = "fake"):
        super().__init__()
        if weight not in ("tensor", "channel"):
            raise ValueError(f"weight granularity must be 'tensor' or 'channel', got {weight!r}")
        if act not in (None, "tensor", "token"):
            raise ValueError(f"act granularity must be None, 'tensor' or 'token', got {act!r}")
        if mode not in ("fake", "int8"):
            raise ValueError(f"mode must be 'fake' or 'int8', got {mode!r}")
        w = linear_weight(module).detach().float()
        q, s, _ = quantize(w, weight)
        self.register_buffer("wq", q)
        self.register_buffer("w_scale", s)                  # (out, 1) or (1, 1)
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().float(), requires_grad=False)
        self.act, self.static_scale, self.mode = act, static_scale, mode

    def _quant_act(self, x):
        if self.static_scale is not None:
            s = torch.tensor(self.static_scale, dtype=torch.float32, device=x.device).reshape(1, 1)
            return torch.round(x / s).clamp(-QMAX, QMAX).to(torch.int8), s
        q, s, _ = quantize(x, "tensor" if self.act == "tensor" else "token")
        return q, s

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        if self.act is None:
            y = x2 @ (self.wq.float() * self.w_scale).t()
        else:
            xq, xs = self._quant_act(x2)
            if self.mode == "int8":
                y = int8_matmul(xq, self.wq).float() * xs * self.w_scale.t()
            else:
                y = (xq.float() * xs) @ (self.wq.float() * self.w_scale).t()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], -1)


class LLMInt8Linear(nn.Module):
    """LLM.int8(): feature columns of the input holding any |x| >= threshold stay in 16-bit
    (here fp32) for x, multiplied by the dequantized weight columns; everything else is int8,
    per token for x and per output channel for W. Outlier elements are left out of the row
    absmax, and only the int8 weight is stored, as bitsandbytes does (has_fp16_weights=False)."""

    def __init__(self, module: nn.Module, threshold: float = 6.0):
        super().__init__()
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.threshold = threshold
        w = linear_weight(module).detach().float()
        q, s, _ = quantize(w, "channel")                    # outlier columns use these, dequantized
        self.register_buffer("wq", q)
        self.register_buffer("w_scale", s)
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().float(), requires_grad=False)
        self.last_outlier_columns = torch.empty(0, dtype=torch.long)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        xq, xs, cols = vectorwise_quant(x2, self.threshold)   # xq is already 0 in the outlier columns
        self.last_outlier_columns = cols
        y = int8_matmul(xq, self.wq).float() * (xs / QMAX) * self.w_scale.t()
        if len(cols):  # the 16-bit part: outlier columns of x times the (dequantized) weight columns
            y = y + x2[:, cols] @ (self.wq[:, cols].float() * self.w_scale).t()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*shape[:-1], -1)


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Indices of the feature columns (last dim) of x holding any |value| >= threshold."""
    _check(x)
    x2 = x.reshape(-1, x.shape[-1])
    return torch.nonzero((x2.abs() >= threshold).any(dim=0)).flatten()


def vectorwise_quant(x: torch.Tensor, threshold: float = 0.0):
    """LLM.int8's activation quantization: (int8 codes, row absmax, outlier columns).

    Outlier elements (|x| >= threshold, when threshold > 0) are excluded from the row absmax,
    and the outlier columns are zeroed in the codes; the columns go through 16-bit instead.
    Codes are round(x · 127 / absmax). Same contract as bitsandbytes.functional.int8_vectorwise_quant.
    """
    _check(x)
    x2 = x.reshape(-1, x.shape[-1]).float()
    cols = outlier_columns(x2, threshold) if threshold > 0 else torch.empty(0, dtype=torch.long)
    inliers = torch.where(x2.abs() >= threshold, 0.0, x2) if threshold > 0 else x2
    absmax = inliers.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    q = torch.round(inliers * (QMAX / absmax)).to(torch.int8)
    q[:, cols] = 0
    return q, absmax, cols


# ---------------------------------------------------------------- whole models


def activation_absmax(model: nn.Module, run, skip=("lm_head",)) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of the input of every linear layer while run(model) executes
    (calibration): {layer name: (in_features,) tensor}."""
    stats = {}

    def on_input(name, x):
        a = x.abs().float().amax(dim=0)
        stats[name] = torch.maximum(stats[name], a) if name in stats else a
    watch_inputs(model, run, on_input, skip)
    return stats


def smoothquant_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors s_j = max|X_j|^α / max|W_j|^(1-α).

    Dividing activation column j by s_j and multiplying weight column j by s_j leaves X·Wᵀ
    unchanged and moves quantization difficulty from the activations to the weights.
    weight: (out_features, in_features); act_absmax: (in_features,).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if act_absmax.shape != weight.shape[1:]:
        raise ValueError(f"act_absmax must have shape ({weight.shape[1]},), got {tuple(act_absmax.shape)}")
    w_absmax = weight.detach().abs().float().amax(dim=0)
    s = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def smooth(layernorm: nn.LayerNorm, linears: list[nn.Module], act_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Fold SmoothQuant into a LayerNorm and the linear layers it feeds; return the factors.

    LayerNorm weight and bias are divided by s (so its output X becomes X / s), and each
    linear's weight columns are multiplied by s: the float model computes the same function.
    """
    w_absmax = torch.stack([linear_weight(m).detach().abs().float().amax(dim=0) for m in linears]).amax(dim=0)
    s = (act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)
    layernorm.weight.div_(s)
    layernorm.bias.div_(s)
    for m in linears:
        if isinstance(m, nn.Linear):
            m.weight.mul_(s)            # (out, in): scale the input columns
        else:
            m.weight.mul_(s[:, None])   # Conv1D (in, out): scale the input rows
    return s


def smooth_gpt2(model, act_absmax: dict, alpha: float = 0.5) -> None:
    """SmoothQuant on a transformers GPT-2: ln_1 into attn.c_attn and ln_2 into mlp.c_fc, per block."""
    for i, block in enumerate(model.transformer.h):
        prefix = f"transformer.h.{i}"
        smooth(block.ln_1, [block.attn.c_attn], act_absmax[f"{prefix}.attn.c_attn"], alpha)
        smooth(block.ln_2, [block.mlp.c_fc], act_absmax[f"{prefix}.mlp.c_fc"], alpha)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer: what the model costs to store."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


class SmoothedLinear(nn.Module):
    """SmoothQuant applied inside one layer: x / s, then a W8A8Linear whose weight columns are
    multiplied by s. For models whose LayerNorm output also feeds the residual stream (post-LN,
    such as BERT), dividing by s cannot be folded into the LayerNorm without changing the model,
    so here it costs one elementwise multiply per input (a real kernel would fuse it)."""

    def __init__(self, module: nn.Module, act_absmax: torch.Tensor, alpha: float = 0.5, act: str = "tensor"):
        super().__init__()
        w = linear_weight(module).detach().float()
        s = smoothquant_scales(act_absmax, w, alpha)
        scaled = nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None)
        with torch.no_grad():
            scaled.weight.copy_(w * s)
            if module.bias is not None:
                scaled.bias.copy_(module.bias.detach().float())
        self.register_buffer("inv_s", 1.0 / s)
        self.inner = W8A8Linear(scaled, "channel", act)

    def forward(self, x):
        return self.inner(x * self.inv_s.to(x.dtype))


def calibrate_static(model: nn.Module, run, method: str = "minmax", percentile: float = 99.99,
                     skip=("lm_head",)) -> dict[str, float]:
    """Static per-tensor activation scales for every linear layer's input, from run(model)."""
    observers = {name: Observer(method, percentile) for name, _ in linear_layers(model, skip)}
    watch_inputs(model, run, lambda name, x: observers[name].update(x), skip)
    return {name: o.scale() for name, o in observers.items()}


SCHEMES = ("fp32", "W8 per-tensor", "W8 per-channel", "W8A8 act per-tensor", "W8A8 act per-token",
           "W8A8 act static (min-max)", "W8A8 act static (99.99th pct)", "SmoothQuant W8A8 act per-tensor",
           "SmoothQuant W8A8 act per-token", "LLM.int8 (threshold 6)")


def apply_scheme(model: nn.Module, scheme: str, calibrate=None, alpha: float = 0.5) -> nn.Module:
    """A quantized copy of `model` (GPT-2 or BERT from transformers) under one of SCHEMES.

    W8A8 schemes quantize weights per output channel; they differ in the activations. Static
    and SmoothQuant schemes need calibrate(model): a function running calibration inputs.
    SmoothQuant smooths the layers a LayerNorm feeds (folded into ln_1 / ln_2 on GPT-2; with
    SmoothedLinear on post-LN BERT) and quantizes activations per tensor (or per token) everywhere.
    The LM head of a GPT stays in float (it is tied to the embeddings).
    """
    import copy
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    model = copy.deepcopy(model)
    if scheme == "fp32":
        return model
    if scheme.startswith("W8 "):
        g = scheme.split()[-1].replace("per-", "")
        return replace_linears(model, lambda n, m: W8A8Linear(m, g, None))
    if scheme == "LLM.int8 (threshold 6)":
        return replace_linears(model, lambda n, m: LLMInt8Linear(m, 6.0))
    if calibrate is None and ("static" in scheme or "Smooth" in scheme):
        raise ValueError(f"scheme {scheme!r} needs calibrate=, a function that runs calibration inputs")
    if scheme.startswith("SmoothQuant"):
        act = scheme.split()[-1].replace("per-", "")
        stats = activation_absmax(model, calibrate)
        if type(model).__name__.startswith("GPT2"):   # pre-LN: fold into ln_1 / ln_2, free at run time
            smooth_gpt2(model, stats, alpha)
            return replace_linears(model, lambda n, m: W8A8Linear(m, "channel", act))
        # as in the paper, smooth the layers a LayerNorm feeds (Q, K, V and the MLP's first layer)
        ln_fed = lambda n: ".attention.self." in n or n.endswith("intermediate.dense")  # noqa: E731
        return replace_linears(model, lambda n, m: SmoothedLinear(m, stats[n], alpha, act) if ln_fed(n)
                               else W8A8Linear(m, "channel", act))
    if "static" in scheme:
        method = "minmax" if "min-max" in scheme else "percentile"
        scales = calibrate_static(model, calibrate, method)
        return replace_linears(model, lambda n, m: W8A8Linear(m, "channel", "tensor", static_scale=scales[n]))
    return replace_linears(model, lambda n, m: W8A8Linear(m, "channel", scheme.split()[-1].replace("per-", "")))

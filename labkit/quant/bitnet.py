"""BitNet b1.58 (Ma et al., 2024): ternary weights {-1, 0, +1} × one scale, int8 activations.

    ternarize(w)        absmean quantization: γ = mean|W|, W̃ = clip(round(W / γ), -1, 1)
    binarize(w)         the original BitNet's (2023) 1-bit weights, for contrast: sign(W − mean W) × mean|W|
    BitLinear           a linear layer that trains with ternary weights and per-token int8
                        activations in the forward pass, and full-precision latent weights updated
                        through the straight-through estimator (STE) in the backward pass
    pack_ternary        5 weights per byte (3⁵ = 243 ≤ 256): 1.6 bits per weight, exact round trip
    TernaryLinear       the inference form: packed ternary weights + one scale (what a BitNet ships)
    ternary_gpt         a GPT whose block linears are TernaryLinear: from a BitLinear-trained model,
                        or post-training ternarization of a float one (for contrast)
    save_ternary / load_ternary   that model on disk: 1.6-bit weights, embeddings in fp32
    ternary_matmul      y = γ · (Σ x where W = +1 − Σ x where W = −1): additions and subtractions only
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5


def ternarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ternary codes in {-1, 0, 1} as int8, scale γ = mean|w|): the absmean quantizer."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.numel() == 0:
        raise ValueError("w must be a non-empty floating-point tensor")
    gamma = w.detach().abs().mean().clamp(min=EPS)
    return torch.clamp(torch.round(w.detach() / gamma), -1, 1).to(torch.int8), gamma


def binarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs in {-1, +1} as int8, scale β = mean|w|): BitNet's (Wang et al., 2023) binary weights,
    sign(W − α) with α = mean(W) (centred so that about half the signs are +1). No 0 level: every
    weight counts, with the same magnitude. Dequantized: signs · β."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.numel() == 0:
        raise ValueError("w must be a non-empty floating-point tensor")
    w = w.detach()
    signs = torch.where(w - w.mean() > 0, 1, -1).to(torch.int8)
    return signs, w.abs().mean().clamp(min=EPS)


def quant_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 (fake-quant): each vector along the last dim scaled to [-127, 127]."""
    s = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / 127
    return torch.clamp(torch.round(x / s), -127, 127) * s


class BitLinear(nn.Linear):
    """nn.Linear whose forward uses ternary weights and int8 activations; gradients pass straight
    through both quantizers to the full-precision latent weights (STE)."""

    def forward(self, x):
        codes, gamma = ternarize(self.weight)
        w_q = self.weight + (codes.to(self.weight.dtype) * gamma - self.weight).detach()   # STE
        x_q = x + (quant_activations(x) - x).detach()                                      # STE
        return F.linear(x_q, w_q, self.bias)


def bitnet_gpt(config):
    """A transformers GPT-2 whose block linear layers (attention and MLP) are BitLinear; the
    embeddings and the tied LM head stay in full precision, as in BitNet."""
    from transformers import GPT2LMHeadModel

    from ..layers import linear_weight, replace_linears

    def to_bitlinear(name, m):
        w = linear_weight(m)
        bl = BitLinear(w.shape[1], w.shape[0], bias=m.bias is not None)
        with torch.no_grad():
            bl.weight.copy_(w)
            if m.bias is not None:
                bl.bias.copy_(m.bias)
        return bl
    return replace_linears(GPT2LMHeadModel(config), to_bitlinear)


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """Pack {-1, 0, 1} codes 5 to a byte: byte = Σ (code_i + 1) · 3^i (the last byte zero-padded)."""
    c = codes.reshape(-1).to(torch.int16) + 1
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > 2):
        raise ValueError("codes must be in {-1, 0, 1}")
    pad = (-c.numel()) % 5
    c = torch.cat([c, c.new_ones(pad)]).view(-1, 5)   # padding with code 0 (stored as 1)
    powers = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int16, device=c.device)
    return (c * powers).sum(dim=1).to(torch.uint8)


def unpack_ternary(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first n ternary codes (int8) of pack_ternary's bytes."""
    v = packed.to(torch.int16)
    digits = []
    for _ in range(5):
        digits.append(v % 3)
        v = v // 3
    return (torch.stack(digits, dim=1).reshape(-1)[:n] - 1).to(torch.int8)


def ternary_bits_per_weight(n: int) -> float:
    """Bits per weight of pack_ternary for n weights, plus one fp32 scale."""
    return (math.ceil(n / 5) * 8 + 32) / n


def ternary_index(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(plus, minus): for each output row, the input columns whose weight is +1 (resp. -1), as an
    (out, k) index padded with `in` (which ternary_matmul points at a zero). Built once per layer."""
    if codes.dim() != 2:
        raise ValueError(f"codes must be (out, in), got shape {tuple(codes.shape)}")
    n_in = codes.shape[1]

    def lists(mask):
        k = int(mask.sum(1).max()) if mask.numel() else 0
        order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
        keep = torch.arange(k, device=mask.device)[None, :] < mask.sum(1, keepdim=True)
        return torch.where(keep, order, torch.full_like(order, n_in))
    return lists(codes == 1), lists(codes == -1)


def ternary_matmul(x: torch.Tensor, codes: torch.Tensor, gamma, index=None, chunk: int = 16) -> torch.Tensor:
    """x (..., in) times a ternary weight (out, in), with no multiplications by weights: each output
    sums the inputs where the weight is +1, subtracts those where it is -1, then is scaled once by
    γ. `index` = ternary_index(codes), if already built; tokens go `chunk` at a time (memory)."""
    if codes.dim() != 2 or x.shape[-1] != codes.shape[1]:
        raise ValueError(f"x (..., {codes.shape[1] if codes.dim() == 2 else '?'}) and codes (out, in) must match, "
                         f"got {tuple(x.shape)} and {tuple(codes.shape)}")
    plus, minus = index if index is not None else ternary_index(codes)
    flat = x.reshape(-1, x.shape[-1])
    flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)    # column `in` is the zero
    out = torch.cat([flat[i:i + chunk, plus].sum(-1) - flat[i:i + chunk, minus].sum(-1)
                     for i in range(0, flat.shape[0], chunk)]) if flat.shape[0] else flat.new_zeros(0, codes.shape[0])
    return (out * gamma).reshape(*x.shape[:-1], codes.shape[0])


# ---------------------------------------------------------------- the inference form


class TernaryLinear(nn.Module):
    """A linear layer for inference whose weight is stored as packed ternary codes (5 per byte) and
    one fp32 scale; activations are quantized per token to int8 as in BitLinear. Its forward is
    BitLinear's, evaluated with the frozen codes and scale."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", torch.zeros(math.ceil(in_features * out_features / 5), dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._w = None

    @classmethod
    def from_weight(cls, w: torch.Tensor, bias: torch.Tensor | None = None) -> "TernaryLinear":
        """Ternarize a float (out, in) weight with the absmean quantizer and pack it."""
        layer = cls(w.shape[1], w.shape[0], bias is not None)
        codes, gamma = ternarize(w)
        layer.packed.copy_(pack_ternary(codes))
        layer.scale.copy_(gamma)
        if bias is not None:
            with torch.no_grad():
                layer.bias.copy_(bias)
        return layer

    def codes(self) -> torch.Tensor:
        """The (out, in) int8 codes in {-1, 0, 1}."""
        return unpack_ternary(self.packed.cpu(), self.in_features * self.out_features).view(
            self.out_features, self.in_features).to(self.packed.device)

    def _apply(self, fn, *args, **kwargs):     # a move (.to, .cuda) or a new state drops the cached weight
        self._w = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._w = None
        return super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x):
        if self._w is None or self._w.dtype != x.dtype:
            self._w = self.codes().to(x.dtype) * self.scale.to(x.dtype)
        return F.linear(quant_activations(x), self._w, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bits/weight=" \
               f"{ternary_bits_per_weight(self.in_features * self.out_features):.3f}"


def ternary_gpt(model):
    """A copy of a GPT-2 (transformers) whose block linear layers are TernaryLinear. From a
    BitLinear-trained model this is its deployable form (same outputs); from a float model it is
    post-training ternarization (absmean codes of weights that were never trained to be ternary)."""
    import copy

    from ..layers import linear_weight, replace_linears

    def to_ternary(name, m):
        w = m.weight if isinstance(m, BitLinear) else linear_weight(m)
        return TernaryLinear.from_weight(w.detach().float(), None if m.bias is None else m.bias.detach())
    return replace_linears(copy.deepcopy(model), to_ternary).eval()


def save_ternary(model, folder) -> int:
    """Write a ternary_gpt model to folder/ (config.json + model.safetensors; the LM head is tied
    to the embeddings and not stored twice). Returns the file's size in bytes."""
    from pathlib import Path

    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(isinstance(m, TernaryLinear) for m in model.modules()):
        raise ValueError("model has no TernaryLinear layers: convert it with ternary_gpt(model) first")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "labkit-ternary-gpt2"})
    model.config.to_json_file(folder / "config.json")
    return (folder / "model.safetensors").stat().st_size


def load_ternary(folder, device="cpu"):
    """The model save_ternary wrote, in eval mode."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from ..layers import linear_weight, replace_linears
    folder = Path(folder)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"no ternary model in {folder} (make one: python scripts/train_bitnet_gpt.py)")
    model = GPT2LMHeadModel(GPT2Config.from_json_file(folder / "config.json"))
    replace_linears(model, lambda name, m: TernaryLinear(linear_weight(m).shape[1], linear_weight(m).shape[0],
                                                         m.bias is not None))
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"{folder}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.to(device).eval()


def time_ternary_layer(out_features: int = 1024, in_features: int = 1024, tokens: int = 64) -> dict:
    """One ternary layer's product three ways on the CPU, each checked against the first:
    "fp32 matmul" (codes · γ dequantized, BLAS), "int8 matmul" (codes and per-token int8
    activations, int32 accumulation: quant.int8.int8_matmul) and "add-only" (ternary_matmul, index built
    once). Returns {name: labkit.bench.Timing}; raises AssertionError if any result differs."""
    from ..bench import benchmark
    from .int8 import int8_matmul, quantize
    codes, gamma = ternarize(torch.randn(out_features, in_features))
    x = torch.randn(tokens, in_features)
    w = codes.float() * gamma
    xq, s, _ = quantize(x, "token")
    index = ternary_index(codes)
    runs = {"fp32 matmul": lambda: x @ w.t(),
            "int8 matmul": lambda: int8_matmul(xq, codes).float() * s * gamma,
            "add-only": lambda: ternary_matmul(x, codes, gamma, index=index)}
    ref = runs["fp32 matmul"]()
    torch.testing.assert_close(runs["add-only"](), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(runs["int8 matmul"](), (xq.float() * s) @ w.t(), atol=1e-3, rtol=1e-4)
    return {name: benchmark(fn, device="cpu") for name, fn in runs.items()}

"""BitNet b1.58 (Ma et al., 2024): ternary weights {-1, 0, +1} × one scale, int8 activations.

    ternarize(w)        absmean quantization: γ = mean|W|, W̃ = clip(round(W / γ), -1, 1)
    BitLinear           a linear layer that trains with ternary weights and per-token int8
                        activations in the forward pass, and full-precision latent weights updated
                        through the straight-through estimator (STE) in the backward pass
    pack_ternary        5 weights per byte (3⁵ = 243 ≤ 256): 1.6 bits per weight, exact round trip
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
    powers = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int16)
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


def ternary_matmul(x: torch.Tensor, codes: torch.Tensor, gamma) -> torch.Tensor:
    """x (tokens, in) times a ternary weight (out, in) with no multiplications by weights: each output
    sums the inputs where the weight is +1 and subtracts those where it is -1, then scales once by γ."""
    if codes.dim() != 2 or x.shape[-1] != codes.shape[1]:
        raise ValueError(f"x (..., {codes.shape[1] if codes.dim() == 2 else '?'}) and codes (out, in) must match, "
                         f"got {tuple(x.shape)} and {tuple(codes.shape)}")
    out = torch.empty(*x.shape[:-1], codes.shape[0], dtype=x.dtype)
    for o in range(codes.shape[0]):
        plus, minus = (codes[o] == 1).nonzero().flatten(), (codes[o] == -1).nonzero().flatten()
        out[..., o] = x[..., plus].sum(-1) - x[..., minus].sum(-1)
    return out * gamma

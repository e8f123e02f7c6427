"""Pruning: remove weights, then measure what it bought.

    magnitude_mask(w, sparsity)        unstructured: drop the smallest |w| (= torch.nn.utils.prune.l1_unstructured)
    global_magnitude_masks(ws, s)      one threshold across layers (= prune.global_unstructured)
    wanda_mask(w, act_norm, s)         activation-aware: drop the smallest |W_ij|·‖X_j‖ in each row (Wanda)
    nm_mask(w, n=2, m=4)               semi-structured N:M: keep n of every m consecutive weights
    prune_cnn_channels(model, frac)    structured: drop whole conv filters, shrink the next layer to match
A mask is a bool tensor, True where the weight is kept. Storage (dense, CSR, bitmask, 2:4) and the
sparse-vs-dense matmul sweep say when sparsity saves bytes and time, and when it does not.
"""
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import linear_layers, linear_weight, watch_inputs


def _check_w(w, name="w"):
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point() or w.numel() == 0:
        raise ValueError(f"{name} must be a non-empty floating-point tensor, got {w.dtype} of shape {tuple(w.shape)}")


def _check_sparsity(sparsity):
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must be a fraction in [0, 1], got {sparsity!r}")


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask keeping all but the k smallest scores (same selection as torch.nn.utils.prune)."""
    mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)  # contiguous, whatever the layout of scores
    if k > 0:
        idx = torch.topk(scores.reshape(-1), k=k, largest=False).indices
        mask.view(-1)[idx] = False
    return mask


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the round(sparsity · numel) weights of smallest magnitude."""
    _check_w(w)
    _check_sparsity(sparsity)
    return _smallest(w.detach().abs(), round(sparsity * w.numel()))


def global_magnitude_masks(weights, sparsity: float) -> list[torch.Tensor]:
    """One magnitude threshold over all `weights` together: layers lose different fractions."""
    weights = list(weights)
    for i, w in enumerate(weights):
        _check_w(w, f"weights[{i}]")
    _check_sparsity(sparsity)
    scores = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    flat = _smallest(scores, round(sparsity * scores.numel()))
    return [m.view_as(w) for m, w in zip(flat.split([w.numel() for w in weights]), weights)]


def wanda_mask(w: torch.Tensor, act_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda (Sun et al., 2023): score |W_ij| · ‖X_j‖₂ and drop the lowest in each output row.

    w: (out_features, in_features); act_norm: (in_features,) L2 norm of each input feature over
    calibration tokens. A weight that multiplies a large activation matters more than its size says.
    """
    _check_w(w)
    _check_sparsity(sparsity)
    if w.dim() != 2 or act_norm.shape != (w.shape[1],):
        raise ValueError(f"w must be (out, in) and act_norm (in,), got {tuple(w.shape)} and {tuple(act_norm.shape)}")
    score = w.detach().abs() * act_norm.to(w.device, torch.float32)[None, :]
    k = round(sparsity * w.shape[1])
    mask = torch.ones_like(w, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    return mask


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the n largest |w| in every group of m consecutive weights along the last dimension."""
    _check_w(w)
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
        raise ValueError(f"need integers 0 < n <= m, got n={n!r}, m={m!r}")
    if w.shape[-1] % m:
        raise ValueError(f"the last dimension of w ({w.shape[-1]}) must be a multiple of m={m} for {n}:{m} sparsity")
    groups = w.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return keep.view_as(w)


def sparsity(x) -> float:
    """Fraction of zeros: of a tensor, or over all weight matrices/filters (dim ≥ 2) of a module."""
    if isinstance(x, nn.Module):
        ws = [p for p in x.parameters() if p.dim() >= 2]
        return sum(int((p == 0).sum()) for p in ws) / sum(p.numel() for p in ws)
    return float((x == 0).sum()) / x.numel()


class Masks:
    """Keep-masks for some parameters of a model: apply() zeroes the pruned weights; call it after
    every optimizer step while fine-tuning so that pruned weights stay pruned."""

    def __init__(self, masks: dict[nn.Parameter, torch.Tensor]):
        for p, m in masks.items():
            if m.shape != p.shape or m.dtype != torch.bool:
                raise ValueError(f"each mask must be bool and shaped like its parameter, got {m.dtype} {tuple(m.shape)} "
                                 f"for {tuple(p.shape)}")
        self.masks = masks

    @torch.no_grad()
    def apply(self) -> None:
        for p, m in self.masks.items():
            p.mul_(m)


def prunable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every Linear and Conv2d of a model."""
    return [(n + ".weight", m.weight) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@torch.no_grad()
def sensitivity_scan(model: nn.Module, sparsities, evaluate) -> dict[str, list[float]]:
    """{layer weight name: [evaluate(model) with only that layer magnitude-pruned to s, for s in
    sparsities]}, every other layer untouched; the model is restored after each run."""
    out = {}
    for name, p in prunable(model):
        saved, out[name] = p.detach().clone(), []
        for s in sparsities:
            p.mul_(magnitude_mask(saved, s))
            out[name].append(evaluate(model))
            p.copy_(saved)
    return out


def masks_for(model: nn.Module, sparsities: dict[str, float], mask_fn=None) -> Masks:
    """Masks pruning each named weight of `model` to its own sparsity (magnitude, or
    mask_fn(weight, sparsity)); weights not named stay dense. Apply them with .apply()."""
    mask_fn = mask_fn or magnitude_mask
    params = dict(prunable(model))
    unknown = set(sparsities) - set(params)
    if unknown:
        raise ValueError(f"sparsities names {sorted(unknown)}, not among the model's weights {sorted(params)}")
    return Masks({params[n]: mask_fn(params[n].detach(), s) for n, s in sparsities.items()})


# ---------------------------------------------------------------- structured pruning


def _conv_keep_out(conv: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight[keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[keep])
    return new


def _conv_keep_in(conv: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    new = nn.Conv2d(len(keep), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _linear_keep_in(lin: nn.Linear, keep_cols: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep_cols), lin.out_features, bias=lin.bias is not None).to(lin.weight.device, lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, keep_cols])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def filter_keep(conv: nn.Conv2d, fraction: float) -> torch.Tensor:
    """Sorted indices of the filters to keep: the (1 - fraction) with the largest L1 norm."""
    _check_sparsity(fraction)
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    n_keep = max(1, conv.out_channels - round(fraction * conv.out_channels))
    return torch.sort(torch.topk(norms, n_keep).indices).values


def prune_cnn_channels(model, fraction: float, keep=None):
    """A smaller copy of labkit.models.SmallCNN with `fraction` of each conv's filters removed
    (smallest L1 norm, or whatever keep(conv, fraction) returns: sorted indices of the filters
    to keep), and the layer after each conv re-indexed to the channels that remain.
    The tensors really shrink: fewer FLOP, fewer bytes, less time."""
    import copy
    _check_sparsity(fraction)
    keep = keep or filter_keep
    m = copy.deepcopy(model)
    k1 = keep(m.conv1, fraction)
    m.conv1, m.conv2 = _conv_keep_out(m.conv1, k1), _conv_keep_in(m.conv2, k1)
    k2 = keep(m.conv2, fraction)
    m.conv2 = _conv_keep_out(m.conv2, k2)
    spatial = m.fc1.in_features // model.conv2.out_channels     # 7 × 7 positions per channel
    cols = (k2[:, None] * spatial + torch.arange(spatial, device=k2.device)[None, :]).reshape(-1)
    m.fc1 = _linear_keep_in(m.fc1, cols)
    return m


# ---------------------------------------------------------------- storage and speed


def storage_bytes(w: torch.Tensor, fmt: str = "dense", value_bytes: int | None = None, index_bytes: int = 4) -> int:
    """Bytes to store a 2-D weight in a format: "dense"; "csr" (values, column indices, row
    pointers); "bitmask" (values + 1 bit per position); "2:4" (half the values + 2 bits of
    position per kept value, the layout of sparse tensor cores). Zeros are what is pruned."""
    _check_w(w)
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D, got shape {tuple(w.shape)}")
    vb = value_bytes or w.element_size()
    nnz, rows = int((w != 0).sum()), w.shape[0]
    if fmt == "dense":
        return w.numel() * vb
    if fmt == "csr":
        return nnz * (vb + index_bytes) + (rows + 1) * index_bytes
    if fmt == "bitmask":
        return nnz * vb + math.ceil(w.numel() / 8)
    if fmt == "2:4":
        return w.numel() // 2 * vb + math.ceil(w.numel() // 2 * 2 / 8)
    raise ValueError(f"fmt must be 'dense', 'csr', 'bitmask' or '2:4', got {fmt!r}")


def sparse_dense_sweep(n: int, sparsities, batch: int = 64, min_time_s: float = 0.1) -> list[dict]:
    """Time y = W·x with W (n×n) stored dense vs CSR (torch.sparse), per sparsity, on the CPU.
    Returns rows {"sparsity", "dense_s", "csr_s", "speedup"}."""
    from .bench import benchmark
    x = torch.randn(n, batch)
    out = []
    for s in sparsities:
        w = torch.randn(n, n)
        w = w * magnitude_mask(w, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            csr = w.to_sparse_csr()
        td = benchmark(lambda: w @ x, device="cpu", min_time_s=min_time_s).median_s
        ts = benchmark(lambda: csr @ x, device="cpu", min_time_s=min_time_s).median_s
        out.append({"sparsity": s, "dense_s": td, "csr_s": ts, "speedup": td / ts})
    return out


def semi_structured_speedup(rows: int = 10240, cols: int = 3072, batch: int = 3072, min_time_s: float = 0.3) -> dict:
    """On a CUDA GPU (compute capability >= 8.0): time a 2:4-sparse fp16 weight on sparse tensor
    cores (torch.sparse.to_sparse_semi_structured) against the dense weight; check the round trip."""
    from .bench import benchmark
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        raise RuntimeError("2:4 sparse tensor cores need a CUDA GPU of compute capability >= 8.0")
    from torch.sparse import to_sparse_semi_structured
    w = torch.randn(rows, cols, device="cuda", dtype=torch.float16)
    w = w * nm_mask(w, 2, 4)
    x = torch.randn(cols, batch, device="cuda", dtype=torch.float16)
    ws = to_sparse_semi_structured(w)
    exact = bool(torch.equal(ws.to_dense(), w))
    td = benchmark(lambda: w @ x, device="cuda", min_time_s=min_time_s).median_s
    t24 = benchmark(lambda: ws @ x, device="cuda", min_time_s=min_time_s).median_s
    return {"rows": rows, "cols": cols, "batch": batch, "dense_s": td, "sparse_2_4_s": t24,
            "speedup": td / t24, "round_trip_exact": exact}


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: Masks | None = None, epochs: int = 2,
             lr: float = 5e-4, batch: int = 128, seed: int = 0) -> nn.Module:
    """A few epochs of Adam on (x, y), re-applying `masks` after every step; returns the model."""
    from tqdm.auto import tqdm
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in tqdm(range(epochs), desc="fine-tuning", leave=False):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks is not None:
                masks.apply()
    model.eval()
    return model


# ---------------------------------------------------------------- language models


def activation_norms(model: nn.Module, run) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over all calibration tokens, per input feature j of every linear layer (Wanda's statistic)."""
    sq = {}

    def on_input(name, x):
        sq[name] = sq.get(name, 0) + x.float().pow(2).sum(0)
    watch_inputs(model, run, on_input)
    return {k: v.sqrt() for k, v in sq.items()}


@torch.no_grad()
def prune_linears(model: nn.Module, sparsity: float = 0.5, method: str = "magnitude", pattern: str = "unstructured",
                  act_norms: dict | None = None) -> nn.Module:
    """A pruned copy of a transformer: every linear layer (not the LM head) loses `sparsity` of
    its weights, chosen per output row, by "magnitude" |W| or "wanda" |W|·‖X‖ (needs act_norms),
    in an "unstructured" or "2:4" pattern (2:4 is 50% by construction). "magnitude per layer"
    compares every weight of a layer at once: the baseline the Wanda paper reports."""
    import copy
    if method not in ("magnitude", "magnitude per layer", "wanda"):
        raise ValueError(f"method must be 'magnitude', 'magnitude per layer' or 'wanda', got {method!r}")
    if method == "magnitude per layer" and pattern != "unstructured":
        raise ValueError("'magnitude per layer' is an unstructured criterion (2:4 groups are always within a row)")
    if pattern not in ("unstructured", "2:4"):
        raise ValueError(f"pattern must be 'unstructured' or '2:4', got {pattern!r}")
    if method == "wanda" and act_norms is None:
        raise ValueError("method='wanda' needs act_norms (see activation_norms)")
    model = copy.deepcopy(model)
    for name, m in linear_layers(model):
        w = linear_weight(m)
        norm = (act_norms[name] if method == "wanda" else torch.ones(w.shape[1])).to(w.device, torch.float32)
        if pattern == "2:4":
            mask = nm_mask(w.float() * norm[None, :], 2, 4)   # scores in fp32: fp16 norms could overflow
        elif method == "magnitude per layer":
            mask = magnitude_mask(w, sparsity)
        else:
            mask = wanda_mask(w, norm, sparsity)   # with unit norms: per-row magnitude
        w.mul_(mask)                                # w is a view: prunes the module's weight
    return model

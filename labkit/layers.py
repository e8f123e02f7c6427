"""The linear layers of a model, and what flows into them: shared by quantization and pruning.

transformers' GPT-2 uses `Conv1D` (weight stored (in_features, out_features)) where other models use
nn.Linear ((out_features, in_features)); `linear_weight` hides the difference. `watch_inputs`
runs calibration inputs through a model and hands every linear layer's input to a callback.
"""
import torch
import torch.nn as nn


def is_linear(module: nn.Module) -> bool:
    """nn.Linear or transformers' Conv1D."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight of nn.Linear or Conv1D as an (out_features, in_features) view (writes go through)."""
    if isinstance(module, nn.Linear):
        return module.weight
    if type(module).__name__ == "Conv1D":
        return module.weight.t()
    raise TypeError(f"module must be nn.Linear or transformers Conv1D, got {type(module).__name__}")


def linear_layers(model: nn.Module, skip=("lm_head",)) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear layer whose name contains none of `skip` (the LM head is
    tied to the embeddings in GPT-2 and usually kept in full precision)."""
    return [(n, m) for n, m in model.named_modules() if is_linear(m) and not any(s in n for s in skip)]


def replace_linears(model: nn.Module, make, skip=("lm_head",)) -> nn.Module:
    """Replace every nn.Linear / Conv1D (except names containing `skip`) by make(name, module), in place."""
    for name, m in linear_layers(model, skip):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, make(name, m))
    return model


@torch.no_grad()
def watch_inputs(model: nn.Module, run, on_input, skip=("lm_head",)) -> None:
    """Call on_input(name, x) with each linear layer's input, flattened to (tokens, in_features),
    every time the layer runs during run(model). Hooks are removed afterwards, whatever happens."""
    hooks = []
    for name, m in linear_layers(model, skip):
        def hook(mod, inputs, output, name=name):
            x = inputs[0].detach()
            on_input(name, x.reshape(-1, x.shape[-1]))
        hooks.append(m.register_forward_hook(hook))
    try:
        run(model)
    finally:
        for h in hooks:
            h.remove()


def gelu_stack(layers: int, width: int) -> nn.Sequential:
    """`layers` blocks of Linear(width, width) + GELU: a deep model of many small gradient tensors,
    cut into pipeline stages or data-parallel buckets by whole blocks (model[i:j])."""
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(layers)])

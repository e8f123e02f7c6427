"""labkit.layers: one view of nn.Linear and transformers' Conv1D, and input watching."""
import pytest
import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from labkit import layers


def test_linear_weight_is_out_by_in_for_both_layouts():
    lin, conv = nn.Linear(5, 3), Conv1D(3, 5)       # Conv1D(nf=out, nx=in)
    assert layers.linear_weight(lin).shape == (3, 5) and layers.linear_weight(conv).shape == (3, 5)
    x = torch.randn(2, 5)
    torch.testing.assert_close(conv(x), x @ layers.linear_weight(conv).t() + conv.bias)
    with torch.no_grad():
        layers.linear_weight(conv).mul_(0)          # a view: writes reach the module
    assert conv.weight.abs().sum() == 0
    with pytest.raises(TypeError, match="Conv1D"):
        layers.linear_weight(nn.Conv2d(1, 1, 3))


def test_watch_inputs_sees_every_call_skips_and_cleans_up():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    model.lm_head = nn.Linear(2, 2)
    seen = []
    layers.watch_inputs(model, lambda m: [m(torch.randn(3, 7, 4)) for _ in range(2)],
                        lambda name, x: seen.append((name, tuple(x.shape))))
    assert seen == [("0", (21, 4)), ("2", (21, 6))] * 2
    assert [n for n, _ in layers.linear_layers(model)] == ["0", "2"]
    with pytest.raises(RuntimeError, match="boom"):
        layers.watch_inputs(model, lambda m: (_ for _ in ()).throw(RuntimeError("boom")), lambda n, x: None)
    assert all(not m._forward_hooks for m in model.modules())

"""labkit.prune against torch.nn.utils.prune, N:M validity, structured pruning, storage accounting."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from labkit import data, models, prune
from labkit.layers import linear_layers, linear_weight


@pytest.mark.parametrize("shape", [(64, 33), (8, 3, 3, 3), (1000,)])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_equals_torch_prune(shape, amount):
    lin = nn.Linear(1, 1)
    lin.weight = nn.Parameter(torch.randn(shape))
    tprune.l1_unstructured(lin, "weight", amount=amount)
    assert torch.equal(prune.magnitude_mask(lin.weight_orig, amount), lin.weight_mask.bool())


def test_global_masks_equal_torch_global_unstructured():
    layers = [nn.Linear(30, 20), nn.Linear(20, 10), nn.Conv2d(3, 4, 3)]
    for l in layers:
        nn.init.normal_(l.weight, std=float(torch.rand(()) * 2 + 0.1))  # layers of different scale
    ours = prune.global_magnitude_masks([l.weight for l in layers], 0.6)
    tprune.global_unstructured([(l, "weight") for l in layers], pruning_method=tprune.L1Unstructured, amount=0.6)
    for m, l in zip(ours, layers):
        assert torch.equal(m, l.weight_mask.bool())
    fractions = [1 - m.float().mean().item() for m in ours]
    assert max(fractions) - min(fractions) > 0.1  # one threshold: layers lose different fractions


@pytest.mark.parametrize("shape", [(4,), (3, 8), (16, 12), (2, 5, 20)])
def test_nm_mask_keeps_exactly_n_of_m_and_the_largest(shape):
    w = torch.randn(shape)
    mask = prune.nm_mask(w, 2, 4)
    groups, wg = mask.reshape(-1, 4), w.abs().reshape(-1, 4)
    assert (groups.sum(1) == 2).all()
    assert (torch.where(groups, wg, torch.inf).amin(1) >= torch.where(groups, -torch.inf, wg).amax(1)).all()
    assert (prune.nm_mask(torch.randn(6, 16), 1, 8).reshape(-1, 8).sum(1) == 1).all()


def test_bad_input_is_clear():
    with pytest.raises(ValueError, match="multiple of m=4"):
        prune.nm_mask(torch.randn(3, 6))
    with pytest.raises(ValueError, match="0 < n <= m"):
        prune.nm_mask(torch.randn(8), 5, 4)
    with pytest.raises(ValueError, match="sparsity"):
        prune.magnitude_mask(torch.randn(8), 1.5)
    with pytest.raises(ValueError, match="floating-point"):
        prune.magnitude_mask(torch.arange(8), 0.5)
    with pytest.raises(ValueError, match="fmt"):
        prune.storage_bytes(torch.randn(4, 4), "coo")


def test_wanda_with_uniform_activations_is_per_row_magnitude():
    w = torch.randn(10, 40)
    m = prune.wanda_mask(w, torch.ones(40), 0.5)
    assert (m.sum(1) == 20).all()
    for row in range(10):
        assert torch.equal(m[row], prune.magnitude_mask(w[row], 0.5))
    big = torch.ones(40)
    big[3] = 1000.0  # a weight feeding a huge activation survives however small it is
    w[:, 3] = 0.01
    assert prune.wanda_mask(w, big, 0.5)[:, 3].all() and not prune.magnitude_mask(w, 0.5)[:, 3].any()


def test_masks_stay_applied_through_fine_tuning():
    model = models.SmallCNN()
    params = [p for _, p in prune.prunable(model)]
    masks = prune.Masks(dict(zip(params, prune.global_magnitude_masks(params, 0.5))))
    masks.apply()
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    prune.finetune(model, x, y, masks, epochs=1, batch=32)
    assert prune.sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_structured_pruning_keeps_kept_channels_exact():
    torch.manual_seed(0)
    model = models.SmallCNN().eval()
    small = prune.prune_cnn_channels(model, 0.5)
    assert small.conv1.out_channels == 16 and small.conv2.out_channels == 32 and small.fc1.in_features == 32 * 49
    x = torch.randn(3, 1, 28, 28)
    k1 = prune.filter_keep(model.conv1, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(small.conv1(x), model.conv1(x)[:, k1])  # kept filters: unchanged outputs
        # the next layer, re-indexed, equals the original fed with the pruned channels zeroed
        h = torch.relu(model.conv1(x))
        zeroed = torch.zeros_like(h)
        zeroed[:, k1] = h[:, k1]
        k2 = prune.filter_keep(prune._conv_keep_in(model.conv2, k1), 0.5)
        torch.testing.assert_close(small.conv2(h[:, k1]), model.conv2(zeroed)[:, k2], atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    # the whole network: equal to the original with the pruned filters' weights and biases zeroed
    zeroed_model = copy.deepcopy(model)
    with torch.no_grad():
        drop1 = torch.ones(32, dtype=torch.bool)
        drop1[k1] = False
        zeroed_model.conv1.weight[drop1] = 0
        zeroed_model.conv1.bias[drop1] = 0
        kept2 = prune.filter_keep(prune._conv_keep_in(model.conv2, k1), 0.5)
        drop2 = torch.ones(64, dtype=torch.bool)
        drop2[kept2] = False
        zeroed_model.conv2.weight[drop2] = 0
        zeroed_model.conv2.bias[drop2] = 0
        torch.testing.assert_close(small(x), zeroed_model(x), atol=1e-5, rtol=1e-5)


def test_storage_accounting_by_hand():
    w = torch.zeros(4, 8)
    w[0, 1], w[2, 5], w[3, 7] = 1.0, 2.0, 3.0            # 3 non-zeros, fp32
    assert prune.storage_bytes(w, "dense") == 32 * 4
    assert prune.storage_bytes(w, "csr") == 3 * (4 + 4) + 5 * 4
    assert prune.storage_bytes(w, "bitmask") == 3 * 4 + 4
    assert prune.storage_bytes(w, "2:4") == 16 * 4 + 4     # half the values + 2 bits each


def test_csr_is_exact_and_the_sweep_reports_both():
    rows = prune.sparse_dense_sweep(256, [0.5, 0.95], batch=8, min_time_s=0.0)
    assert [r["sparsity"] for r in rows] == [0.5, 0.95] and all(r["dense_s"] > 0 and r["csr_s"] > 0 for r in rows)
    w = torch.randn(64, 64) * prune.magnitude_mask(torch.randn(64, 64), 0.8)
    x = torch.randn(64, 5)
    torch.testing.assert_close(w.to_sparse_csr() @ x, w @ x)


def test_pruned_cnn_recovers_with_fine_tuning():
    ds = data.load_fashion_mnist()
    x, y = ds.tensors("train")
    xt, yt = ds.tensors("test")
    model = models.load_cnn()
    dense = models.accuracy(model, xt, yt)
    params = [p for _, p in prune.prunable(model)]
    masks = prune.Masks({p: prune.magnitude_mask(p, 0.5) for p in params})
    masks.apply()
    prune.finetune(model, x[:4000], y[:4000], masks, epochs=1)
    assert prune.sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert models.accuracy(model, xt, yt) > dense - 0.02


@pytest.mark.gpu
def test_semi_structured_round_trip_on_gpu():
    r = prune.semi_structured_speedup(1024, 1024, 1024, min_time_s=0.05)
    assert r["round_trip_exact"] and r["speedup"] > 0


def test_prune_linears_on_the_tiny_gpt():
    gpt, tok = models.load_tiny_gpt()
    ids = tok(data.load_corpus("train")[:4000], return_tensors="pt")["input_ids"][:, :64]
    norms = prune.activation_norms(gpt, lambda m: m(ids))
    assert set(norms) == {n for n, _ in linear_layers(gpt)}
    for method in ("magnitude", "wanda"):
        p = prune.prune_linears(gpt, 0.5, method, "2:4", norms)
        w = p.transformer.h[0].attn.c_attn.weight.t()            # (out, in)
        assert (w.reshape(-1, 4).ne(0).sum(1) == 2).all()
        assert prune.sparsity(p.transformer.h) == pytest.approx(0.5, abs=1e-3)
    assert prune.sparsity(gpt.transformer.h) < 0.01             # the original is untouched
    with pytest.raises(ValueError, match="act_norms"):
        prune.prune_linears(gpt, 0.5, "wanda")


def test_magnitude_mask_of_a_transposed_view_and_per_layer_magnitude_on_a_gpt():
    w = torch.randn(6, 10)
    torch.testing.assert_close(prune.magnitude_mask(w.t(), 0.5), prune.magnitude_mask(w, 0.5).t())  # a Conv1D weight view
    gpt, _ = models.load_tiny_gpt()
    p = prune.prune_linears(gpt, 0.5, "magnitude per layer")
    for name, m in linear_layers(p):
        w = linear_weight(m)
        assert abs(prune.sparsity(w) - 0.5) < 1e-3, name
    rows = (linear_weight(dict(linear_layers(p))["transformer.h.0.mlp.c_fc"]) == 0).float().mean(1)
    assert rows.std() > 0.01, "per layer: rows lose different fractions (per row they would all lose 50 %)"
    with pytest.raises(ValueError, match="unstructured criterion"):
        prune.prune_linears(gpt, 0.5, "magnitude per layer", "2:4")


def test_sensitivity_scan_prunes_one_layer_at_a_time_and_restores_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for _, p in prune.prunable(model)]
    scan = prune.sensitivity_scan(model, [0.0, 0.5, 1.0], lambda m: [prune.sparsity(p) for _, p in prune.prunable(m)])
    assert scan["0.weight"] == [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    assert scan["2.weight"] == [[0.0, 0.0], [0.0, 0.5], [0.0, 1.0]]
    assert all(torch.equal(p, b) for (_, p), b in zip(prune.prunable(model), before))
    masks = prune.masks_for(model, {"2.weight": 0.75})
    masks.apply()
    assert abs(prune.sparsity(model) - 0.75 * 64 / (128 + 64)) < 1e-9
    with pytest.raises(ValueError, match="not among the model's weights"):
        prune.masks_for(model, {"fc9.weight": 0.5})

"""labkit.quant.int8: hand-computed cases, error bounds, SmoothQuant's invariance, and LLM.int8
against bitsandbytes (CPU backend)."""
import copy
import logging

import pytest
import torch
import torch.nn as nn

from labkit import data, models
from labkit.quant import int8 as Q

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def tiny():
    return models.load_tiny_gpt()


def test_absmax_by_hand():
    q, s, z = Q.quantize(torch.tensor([-1.0, 0.0, 0.5, 1.0]))
    assert s.item() == pytest.approx(1 / 127) and z.item() == 0
    assert q.tolist() == [-127, 0, 64, 127]  # 0.5 * 127 = 63.5 rounds to even: 64
    assert q.dtype == torch.int8


def test_zero_point_by_hand_and_zero_is_exact():
    x = torch.tensor([0.0, 1.0, 2.0, 5.1])
    q, s, z = Q.quantize(x, symmetric=False)
    assert q.dtype == torch.uint8 and z.item() == 0 and s.item() == pytest.approx(5.1 / 255)
    x = torch.randn(64, 33) * 3 + 1
    x[5, 7] = 0.0
    q, s, z = Q.quantize(x, "token", symmetric=False)
    assert Q.dequantize(q, s, z)[5, 7].item() == 0.0  # 0.0 is always representable
    assert (q[5, 7].float() == z[5, 0]).item()


@pytest.mark.parametrize("granularity", Q.GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_error_is_at_most_half_a_step(granularity, symmetric):
    x = torch.randn(33, 70) * torch.rand(33, 1) * 10
    q, s, z = Q.quantize(x, granularity, symmetric)
    err = (Q.dequantize(q, s, z) - x).abs()
    assert (err <= s / 2 * (1 + 1e-5) + 1e-7).all()


def test_granularity_semantics():
    w = torch.randn(8, 3, 3, 3)  # a conv weight: channel = dim 0
    assert Q.quantize(w, "channel")[1].shape == (8, 1, 1, 1)
    a = torch.randn(2, 5, 16)     # an activation: token = last dim
    assert Q.quantize(a, "token")[1].shape == (2, 5, 1)
    assert Q.quantize(a, "tensor")[1].numel() == 1
    rows = torch.randn(64, 256) * torch.logspace(-2, 1, 64)[:, None]  # rows of very different scale
    # one scale for all rows wipes out the small rows; one per row keeps each to ~1%
    assert Q.relative_error(rows[0], Q.fake_quant(rows, "tensor")[0]) > 0.5
    assert Q.relative_error(rows[0], Q.fake_quant(rows, "channel")[0]) < 0.02


def test_gaussian_per_row_error_matches_theory():
    # uniform rounding error s²/12 with s = max|x|/127; max of 4096 N(0,1) draws ≈ 3.8: ≈ 0.0087
    w = torch.randn(4096, 4096)
    assert Q.relative_error(w, Q.fake_quant(w, "channel")) == pytest.approx(0.0087, abs=0.0004)


def test_bad_input():
    with pytest.raises(ValueError, match="floating-point"):
        Q.fake_quant(torch.arange(10))
    with pytest.raises(ValueError, match="empty"):
        Q.fake_quant(torch.empty(0))
    with pytest.raises(ValueError, match="granularity must be one of"):
        Q.fake_quant(torch.randn(4), granularity="row")
    with pytest.raises(TypeError, match="torch.Tensor"):
        Q.fake_quant([1.0])
    with pytest.raises(ValueError, match="mode"):
        Q.W8A8Linear(nn.Linear(4, 4), mode="int4")
    with pytest.raises(ValueError, match="alpha"):
        Q.smoothquant_scales(torch.ones(4), torch.ones(2, 4), alpha=2)


def test_int8_matmul_is_exact(monkeypatch):
    a = torch.randint(-127, 128, (40, 64), dtype=torch.int8)
    b = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    assert torch.equal(Q.int8_matmul(a, b).long(), a.long() @ b.long().t())

    def refuse(*args):  # as CUDA's kernel does for M <= 16 or K, N not multiples of 8
        raise RuntimeError("self.size(0) needs to be greater than 16")
    monkeypatch.setattr(torch, "_int_mm", refuse)
    a, b = a[:5, :12], b[:7, :12]
    assert torch.equal(Q.int8_matmul(a, b).long(), a.long() @ b.long().t())


@pytest.mark.parametrize("act", [None, "tensor", "token"])
def test_w8a8_linear_real_int8_equals_fake_quant(act):
    lin = nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    fake, real = Q.W8A8Linear(lin, "channel", act, mode="fake"), Q.W8A8Linear(lin, "channel", act, mode="int8")
    torch.testing.assert_close(real(x), fake(x), atol=1e-4, rtol=1e-4)
    assert Q.relative_error(lin(x).detach(), fake(x)) < 0.03


def test_observer():
    obs = Q.Observer("minmax")
    obs.update(torch.tensor([1.0, -3.0]))
    obs.update(torch.tensor([2.0]))
    assert obs.scale() == pytest.approx(3 / 127)
    p = Q.Observer("percentile", percentile=99)
    x = torch.randn(100_000)
    x[0] = 1000.0
    p.update(x)
    assert p.scale() < 4 / 127  # the one extreme value is ignored
    with pytest.raises(RuntimeError, match="calibration"):
        Q.Observer().scale()


def test_smoothquant_scales_by_hand():
    s = Q.smoothquant_scales(torch.tensor([16.0, 1.0]), torch.tensor([[1.0, 4.0], [-0.5, 2.0]]), alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([4.0 / 1.0, 1.0 / 2.0]))


def test_smoothquant_leaves_the_float_model_unchanged(tiny):
    model, tok = tiny
    ids = tok(data.load_corpus("heldout")[:2000], return_tensors="pt")["input_ids"][:, :128]
    stats = Q.activation_absmax(model, lambda m: m(ids))
    smoothed = copy.deepcopy(model)
    Q.smooth_gpt2(smoothed, stats, alpha=0.5)
    with torch.no_grad():
        torch.testing.assert_close(smoothed(ids).logits, model(ids).logits, atol=2e-4, rtol=1e-4)
        assert not torch.equal(smoothed.transformer.h[0].ln_1.weight, model.transformer.h[0].ln_1.weight)


def test_vectorwise_quant_equals_bitsandbytes():
    import bitsandbytes.functional as bnbF
    x = torch.randn(32, 64)
    x[:, [3, 40]] *= 12  # two outlier features
    x[7, 10] = -9.0      # and one lone outlier
    q, absmax, cols = Q.vectorwise_quant(x, threshold=6.0)
    bq, bstats, bcols = bnbF.int8_vectorwise_quant(x.clone(), threshold=6.0)
    assert sorted(cols.tolist()) == sorted(bcols.tolist()) and {3, 40, 10} <= set(cols.tolist())
    torch.testing.assert_close(absmax.flatten(), bstats.float())
    assert torch.equal(q, bq)
    assert torch.equal(Q.outlier_columns(x, 6.0), cols)


def test_llm_int8_linear_matches_bitsandbytes_linear8bitlt():
    import bitsandbytes as bnb
    lin = nn.Linear(64, 32)
    ref = bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False, threshold=6.0)
    ref.load_state_dict(lin.state_dict())
    ref = ref.to("cpu").eval()  # in training mode bitsandbytes runs a weight-only path on CPUs
    ours = Q.LLMInt8Linear(lin, threshold=6.0)
    naive = Q.W8A8Linear(lin, "tensor", "tensor")
    x = torch.randn(10, 64)
    x[:, 5] *= 20
    with torch.no_grad():
        y, y_ref, y_fp, y_naive = ours(x), ref(x), lin(x), naive(x)
    assert ours.last_outlier_columns.tolist() == [5]
    # bitsandbytes computes in fp16 (its own rounding on top), so the two agree to ~0.5%, as
    # each does with float; naive per-tensor W8A8 on the same outlier input is several times worse
    assert Q.relative_error(y_ref, y) < 0.01 and Q.relative_error(y_fp, y) < 0.01
    assert Q.relative_error(y_fp, y_naive) > 3 * Q.relative_error(y_fp, y)


def test_bitsandbytes_8bit_gpt_and_labkit_w8a8_agree_on_perplexity(tiny):
    from transformers import BitsAndBytesConfig, GPT2LMHeadModel
    model, tok = tiny
    text = data.load_corpus("heldout")[:6000]
    fp32 = models.perplexity(model, tok, text)
    bnb8 = GPT2LMHeadModel.from_pretrained(models.TINY_GPT_DIR, quantization_config=BitsAndBytesConfig(
        load_in_8bit=True), device_map="cpu", local_files_only=True)
    ours = Q.replace_linears(copy.deepcopy(model), lambda n, m: Q.LLMInt8Linear(m, 6.0))
    w8a8 = Q.replace_linears(copy.deepcopy(model), lambda n, m: Q.W8A8Linear(m, "channel", "token", mode="int8"))
    p_bnb, p_ours, p_w8a8 = (models.perplexity(m, tok, text) for m in (bnb8, ours, w8a8))
    assert abs(p_bnb / fp32 - 1) < 0.02 and abs(p_ours / fp32 - 1) < 0.02 and abs(p_w8a8 / fp32 - 1) < 0.03
    assert abs(p_ours / p_bnb - 1) < 0.01


def test_smoothed_linear_is_exact_in_float_and_helps_with_outliers():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(50, 64)
    x[:, [3, 17]] *= 30  # outlier input channels, as in real transformers
    stats = x.abs().amax(0)
    sm = Q.SmoothedLinear(lin, stats, alpha=0.5)
    s = Q.smoothquant_scales(stats, lin.weight.detach())
    torch.testing.assert_close(sm.inv_s, 1 / s)
    with torch.no_grad():
        torch.testing.assert_close((x / s) @ (lin.weight * s).t(), x @ lin.weight.t(), atol=1e-4, rtol=1e-4)
        naive = Q.W8A8Linear(lin, "channel", "tensor")
        ref = lin(x)
        assert Q.relative_error(ref, sm(x)) < Q.relative_error(ref, naive(x)) / 2


def test_smoothquant_schemes_quantize_activations_per_tensor_or_per_token(tiny):
    model, tok = tiny
    ids = tok(data.load_corpus("heldout")[:2000], return_tensors="pt")["input_ids"][:, :64]
    calib = lambda m: m(ids)  # noqa: E731
    for act in ("tensor", "token"):
        q = Q.apply_scheme(model, f"SmoothQuant W8A8 act per-{act}", calib)
        layers = [m for m in q.modules() if isinstance(m, Q.W8A8Linear)]
        assert layers and {m.act for m in layers} == {act}
        # smoothing folded into the LayerNorms: the quantized model stays close to the float one
        with torch.no_grad():
            assert Q.relative_error(model(ids).logits, q(ids).logits) < 0.05
    with pytest.raises(ValueError, match="needs calibrate"):
        Q.apply_scheme(model, "SmoothQuant W8A8 act per-token")

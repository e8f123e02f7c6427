"""labkit.quant.kbit: NF4 against bitsandbytes, packing, INT4 groups, bits-per-parameter accounting."""
import logging

import pytest
import torch

from labkit.quant import int8 as Q
from labkit.quant import kbit as K

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def test_nf4_codebook_equals_bitsandbytes_table():
    import bitsandbytes.functional as F
    torch.testing.assert_close(K.nf4_codebook(), F.get_4bit_type("nf4", device="cpu").float(), atol=1e-7, rtol=0)


@pytest.mark.parametrize("shape", [(64, 64), (33, 17), (1, 100), (8, 3, 5, 7)])
def test_fake_quant_nf4_equals_bitsandbytes(shape):
    import bitsandbytes.functional as F
    w = torch.randn(shape) * torch.rand(()) * 3
    q, state = F.quantize_4bit(w.contiguous(), blocksize=64, quant_type="nf4")
    ref = F.dequantize_4bit(q, state, quant_type="nf4")
    torch.testing.assert_close(K.fake_quant_nf4(w, 64), ref, atol=1e-6, rtol=1e-6)


def test_fp4_codebook_and_values_equal_bitsandbytes():
    import bitsandbytes.functional as F
    torch.testing.assert_close(K.fp4_codebook(), F.get_4bit_type("fp4", device="cpu").float().unique(), atol=1e-7, rtol=0)
    for shape in [(64, 64), (33, 17), (8, 3, 5, 7)]:
        w = torch.randn(shape) * torch.rand(()) * 3
        q, state = F.quantize_4bit(w.contiguous(), blocksize=64, quant_type="fp4")
        torch.testing.assert_close(K.fake_quant_fp4(w, 64), F.dequantize_4bit(q, state, quant_type="fp4"),
                                   atol=1e-6, rtol=1e-6)


def test_fp4_is_worse_than_nf4_on_normal_weights():
    w = torch.randn(1024, 1024)   # NF4's levels follow the normal distribution; FP4's crowd near zero
    assert Q.relative_error(w, K.fake_quant_fp4(w)) > 1.2 * Q.relative_error(w, K.fake_quant_nf4(w))
    assert K.bits_per_param("fp4") == K.bits_per_param("nf4") == 4.5
    with pytest.raises(ValueError, match="quant_type"):
        K.quantize_4bit(w, 64, "int4")


def test_nf4_error_and_bits_on_gaussian_weights():
    w = torch.randn(4096, 4096)
    assert Q.relative_error(w, K.fake_quant_nf4(w)) == pytest.approx(0.092, abs=0.001)
    assert Q.relative_error(w, K.fake_quant_nf4_dq(w)) == pytest.approx(0.092, abs=0.001)  # double quant is ~free
    assert K.bits_per_param("nf4-dq") <= 4.13 and K.bits_per_param("nf4") == 4.5
    assert Q.relative_error(w, K.fake_quant_int4(w, 128)) <= 0.101
    assert K.bits_per_param("int4", group=128) == 4.25


def test_int4_groups_smaller_is_better_and_levels_are_16():
    w = torch.randn(64, 512)
    errs = [Q.relative_error(w, K.fake_quant_int4(w, g)) for g in (32, 128, 512)]
    assert errs[0] < errs[1] < errs[2]
    assert all(len(row.unique()) <= 16 for row in K.fake_quant_int4(w, 128).reshape(-1, 128))
    assert all(len(row.unique()) <= 15 for row in K.fake_quant_int4(w, 128, symmetric=True).reshape(-1, 128))
    with pytest.raises(ValueError, match="multiple of group"):
        K.fake_quant_int4(torch.randn(3, 100), 128)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1001])
def test_pack_4bit_round_trip(n):
    codes = torch.randint(0, 16, (n,), dtype=torch.uint8)
    packed = K.pack_4bit(codes)
    assert packed.numel() == (n + 1) // 2 and packed.dtype == torch.uint8
    assert torch.equal(K.unpack_4bit(packed, n), codes)
    with pytest.raises(ValueError, match="0..15"):
        K.pack_4bit(torch.tensor([16], dtype=torch.uint8))


def test_bad_input():
    with pytest.raises(ValueError, match="floating-point"):
        K.fake_quant_nf4(torch.arange(64))
    with pytest.raises(ValueError, match="blocksize"):
        K.fake_quant_nf4(torch.randn(64), blocksize=1)
    with pytest.raises(ValueError, match="scheme"):
        K.bits_per_param("int3")


def _layer_loss(w, q, x):
    return ((x @ w.t() - x @ q.t()) ** 2).sum().item()


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_round_to_nearest_on_the_calibration_loss(act_order):
    torch.manual_seed(0)
    n_in, n_out = 256, 96
    mix = torch.randn(n_in, n_in) / n_in**0.5
    x = torch.randn(2048, n_in) @ mix * torch.logspace(-1, 1, n_in)   # correlated inputs of mixed scale
    w = torch.randn(n_out, n_in)
    H = x.t() @ x / len(x)
    rtn = K.rtn_quantize(w, 4, 64)
    gptq = K.gptq_quantize(w, H, 4, 64, blocksize=64, act_order=act_order)
    assert _layer_loss(w, gptq, x) < 0.95 * _layer_loss(w, rtn, x)
    # still 4-bit: at most 16 levels per row in each group (with act_order the groups follow the new order)
    for q in ([rtn] if act_order else [rtn, gptq]):
        assert max(len(row.unique()) for row in q.reshape(n_out, -1, 64).transpose(0, 1).reshape(-1, 64)) <= 16


def test_gptq_rejects_a_wrong_hessian():
    with pytest.raises(ValueError, match="hessian"):
        K.gptq_quantize(torch.randn(4, 8), torch.eye(7))


def test_quantize_model_4bit_on_the_tiny_gpt():
    from labkit import data, models
    gpt, tok = models.load_tiny_gpt()
    ids = tok(data.load_corpus("train")[:5000], return_tensors="pt")["input_ids"][:, :128].view(1, 128)
    q = K.quantize_model_4bit(gpt, "gptq", lambda m: m(ids), group=128)
    w, w0 = q.transformer.h[0].mlp.c_fc.weight.t(), gpt.transformer.h[0].mlp.c_fc.weight.t()
    # GPTQ moves weights further than rounding alone (it compensates errors): bounded, not tiny
    assert not torch.equal(w, w0) and Q.relative_error(w0, w) < 0.3
    assert all(len(row.unique()) <= 16 for row in w[:, :128])
    with pytest.raises(ValueError, match="method"):
        K.quantize_model_4bit(gpt, "awq")


@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_labkit_4bit_model_equals_bitsandbytes_through_transformers(scheme):
    import bitsandbytes as bnb
    from labkit import models
    gpt, _ = models.load_tiny_gpt()
    ids = torch.randint(0, gpt.config.vocab_size, (2, 64))
    theirs = K.load_bnb(models.TINY_GPT_DIR, scheme)
    ours = K.quantize_model_4bit(gpt, scheme)
    # bitsandbytes' CPU inference kernel (eval mode, AVX512-BF16) computes in bf16; its training-mode
    # path dequantizes to fp32 first: that one must give exactly our numbers
    for m in theirs.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.train()
    with torch.no_grad():
        a, b, fp32 = (m(ids).logits for m in (ours, theirs, gpt))
    assert (a - fp32).abs().max() > 0.01          # quantization did change the outputs...
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)   # ...exactly as bitsandbytes does
    with pytest.raises(ValueError, match="scheme"):
        K.load_bnb(models.TINY_GPT_DIR, "int3")


def test_gptq_needs_calibration():
    with pytest.raises(ValueError, match="calibrate"):
        K.quantize_model_4bit(torch.nn.Linear(4, 4), "gptq")


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_bitsandbytes_cuda_kernels_agree_with_labkit(scheme):
    """On a GPU, bitsandbytes' CUDA 4-bit kernels run the same dequantized weights as labkit's."""
    from labkit import data, models
    gpt, tok = models.load_tiny_gpt()
    held = data.load_corpus("heldout")
    ours = models.perplexity(K.quantize_model_4bit(gpt, scheme), tok, held, max_tokens=4096)
    theirs = models.perplexity(K.load_bnb(models.TINY_GPT_DIR, scheme, device="cuda"), tok, held, max_tokens=4096)
    assert theirs == pytest.approx(ours, rel=2e-3)


def test_int4_asymmetric_groups_all_of_one_sign_keep_their_range():
    # rows in [1, 1.5] (or [-1.5, -1]): the range [min(g, 0), max(g, 0)] still spans the group, and 0
    # is a level; a zero point clamped into 0..15 without it collapsed such groups (error 0.6)
    for sign in (1.0, -1.0):
        w = sign * (1.0 + 0.5 * torch.rand(8, 128))
        err = Q.relative_error(w, K.fake_quant_int4(w, 128))
        assert err < 0.05, err                      # 16 levels over [0, 1.5]: step 0.1, error ~0.02
    w = torch.relu(torch.randn(4, 128))
    assert torch.equal(K.fake_quant_int4(w, 128)[w == 0], torch.zeros(int((w == 0).sum())))  # zeros stay exact


def test_double_quant_uses_bitsandbytes_dynamic_map():
    import bitsandbytes.functional as F
    w = torch.randn(700, 256) * 0.05
    _, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    theirs = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
    _, absmax = K.quantize_4bit(w, 64, "nf4")
    ours = K.double_quant(absmax)
    step = (K.dynamic_map().diff().max() * (absmax - absmax.mean()).abs().max()).item()   # one code step, at most
    assert (ours - theirs).abs().max() <= step
    assert (ours == theirs).float().mean() > 0.99          # all but a few scales land on the same code
    linear8 = absmax.mean() + torch.round((absmax - absmax.mean()) / (absmax - absmax.mean()).abs().max() * 127) \
        * (absmax - absmax.mean()).abs().max() / 127
    assert (linear8 - theirs).abs().mean() > 5 * (ours - theirs).abs().mean()   # a linear int8 code is not what it stores


def test_gptq_column_step_hook_gives_the_built_in_result():
    X = torch.randn(256, 48) @ torch.randn(48, 48)
    H, W = X.t() @ X / 256, torch.randn(8, 48)

    def step(W1, U1, i, s, z, qmax):
        q = K.int_round(W1[:, i], s, z, qmax)
        W1[:, i + 1:] -= ((W1[:, i] - q) / U1[i, i])[:, None] * U1[i, i + 1:][None, :]
        W1[:, i] = q
        return W1
    ref = K.gptq_quantize(W, H, bits=3, group=16, blocksize=32)
    torch.testing.assert_close(K.gptq_quantize(W, H, bits=3, group=16, blocksize=32, column_step=step), ref)
    lazy = lambda W1, U1, i, s, z, qmax: W1.index_copy_(1, torch.tensor([i]), K.int_round(W1[:, i:i + 1], s[:, None], z[:, None], qmax))
    assert (K.gptq_quantize(W, H, bits=3, group=16, blocksize=32, column_step=lazy) - ref).abs().max() > 1e-3  # no update: RTN-like


def test_quantize_model_4bit_takes_a_function():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    out = K.quantize_model_4bit(model, lambda w: K.rtn_quantize(w, bits=3, group=32))
    ref = K.quantize_model_4bit(model, "rtn", bits=3, group=32)
    for a, b in zip(out.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)

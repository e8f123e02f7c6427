"""labkit.quant.bitnet: absmean ternarization, BitLinear's forward and STE, packing, add-only matmul."""
import pytest
import torch

from labkit.quant import bitnet as B


def test_ternarize_by_hand():
    codes, gamma = B.ternarize(torch.tensor([[0.9, -0.1, -2.0, 0.4]]))
    assert gamma.item() == pytest.approx(0.85) and codes.tolist() == [[1, 0, -1, 0]]


def test_bitlinear_forward_equals_its_formula_and_gradients_go_straight_through():
    torch.manual_seed(0)
    layer = B.BitLinear(16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    y = layer(x)
    codes, gamma = B.ternarize(layer.weight)
    torch.testing.assert_close(y, B.quant_activations(x) @ (codes.float() * gamma).t() + layer.bias)
    y.sum().backward()
    # STE: the latent weight gets the gradient a linear layer with the quantized operands would get
    torch.testing.assert_close(layer.weight.grad, torch.ones(5, 8).t() @ B.quant_activations(x.detach()))
    torch.testing.assert_close(x.grad, torch.ones(5, 8) @ (codes.float() * gamma))


@pytest.mark.parametrize("n", [1, 4, 5, 6, 1000, 4099])
def test_pack_ternary_round_trip_at_1_6_bits(n):
    codes = torch.randint(-1, 2, (n,), dtype=torch.int8)
    packed = B.pack_ternary(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-n // 5)
    assert torch.equal(B.unpack_ternary(packed, n), codes)
    if n >= 1000:
        assert B.ternary_bits_per_weight(n) <= 1.64
    with pytest.raises(ValueError, match="-1, 0, 1"):
        B.pack_ternary(torch.tensor([2]))


def test_ternary_matmul_equals_the_dense_reference():
    w = torch.randn(12, 40)
    codes, gamma = B.ternarize(w)
    x = torch.randn(3, 7, 40)
    torch.testing.assert_close(B.ternary_matmul(x, codes, gamma), x @ (codes.float() * gamma).t(), atol=1e-5, rtol=1e-5)
    codes[0] = 0                                               # a row with nothing to add
    index = B.ternary_index(codes)
    torch.testing.assert_close(B.ternary_matmul(x, codes, gamma, index=index, chunk=2),
                               x @ (codes.float() * gamma).t(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must match"):
        B.ternary_matmul(torch.randn(3, 39), codes, gamma)


def _config():
    from transformers import GPT2Config
    return GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0)


def test_bitnet_gpt_trains():
    torch.manual_seed(0)
    model = B.bitnet_gpt(_config())
    assert sum(isinstance(m, B.BitLinear) for m in model.modules()) == 4
    ids = torch.randint(0, 50, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0  # it learns (memorises the batch) through the STE


def test_ternary_gpt_is_the_bitnet_model_and_survives_a_save(tmp_path):
    torch.manual_seed(0)
    model = B.bitnet_gpt(_config()).eval()
    ids = torch.randint(0, 50, (3, 16))
    deployed = B.ternary_gpt(model)
    assert sum(isinstance(m, B.TernaryLinear) for m in deployed.modules()) == 4
    with torch.no_grad():
        ref = model(ids).logits
        torch.testing.assert_close(deployed(ids).logits, ref, atol=1e-5, rtol=1e-5)
        B.save_ternary(deployed, tmp_path)
        reloaded = B.load_ternary(tmp_path)
        assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
        torch.testing.assert_close(reloaded(ids).logits, ref, atol=1e-5, rtol=1e-5)
    layer = reloaded.transformer.h[0].mlp.c_fc
    assert layer.packed.numel() == -(-32 * 128 // 5)            # 5 weights per byte on disk and in memory
    assert set(layer.codes().unique().tolist()) <= {-1, 0, 1}
    with pytest.raises(ValueError, match="TernaryLinear"):
        B.save_ternary(model, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="train_bitnet_gpt"):
        B.load_ternary(tmp_path / "missing")


def test_post_training_ternarization_of_a_float_layer_is_absmean():
    torch.manual_seed(0)
    lin = torch.nn.Linear(40, 12)
    t = B.TernaryLinear.from_weight(lin.weight.detach(), lin.bias.detach())
    codes, gamma = B.ternarize(lin.weight)
    x = torch.randn(5, 40)
    torch.testing.assert_close(t(x), B.quant_activations(x) @ (codes.float() * gamma).t() + lin.bias)


def test_shipped_bitnet_gpt_matches_its_provenance():
    from labkit import data, models
    prov = data.provenance("bitnet_gpt")
    model = B.load_ternary(data.DATA / "bitnet_gpt")
    _, tok = models.load_tiny_gpt()
    ppl = prov["heldout_perplexity"]
    assert models.perplexity(model, tok, data.load_corpus("heldout")) == pytest.approx(ppl["bitnet"], rel=1e-3)
    assert ppl["bitnet"] == pytest.approx(ppl["bitnet_latent"], rel=1e-3)   # packed form = trained model
    assert ppl["bitnet"] < ppl["float_ternarized_after_training"]           # training ternary beats rounding
    layers = [m for m in model.modules() if isinstance(m, B.TernaryLinear)]
    assert sum(m.in_features * m.out_features for m in layers) == prov["ternary_weights"]
    assert 8 * sum(m.packed.numel() + 4 for m in layers) / prov["ternary_weights"] <= 1.6 + 1e-3
    assert prov["command"].startswith("python scripts/train_bitnet_gpt.py")


@pytest.mark.gpu
def test_bitnet_gpt_trains_on_the_gpu_and_deploys():
    from labkit import models
    torch.manual_seed(0)
    model = B.bitnet_gpt(_config()).cuda()
    ids = (torch.arange(1024) * 7) % 50            # a periodic sequence: learnable (on CPU: 3.88 -> 2.38)
    log = models.train_lm(model, ids, 40, batch=8, lr=3e-3, eval_ids=ids, log_every=39, eval_every=39, progress=False)
    assert log[-1]["heldout_loss"] < log[0]["heldout_loss"] - 0.5
    deployed = B.ternary_gpt(model.cpu())
    x = ids[:32].view(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x).logits, model.eval()(x).logits, atol=1e-4, rtol=1e-4)


def test_binarize_by_hand_and_against_ternary():
    signs, beta = B.binarize(torch.tensor([[0.9, -0.1, -2.0, 0.4]]))     # mean -0.2: -0.1 is above it
    assert signs.dtype == torch.int8 and signs.tolist() == [[1, 1, -1, 1]] and beta.item() == pytest.approx(0.85)
    w = torch.randn(256, 256)
    err = {name: ((w - c.float() * g).norm() / w.norm()).item()
           for name, (c, g) in (("binary", B.binarize(w)), ("ternary", B.ternarize(w)))}
    assert err["ternary"] < err["binary"] < 1          # the 0 level is worth its extra half bit on normal weights
    with pytest.raises(ValueError, match="floating-point"):
        B.binarize(torch.ones(3, dtype=torch.int64))

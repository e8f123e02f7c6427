"""labkit.memory: the byte counts against what PyTorch really saves and allocates."""
import pytest
import torch
import torch.nn.functional as F

from labkit import memory as M
from labkit import parallel as P


def test_state_bytes_per_param_and_zero_sharding():
    assert M.state_bytes_per_param("adam", mixed=True) == 16          # ZeRO paper: 2 + 2 + 12
    assert M.state_bytes_per_param("adam") == 16 and M.state_bytes_per_param("sgd") == 8
    assert M.state_bytes_per_param("momentum", mixed=True) == 12
    assert M.zero_bytes_per_param(0, 64) == 16
    assert M.zero_bytes_per_param(1, 64) == pytest.approx(4 + 12 / 64)   # ZeRO: (2 + 2 + K/Nd) Ψ
    assert M.zero_bytes_per_param(2, 64) == pytest.approx(2 + 14 / 64)
    assert M.zero_bytes_per_param(3, 64) == pytest.approx(16 / 64)
    assert M.zero_bytes_per_param(3, 1) == 16
    with pytest.raises(ValueError, match="optimizer"):
        M.state_bytes_per_param("lion")
    with pytest.raises(ValueError, match="stage"):
        M.zero_bytes_per_param(4, 2)
    with pytest.raises(ValueError, match="world"):
        M.zero_bytes_per_param(1, 0)


@pytest.mark.parametrize("b, T, d, heads", [(2, 16, 32, 4), (3, 64, 64, 2), (1, 100, 96, 8)])
def test_block_activation_formula_equals_what_autograd_saves(b, T, d, heads):
    blk = M.Block(d, heads, context=128)
    x = torch.randn(b, T, d, requires_grad=True)
    saved = M.saved_bytes(blk, x, exclude=[*blk.parameters(), *blk.buffers()])
    assert saved.bytes == M.block_activation_bytes(b, T, d, heads)
    with_params = M.saved_bytes(blk, x)
    assert with_params.bytes > saved.bytes                      # the weights are saved too, and excluded above


def test_saved_bytes_counts_a_storage_once():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(64, 64)
    one = M.saved_bytes(lambda: (x @ w).sum(), exclude=[w])
    two = M.saved_bytes(lambda: (x @ w + x[:32].repeat(2, 1) @ w).sum(), exclude=[w])
    assert one.bytes == 64 * 64 * 4 and two.bytes == 2 * 64 * 64 * 4


def test_peak_bytes_on_the_cpu_sees_allocations_and_frees():
    def two_then_one():
        a, b = torch.empty(1000, 1000), torch.empty(1000, 1000)
        del a, b
        torch.empty(500, 1000)
    assert M.peak_bytes(two_then_one, device="cpu") == pytest.approx(8e6, rel=0.01)


def _step(model, ids, every=0, bf16=False):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(ids, run_blocks=lambda blocks, x: M.checkpointed(blocks, x, every))
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    return loss.item()


def test_checkpointing_is_exact_recomputes_and_saves_memory():
    torch.manual_seed(0)
    model = M.Stack(layers=4, d=64, heads=4, vocab=256, context=64)
    ids = torch.randint(0, 256, (4, 64))
    grads, peaks, calls = {}, {}, {}
    for every in (0, 1, 2):
        model.zero_grad()
        with M.ForwardCounter(model) as c:
            peaks[every] = M.peak_bytes(lambda: _step(model, ids, every), device="cpu")
        calls[every] = c.calls
        grads[every] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert calls == {0: 4, 1: 8, 2: 8}                  # every checkpointed block runs forward twice
    torch.testing.assert_close(grads[1], grads[0])     # recomputation gives the same gradients
    torch.testing.assert_close(grads[2], grads[0])
    assert peaks[1] < 0.8 * peaks[0] and peaks[2] < 0.8 * peaks[0]
    with pytest.raises(ValueError, match="every"):
        M.checkpointed(model.blocks, torch.zeros(1, 4, 64), -1)


def test_sharded_adam_by_hand_equals_torch_adam_and_fsdp2_holds_its_share():
    res = P.run(M.check_sharded_adam, 2, _zero1, backend="gloo")
    for r in res:
        assert r["vs torch Adam"] <= 1e-6 and r["moved"] > 1e-3
        assert r["state bytes held"] * 2 == r["unsharded state bytes"]
    wrong = P.run(M.check_sharded_adam, 2, _zero1_no_bias_correction, backend="gloo")
    assert wrong[0]["vs torch Adam"] > 1e-4
    for r in P.run(M.fsdp_bytes, 2, backend="gloo"):
        per_param = (r["weight bytes"] + r["gradient bytes"] + r["optimizer bytes"]) / r["parameters"]
        assert per_param == pytest.approx(M.zero_bytes_per_param(3, 2, mixed=False), rel=0.01)


def _zero1(param, grad, state, lr, t, no_bias_correction=False):
    import torch.distributed as dist
    p, r = dist.get_world_size(), dist.get_rank()
    n = param.numel() // p
    g = grad[r * n:(r + 1) * n]
    if not state:
        state["m"], state["v"] = torch.zeros(n), torch.zeros(n)
    m, v = state["m"], state["v"]
    m.mul_(0.9).add_(g, alpha=0.1)
    v.mul_(0.999).addcmul_(g, g, value=0.001)
    c1, c2 = (1, 1) if no_bias_correction else (1 - 0.9 ** t, 1 - 0.999 ** t)
    shard = param[r * n:(r + 1) * n] - lr * (m / c1) / ((v / c2).sqrt() + 1e-8)
    parts = [torch.empty_like(shard) for _ in range(p)]
    dist.all_gather(parts, shard)
    param.copy_(torch.cat(parts))


def _zero1_no_bias_correction(param, grad, state, lr, t):
    _zero1(param, grad, state, lr, t, no_bias_correction=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
def test_activation_formula_against_the_cuda_allocator():
    blk = M.Block(256, 4, context=512).cuda()
    x = torch.randn(8, 512, 256, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    y = blk(x)
    held = torch.cuda.memory_allocated() - before - y.numel() * 4     # what the forward left, but its output
    x_bytes = x.numel() * 4                 # saved too (LayerNorm's input), but allocated before
    assert held == pytest.approx(M.block_activation_bytes(8, 512, 256, 4) - x_bytes, rel=0.05)

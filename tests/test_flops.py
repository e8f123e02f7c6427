"""labkit.flops: formulas against FlopCounterMode on real transformers models, rates, roofline."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from labkit import flops
from labkit import flops as F


def test_gpt2_small_reference_values():
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    assert F.transformer_flops(cfg, 1024) == 291_648_307_200
    assert F.transformer_flops(cfg, 1024, backward=True) == 874_944_921_600


def _counted(cfg, seq_len, batch, backward):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))

    def run():
        out = model(ids)
        if backward:
            out.logits.float().pow(2).mean().backward()
    return F.count_flops(run)[0]


@pytest.mark.parametrize("n_layer, n_embd, n_head, vocab, seq_len, batch, n_inner", [
    (2, 64, 4, 101, 16, 2, None),
    (1, 96, 3, 50, 33, 1, None),
    (3, 32, 2, 257, 8, 3, 64),
])
@pytest.mark.parametrize("backward", [False, True])
def test_transformer_flops_equals_flop_counter(n_layer, n_embd, n_head, vocab, seq_len, batch, n_inner, backward):
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=64,
                     n_inner=n_inner, attn_implementation="eager")
    assert F.transformer_flops(cfg, seq_len, batch, backward=backward) == _counted(cfg, seq_len, batch, backward)


def test_causal_counts_only_the_kept_pairs():
    full = F.attention_flops(8, 16)
    causal = F.attention_flops(8, 16, causal=True)
    assert full == 4 * 8 * 8 * 16 and causal == 4 * 36 * 16  # 36 = 8·9/2 kept query-key pairs
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100)
    diff = F.transformer_flops(cfg, 10) - F.transformer_flops(cfg, 10, causal=True)
    assert diff == 2 * 4 * (100 - 55) * 64


def test_linear_and_matmul_flops_equal_counter():
    x, w = torch.randn(7, 13), torch.randn(5, 13)
    assert F.count_flops(torch.nn.functional.linear, x, w)[0] == F.linear_flops(7, 13, 5)
    a, b = torch.randn(3, 4, 6), torch.randn(3, 6, 9)
    total, by_op = F.count_flops(torch.bmm, a, b)
    assert total == F.matmul_flops(4, 9, 6, batch=3) and sum(by_op.values()) == total


def test_cpu_sdpa_is_invisible_to_the_counter():
    # The blind spot lab 01 shows: FlopCounterMode has no formula for the CPU flash kernel.
    q = torch.randn(1, 2, 16, 8)
    assert F.count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)[0] == 0
    assert F.attention_flops(16, 16) > 0


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="seq_len"):
        F.transformer_flops(GPT2Config(), 0)
    with pytest.raises(ValueError, match="batch_size"):
        F.transformer_flops(GPT2Config(), 8, batch_size=-2)
    with pytest.raises(TypeError, match="n_layer"):
        F.transformer_flops(object(), 8)
    with pytest.raises(ValueError, match="n_head"):
        F.transformer_flops(GPT2Config(n_embd=100, n_head=3), 8)
    with pytest.raises(ValueError, match="mfu"):
        F.training_days(2e25, 100, 1e15, mfu=1.5)
    with pytest.raises(ValueError, match="seconds"):
        F.mfu(1e9, 0, 1e12)
    with pytest.raises(ValueError, match="nbytes"):
        F.arithmetic_intensity(1.0, 0)


def test_rates_mfu_and_training_time():
    assert F.flop_rate(1e12, 2.0) == 5e11
    assert F.mfu(1e12, 2.0, 1e12) == pytest.approx(0.5)
    # 2e25 FLOP on 20,000 A100s (312 TFLOP/s bf16) at 35% MFU: about 106 days.
    assert F.training_days(2e25, 20_000, 312e12, 0.35) == pytest.approx(2e25 / (20_000 * 312e12 * 0.35) / 86400)
    assert 100 < F.training_days(2e25, 20_000, 312e12, 0.35) < 110
    assert F.training_flops(1e9, 2e10) == 1.2e20


def test_roofline():
    assert F.attainable_flops(0.1, 1e12, 1e11) == pytest.approx(1e10)   # memory bound
    assert F.attainable_flops(100.0, 1e12, 1e11) == 1e12                # compute bound
    pts = F.roofline_ops("cpu", sizes=(64, 128), elements=2**16, min_time_s=0.0)
    names = [p.name for p in pts]
    assert names[:2] == ["matmul 64³", "matmul 128³"] and {"add", "softmax", "layernorm"} <= set(names)
    assert all(p.seconds > 0 and p.flop_rate > 0 for p in pts)
    # matmuls reuse data, elementwise ops do not
    assert pts[1].intensity > pts[0].intensity > 10 > 1 > next(p for p in pts if p.name == "add").intensity


def test_class_shares_split_flop_and_time():
    torch.manual_seed(0)
    d, h, ff, B, T = 64, 4, 256, 2, 32
    layer = F.EncoderLayer(d, h, ff)
    rows = F.class_shares(F.profile_ops(layer, torch.randn(B, T, d), iters=2))
    assert set(rows) == set(F.CLASSES)
    # the finding of the lab: far more time than FLOP outside the contractions
    assert 100 - rows["tensor contraction"]["runtime_pct"] > 5 > 100 - rows["tensor contraction"]["flop_pct"]
    N = B * T
    forward = 2 * N * d * 3 * d + 2 * N * d * d + 2 * 2 * N * d * ff + 4 * B * T * T * d
    assert rows["tensor contraction"]["flop"] == 3 * forward       # exact, forward + backward
    assert rows["tensor contraction"]["flop_pct"] > 90
    assert rows["statistical normalization"]["flop"] > 0 and rows["element-wise"]["flop"] > 0
    assert all(r["seconds"] > 0 for c, r in rows.items() if c != "other")
    with pytest.raises(ValueError, match="n_head"):
        F.EncoderLayer(65, 4)


def test_profile_ops_self_times_add_up_and_totals_nest(capfd):
    torch.manual_seed(0)
    layer = F.EncoderLayer(64, 4, 256)
    ops = {r["op"]: r for r in F.profile_ops(layer, torch.randn(2, 32, 64), iters=2)}
    # linear calls addmm: its total holds addmm's self time, its own self time does not
    assert ops["aten::linear"]["total_s"] >= ops["aten::addmm"]["self_s"] > ops["aten::linear"]["self_s"]
    assert ops["aten::addmm"]["calls"] == 4 and ops["aten::addmm"]["class"] == "tensor contraction"
    assert all(r["total_s"] >= r["self_s"] * 0.999 for r in ops.values())
    # the counter's FLOP land on the ops that did them: 4 linears forward, their gradients as mm
    assert ops["aten::addmm"]["flop"] == 2 * 64 * (64 * 3 * 64 + 64 * 64 + 2 * 64 * 256)
    assert ops["aten::linear"]["flop"] == 0
    shares = F.class_shares(list(ops.values()))
    assert abs(sum(v["runtime_pct"] for v in shares.values()) - 100) < 1e-9
    again = F.class_shares(F.profile_ops(layer, torch.randn(2, 32, 64), iters=1))
    assert again["tensor contraction"]["flop"] == shares["tensor contraction"]["flop"]  # the same counts
    assert "USDT" not in capfd.readouterr().err  # the profiler's native start/stop lines are silenced
    with pytest.raises(ValueError, match="FLOP and some time"):
        F.class_shares([{"op": "aten::mm", "flop": 0, "self_s": 0}])


def test_matmul_sweep_times_with_the_timer_it_is_given():
    calls = []

    def timer(fn):
        calls.append(fn())
        return 0.5
    rows = F.matmul_sweep("cpu", [8, 16], "fp32", timer=timer)
    assert len(calls) == 2 and calls[1].shape == (16, 16)
    assert [r["seconds"] for r in rows] == [0.5, 0.5] and rows[1]["flop_rate"] == 2 * 16**3 / 0.5
    with pytest.raises(ValueError, match="timer must return a time > 0"):
        F.matmul_sweep("cpu", [8], timer=lambda fn: 0.0)


def test_matmul_sweep_rows_and_validation():
    rows = F.matmul_sweep("cpu", [32, 64], "fp32", min_time_s=0.0)
    assert [(r["n"], r["dtype"]) for r in rows] == [(32, "fp32"), (64, "fp32")]
    assert all(r["flops"] == 2 * r["n"] ** 3 and r["flop_rate"] == r["flops"] / r["seconds"] for r in rows)
    with pytest.raises(ValueError, match="dtypes"):
        F.matmul_sweep("cpu", [32], ["fp8"])
    with pytest.raises(ValueError, match="sizes"):
        F.matmul_sweep("cpu", [32, 0])
    with pytest.raises(ValueError, match="elements"):
        F.roofline_ops("cpu", elements=1000)
    assert F.matmul_flops(__import__("numpy").int64(3), 2, 2) == 24  # NumPy integers are ints too


def test_roofline_plot_draws_points_and_rejects_bad_ones():
    import matplotlib
    matplotlib.use("Agg")
    from labkit import plots
    ax = plots.roofline(1e12, 1e11, [("a", 0.5, 4e10), ("b", 100.0, 9e11)], memory_roofs=[("cache", 3e11)])
    assert len(ax.lines) == 4  # roof, cache roof, two points
    with pytest.raises(ValueError, match="'bad'"):
        plots.roofline(1e12, 1e11, [("bad", 0.0, 1e9)])


@pytest.mark.gpu
def test_profile_on_gpu_counts_each_kernel_once():
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    layer = F.EncoderLayer(256, 4, 1024).cuda()
    x = torch.randn(4, 128, 256, device="cuda")
    rows = F.class_shares(F.profile_ops(layer, x, iters=3))
    per_step = sum(r["seconds"] for r in rows.values())
    with profile(activities=[ProfilerActivity.CUDA]) as prof:  # all kernel time of 3 steps, independently
        for _ in range(3):
            layer(x.detach().requires_grad_()).sum().backward()
        torch.cuda.synchronize()
    kernels = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA) * 1e-6 / 3
    assert per_step == pytest.approx(kernels, rel=0.25)
    assert rows["tensor contraction"]["flop_pct"] > 98


def test_count_bytes_reads_inputs_writes_outputs_and_views_move_nothing():
    x, y = torch.ones(1000), torch.ones(1000)
    assert flops.count_bytes(lambda: x + y) == {"aten::add": 3 * 4000}
    assert flops.count_bytes(lambda: x.bfloat16() + y.bfloat16())["aten::add"] == 3 * 2000, "bf16: 2 bytes per element"
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert flops.count_bytes(lambda: (a @ b).t()) == {"aten::mm": (64 * 32 + 32 * 16 + 64 * 16) * 4}
    assert flops.count_bytes(lambda: x.view(10, 100).t().t().reshape(1000)) == {}, "views and a free reshape move nothing"
    assert flops.count_bytes(lambda: x.view(10, 100).t().reshape(1000)) == {"aten::clone": 2 * 4000}, "a copy does move"
    z = torch.zeros(1000)
    assert flops.count_bytes(lambda: z.add_(1.0)) == {"aten::add_": 2 * 4000}, "in place: read and written"
    # a real layer, forward and backward: every op that computes shows up, and the contractions'
    # bytes are exactly their operands' and results' sizes (FlopCounterMode gives their FLOP)
    layer = flops.EncoderLayer(64, 4, 256)
    xx = torch.randn(2, 16, 64, requires_grad=True)
    counts = flops.count_bytes(lambda: layer(xx).sum().backward())
    assert {"aten::addmm", "aten::mm", "aten::bmm", "aten::native_layer_norm", "aten::gelu"} <= set(counts)
    assert not any(op in counts for op in ("aten::view", "aten::t", "aten::transpose", "aten::_unsafe_view"))
    lin = torch.nn.Linear(64, 32)
    inp = torch.randn(8, 64)
    assert flops.count_bytes(lin, inp) == {"aten::addmm": (32 + 8 * 64 + 64 * 32 + 8 * 32) * 4}

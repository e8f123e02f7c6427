"""labkit.pipeline: schedules against the bubble formula, and a real pipeline against one process."""
import pytest

from labkit import parallel as P
from labkit import pipeline as PP


@pytest.mark.parametrize("kind", PP.KINDS)
@pytest.mark.parametrize("p, m", [(2, 1), (2, 4), (4, 4), (4, 8), (3, 5), (8, 32)])
def test_schedules_run_every_op_once_and_their_bubble_is_the_formula(kind, p, m):
    ops = PP.schedule(kind, p, m)
    for stage in ops:
        assert sorted(stage) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
        assert all(stage.index(("F", i)) < stage.index(("B", i)) for i in range(m))
    idle = PP.idle_fraction(PP.simulate(ops, t_f=1.0, t_b=2.0))
    assert idle == pytest.approx([PP.bubble_fraction(p, m)] * p, abs=1e-9)


def test_1f1b_holds_fewer_micro_batches_than_gpipe():
    assert PP.in_flight(PP.schedule("gpipe", 4, 8)) == [8, 8, 8, 8]
    assert PP.in_flight(PP.schedule("1f1b", 4, 8)) == [4, 3, 2, 1]     # p - s
    assert PP.in_flight(PP.schedule("1f1b", 4, 2)) == [2, 2, 2, 1]     # never more than m


def test_a_wrong_order_deadlocks_and_bad_arguments_are_named():
    ops = PP.schedule("gpipe", 2, 2)
    ops[1] = [("B", 0), ("F", 0), ("F", 1), ("B", 1)]                  # a backward before its forward
    with pytest.raises(ValueError, match="deadlock"):
        PP.simulate(ops)
    with pytest.raises(ValueError, match="kind"):
        PP.schedule("zb", 2, 2)
    with pytest.raises(ValueError, match="m must"):
        PP.schedule("1f1b", 2, 0)


@pytest.mark.parametrize("world, kind", [(2, "gpipe"), (4, "1f1b")])
def test_a_real_pipeline_equals_the_whole_model_in_one_process_and_idles_as_the_formula_says(world, kind):
    res = P.run(PP.run_pipeline, world, kind, 4, 8, 64, 8, 0.01, backend="gloo")   # ops padded to 10 / 20 ms
    assert all(r["grad diff"] <= 1e-6 for r in res), [r["grad diff"] for r in res]
    assert res[-1]["loss"] == pytest.approx(res[-1]["reference loss"], rel=1e-6)
    assert [r["most held"] for r in res] == PP.in_flight(PP.schedule(kind, world, 4))
    for r, ops in zip(res, PP.schedule(kind, world, 4)):
        assert [(k, i) for k, i, _, _ in r["timeline"]] == ops
        assert all(0 <= start <= end for _, _, start, end in r["timeline"])
    idle = PP.idle_fraction([r["timeline"] for r in res])       # each rank's clock starts at a common barrier
    assert idle == pytest.approx([PP.bubble_fraction(world, 4)] * world, abs=0.05)


def _gpipe(p, m):
    return PP.schedule("gpipe", p, m)


def test_the_op_hook_and_a_schedule_function_give_the_same_step():
    res = P.run(PP.run_pipeline, 2, _gpipe, 4, 8, 64, 8, 0.0, 0, PP.pipeline_op, backend="gloo")
    assert all(r["grad diff"] <= 1e-6 for r in res), [r["grad diff"] for r in res]
    assert res[-1]["loss"] == pytest.approx(res[-1]["reference loss"], rel=1e-6)
    assert [r["p2p bytes sent"] for r in res] == [4 * 8 * 64 * 4] * 2      # m activations out, m gradients back


@pytest.mark.parametrize("kind", PP.KINDS)
def test_torch_pipelining_equals_the_whole_model(kind):
    res = P.run(PP.run_torch_pipeline, 2, kind, 4, backend="gloo")
    assert all(r["grad diff"] <= 1e-6 for r in res), [r["grad diff"] for r in res]
    assert res[-1]["loss"] == pytest.approx(res[-1]["reference loss"], rel=1e-6)


@pytest.mark.parametrize("p, m", [(4, 4), (4, 8), (8, 8), (2, 6)])
def test_chimera_runs_every_op_once_in_order_and_idles_no_more_than_1f1b(p, m):
    tl = PP.chimera(p, m)
    half, seen = m // 2, {}
    for w, ops in enumerate(tl):
        assert len(ops) == 2 * m                                        # m forwards, m backwards per worker
        assert all(a[3] <= b[2] + 1e-12 for a, b in zip(ops, ops[1:])), "a worker runs one op at a time"
        stages = {}
        for k, i, start, end in ops:
            st = w if i < half else p - 1 - w
            stages.setdefault(i, set()).add(st)
            seen[(k, st, i)] = (start, end)
    assert len(seen) == 2 * p * m
    for (k, st, i), (start, _) in seen.items():                      # every dependency finished first
        dep = (("F", st - 1, i) if st > 0 else None) if k == "F" else (("B", st + 1, i) if st < p - 1 else ("F", st, i))
        assert dep is None or seen[dep][1] <= start + 1e-12
    assert max(PP.idle_fraction(tl)) <= PP.bubble_fraction(p, m) + 1e-9
    if p >= 4:
        assert max(PP.idle_fraction(tl)) < PP.bubble_fraction(p, m)    # the two directions fill each other's bubble
    with pytest.raises(ValueError, match="even"):
        PP.chimera(3, 4)


def test_dp_x_pp_on_4_ranks_equals_the_whole_model_and_sends_what_the_planner_predicts():
    m, layers, d, micro = 4, 8, 64, 8
    res = P.run(PP.run_dp_pp, 4, m, layers, d, micro, backend="gloo")
    assert all(r["grad diff"] <= 1e-6 for r in res), [r["grad diff"] for r in res]
    toy = PP.Model("MLP stack", sum(q.numel() for q in PP.mlp_stack(layers, d).parameters()), layers, d, 1, seq=1)
    predicted = PP.bytes_per_step(toy, dp=2, tp=1, pp=2, m=m, micro_batch=micro, wire_bytes=4)
    assert [r["p2p bytes sent"] for r in res] == [predicted["pp"]] * 4
    assert [r["all-reduce bytes"] for r in res] == [predicted["dp"]] * 4   # 2(dp-1)/dp = 1 for dp = 2: the payload


GPT3 = PP.Model("GPT-3 175B", 175e9, 96, 12288, 96, 2048)
H100S = PP.Cluster("64 nodes x 8 H100", 64, 8, 80e9, 989e12, 450e9, 50e9)


def test_planner_memory_traffic_and_time_by_hand():
    r = PP.plan(GPT3, H100S, dp=8, tp=8, pp=8, global_batch=1536)
    assert r["m"] == 192 and r["state memory"] == pytest.approx(16 * 175e9 / 64)
    act = 34 * 2048 * 12288 + 5 * 2048**2 * 96
    assert r["activation memory"] == pytest.approx(act * 12 * 8 / 8)           # 96/8 layers, 8 micro-batches held, / tp
    wire = 2048 * 12288 * 2
    assert r["tp bytes"] == pytest.approx(12 * 192 * 4 * 2 * 7 / 8 * wire)
    assert r["pp bytes"] == 192 * wire * 2 and r["dp bytes"] == pytest.approx(2 * 7 / 8 * 2 * 175e9 / 64)
    assert r["bubble"] == pytest.approx(7 / 199)
    compute = 6 * 175e9 * 1536 * 2048 / (512 * 989e12 * 0.6)
    assert r["compute s"] == pytest.approx(compute)
    assert r["step s"] == pytest.approx(compute * 199 / 192 + r["tp s"] + r["pp s"])   # DP hidden under the backward
    assert r["tp s"] == pytest.approx(r["tp bytes"] / 450e9) and r["pp s"] == pytest.approx(r["pp bytes"] / 50e9)
    zero1 = PP.plan(GPT3, H100S, 8, 8, 8, 1536, state_bytes=lambda dp: 4 + 12 / dp)
    assert zero1["state memory"] == pytest.approx((4 + 12 / 8) * 175e9 / 64)


def test_layouts_cover_the_cluster_fastest_fitting_first_and_bad_layouts_are_named():
    rows = PP.layouts(GPT3, H100S, 1536)
    assert all(r["dp"] * r["tp"] * r["pp"] == 512 and r["tp"] <= 8 for r in rows)
    fits = [r for r in rows if r["fits"]]
    assert fits and rows[:len(fits)] == fits
    assert [r["step s"] for r in fits] == sorted(r["step s"] for r in fits)
    assert not any(r["fits"] for r in rows if r["tp"] * r["pp"] == 1)         # 175 B params x 16 B on one GPU
    with pytest.raises(ValueError, match="512 GPUs"):
        PP.plan(GPT3, H100S, 4, 8, 8, 1536)
    with pytest.raises(ValueError, match="multiple"):
        PP.plan(GPT3, H100S, 8, 8, 8, 1540)

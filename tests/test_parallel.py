"""labkit.parallel: data parallel (by hand and DDP) and tensor parallel (by hand and DTensor) against
one process doing the whole job, on 2 gloo ranks; communication volume; top-k with error feedback.
The checks build CPU tensors, so they name the gloo backend: left to itself, run() picks NCCL on a
node with 2 GPUs."""
import pytest
import torch

from labkit import parallel as P


def test_data_parallel_by_hand_and_ddp_equal_one_big_batch():
    for r in P.run(P.check_data_parallel, 2, 5, backend="gloo"):
        assert r["parameters moved"] > 1e-3            # training did something...
        assert r["by hand vs reference"] < 1e-5        # ...and the split changed nothing
        assert r["ddp vs reference"] < 1e-5
        assert r["by hand vs ddp"] < 1e-5


def test_tensor_parallel_mlp_equals_the_whole_mlp_and_dtensor():
    for r in P.run(P.check_tensor_parallel, 2, backend="gloo"):
        for key in ("output", "input gradient", "fc1 weight gradient", "fc2 weight gradient", "DTensor output"):
            assert r[key] < 1e-5, (key, r[key])
        assert r["weights held"] == pytest.approx(0.5, abs=0.01)   # half the weights (biases of fc2 are whole)


def _boom():
    raise ZeroDivisionError("rank failure on purpose")


def test_run_reports_a_failing_rank_and_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        P.run(_boom, 2, backend="gloo")
    with pytest.raises(ValueError, match="world_size"):
        P.run(P.check_data_parallel, 0)
    with pytest.raises(ValueError, match="backend"):
        P.run(P.check_data_parallel, 2, backend="mpi")


def test_single_process_helpers():
    assert P.ring_allreduce_bytes(1000, 1) == 0
    assert P.ring_allreduce_bytes(1000, 2) == 1000
    assert P.ring_allreduce_bytes(1000, 8) == 1750
    x = torch.arange(12)
    assert torch.equal(torch.cat([P.shard(x, r, 3) for r in range(3)]), x)
    with pytest.raises(ValueError, match="split evenly"):
        P.shard(x, 0, 5)
    lin = torch.nn.Linear(6, 4)
    with pytest.raises(ValueError, match="multiple"):
        P.RowParallelLinear(lin, 0, 4)


def test_tensor_parallel_shards_sum_to_the_whole_without_communication():
    """The algebra under TensorParallelMLP, in one process: column shards concatenate, row shards add."""
    torch.manual_seed(0)
    mlp, x = P.MLP(16, 32), torch.randn(5, 16)
    parts = []
    for r in range(4):
        c, rw = P.ColumnParallelLinear(mlp.fc1, r, 4), P.RowParallelLinear(mlp.fc2, r, 4)
        parts.append(torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(
            x, c.weight, c.bias)), rw.weight))
    torch.testing.assert_close(sum(parts) + mlp.fc2.bias, mlp(x), atol=1e-5, rtol=1e-5)


def test_topk_error_feedback_loses_nothing():
    torch.manual_seed(0)
    grads = [torch.randn(100) for _ in range(20)]
    residual, sent = torch.zeros(100), torch.zeros(100)
    for g in grads:
        idx, values, residual = P.topk_compress(g, residual, 0.05)
        assert len(idx) == 5
        sent[idx] += values
    # everything ever computed was either sent or is still waiting in the residual
    torch.testing.assert_close(sent + residual, sum(grads), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="ratio"):
        P.topk_compress(grads[0], residual, 0.0)


def _topk_gathers():
    import torch.distributed as dist
    seen, real = [], dist.all_gather
    dist.all_gather = lambda outs, t: (seen.append((t.dtype, t.element_size())), real(outs, t))[1]
    g = torch.randn(100) * (dist.get_rank() + 1)
    avg, _, sent = P.topk_all_reduce(g, torch.zeros(100), 0.1)
    dist.all_gather = real
    return seen, sent, avg


def test_topk_all_reduce_sends_8_bytes_per_pair_and_counts_what_it_sends():
    for seen, sent, avg in P.run(_topk_gathers, 2, backend="gloo"):
        assert seen == [(torch.int32, 4), (torch.float32, 4)]   # index and value: 8 bytes a pair
        assert sent == 1 * 10 * 8                                # to the one other rank, 10 pairs
        assert int((avg != 0).sum()) <= 20


def test_topk_training_on_two_ranks_learns_and_sends_less():
    res = P.run(P.train_topk, 2, (1.0, 0.05), 60, backend="gloo")
    assert res[0][1.0]["test_accuracy"] == res[1][1.0]["test_accuracy"]       # replicas stay identical
    dense, sparse = res[0][1.0], res[0][0.05]
    assert dense["test_accuracy"] > 0.6 and sparse["test_accuracy"] > 0.5       # 10 classes: chance is 0.1
    assert sparse["sent_bytes_per_step"] < 0.15 * dense["sent_bytes_per_step"]


@pytest.mark.integration
def test_train_ddp_script_under_torchrun(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "ddp.json"
    p = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2",
                        "scripts/train_ddp.py", "--steps", "3", "--batch", "2", "--out", str(out)],
                       cwd=repo, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rec = json.loads(out.read_text())
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"  # what train_ddp.py picks, rightly
    assert rec["world_size"] == 2 and rec["backend"] == backend and rec["global_batch_windows"] == 4
    assert rec["tokens_per_s"] > 0 and rec["command"].startswith("torchrun --nnodes=1 --nproc_per_node=2")
    assert subprocess.run(["bash", "-n", "scripts/train_ddp.sbatch"], cwd=repo).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs 2 GPUs")
def test_nccl_all_reduce_and_data_parallel_step():
    rows = P.run(P.time_all_reduce, 2, (2**20, 2**24), backend="nccl")[0]
    assert all(r["seconds"] > 0 and r["bus_bytes_per_s"] > 1e9 for r in rows)   # NVLink/PCIe: GB/s at least
    step = P.run(P.time_dp_step, 2, 256, 1024, (512,), 3, backend="nccl")
    assert all(r[0]["comm_s"] > 0 for r in step)


def _typed_in(source: str, name: str):
    """A function as a notebook cell defines it: module __main__, its source only in linecache."""
    import linecache
    filename = f"<cell {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), ns)
    return ns[name]


ASSIGN = '''
def assign(sizes, cap):
    buckets, open_, held = [], [], 0
    for i in reversed(range(len(sizes))):
        open_.append(i)
        held += sizes[i]
        if held >= cap:
            buckets.append(open_)
            open_, held = [], 0
    return buckets + ([open_] if open_ else [])
'''
ATTACH = '''
def attach(model, buckets):
    params = list(model.parameters())
    where = {i: b for b, bucket in enumerate(buckets) for i in bucket}
    ready, pending = [0] * len(buckets), []

    def hook(i):
        def on_grad(param):
            b = where[i]
            ready[b] += 1
            if ready[b] == len(buckets[b]):
                flat = torch.cat([params[j].grad.flatten() for j in buckets[b]])
                pending.append((dist.all_reduce(flat, async_op=True), flat, buckets[b]))
        return on_grad
    for i, p in enumerate(params):
        p.register_post_accumulate_grad_hook(hook(i))

    def finish():
        for work, flat, bucket in pending:
            work.wait()
            flat /= dist.get_world_size()
            offset = 0
            for j in bucket:
                n = params[j].numel()
                params[j].grad.copy_(flat[offset:offset + n].view_as(params[j].grad))
                offset += n
        pending.clear()
        ready[:] = [0] * len(ready)
    return finish
'''


def test_bucket_assignment_is_the_one_ddp_rebuilds_in_backward_order():
    import torch.distributed as dist
    assign = _typed_in(ASSIGN, "assign")
    for seed in range(5):
        sizes = (torch.randint(1, 50, (int(torch.randint(1, 20, ()).item()),), generator=torch.Generator().manual_seed(seed)) * 4).tolist()
        cap = 4 * int(torch.randint(1, 80, (), generator=torch.Generator().manual_seed(seed + 9)))
        theirs, _ = dist._compute_bucket_assignment_by_size([torch.empty(n // 4) for n in reversed(sizes)], [cap])
        assert assign(sizes, cap) == [[len(sizes) - 1 - j for j in b] for b in theirs]


def test_notebook_functions_travel_as_source_and_a_bucketed_ddp_equals_torch_ddp():
    assign, attach = _typed_in(ASSIGN, "assign"), _typed_in(ATTACH, "attach")
    res = P.run(P.check_bucketed_ddp, 2, attach, assign, 2**14, backend="gloo")
    for r in res:
        assert r["vs one process"] < 1e-6 and r["vs torch DDP"] < 1e-6, r
        assert r["all-reduces per step"] == len(r["buckets"]) > 1
        assert r["started during backward"] == len(r["buckets"])   # every bucket left before backward() returned
    late = _typed_in(ATTACH.replace("def finish():", "def finish():\n        pending.clear()  # never all-reduced\n        return\n"), "attach")
    res = P.run(P.check_bucketed_ddp, 2, late, assign, 2**14, backend="gloo")
    assert res[0]["vs one process"] > 1e-4                         # the check sees unaveraged gradients
    rows = P.run(P.time_bucketed_step, 2, attach, assign, (0, 2**30), 4, 64, 16, 3, backend="gloo")[0]
    assert [r["buckets"] for r in rows] == [8, 1, None] and all(r["seconds"] > 0 for r in rows)
    no_source = {"__name__": "__main__"}
    exec("def g():\n    return 1\n", no_source)               # typed in, but no cell holds its source
    with pytest.raises(ValueError, match="source cannot be read"):
        P.run(no_source["g"], 2, backend="gloo")

"""Pipeline parallelism: a model cut into stages, one per rank, fed micro-batches.

Stage s holds a contiguous slice of the layers. A micro-batch's forward pass goes 0 → 1 → … →
p−1, its backward pass back again, and a stage is idle whenever it waits for a neighbour: the
**bubble**. With m micro-batches and every forward (and every backward) taking the same time on
every stage, both schedules below leave each stage idle a share (p − 1)/(m + p − 1) of the step
(GPipe, Huang et al., 2019); 1F1B (PipeDream-Flush, Narayanan et al., 2021) has the same bubble
but starts backward passes early, so a stage holds at most p − s micro-batches' activations
instead of all m.

    schedule(kind, p, m)          the ordered ops ("F" or "B", micro-batch) of every stage
    bubble_fraction(p, m)         (p − 1) / (m + p − 1)
    simulate(ops, t_f, t_b)       start and end of every op, each waiting for its neighbour
    idle_fraction(timeline)       per stage, the share of the step spent waiting (simulated or measured)
    draw(timeline)                the timeline as bars, stages × time
    in_flight(ops)                the most micro-batches whose activations a stage holds at once
    run_pipeline(kind, m, ...)    on ranks (labkit.parallel.run): an MLP cut into p stages, trained
                                  one step with point-to-point sends; its loss and gradients against
                                  the whole model in one process, and a timeline of every op
                                  (measured on 2 and 4 gloo ranks with ops padded to 20 / 40 ms: the
                                  idle share is the formula's within 0.02)
    run_torch_pipeline(kind, m)   the same step through torch.distributed.pipelining (PipelineStage,
                                  ScheduleGPipe / Schedule1F1B), against the same reference
    chimera(p, m, t_f, t_b)       Chimera's two pipelines in opposite directions on the same p workers,
                                  list-scheduled: the timeline, to compare with 1F1B's bubble
    run_dp_pp(m, ...)             4 ranks as 2 pipelines of 2 stages, gradients all-reduced between the
                                  pipelines: equal to the whole model, and the bytes each rank sent
    memory_per_gpu, bytes_per_step
    Model, Cluster, plan(...)     3-D planning: for data × tensor × pipeline parallel degrees, memory
    layouts(...)                  per GPU, bytes per GPU per step in each dimension, the bubble, and a
                                  predicted step time and MFU (every assumption a named argument)
"""
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import gelu_stack

KINDS = ("gpipe", "1f1b")


def schedule(kind: str, p: int, m: int) -> list[list[tuple[str, int]]]:
    """ops[s]: stage s's ops in the order it runs them. GPipe: every forward, then every backward.
    1F1B: p − s − 1 forwards to fill the pipeline, then one forward and one backward in turn,
    then the remaining backwards."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for name, v in (("p", p), ("m", m)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    ops = []
    for s in range(p):
        if kind == "gpipe":
            ops.append([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
            continue
        warm = min(p - s - 1, m)
        stage = [("F", i) for i in range(warm)]
        f, b = warm, 0
        while f < m:
            stage += [("F", f), ("B", b)]
            f, b = f + 1, b + 1
        stage += [("B", i) for i in range(b, m)]
        ops.append(stage)
    return ops


def bubble_fraction(p: int, m: int) -> float:
    """The share of a step each stage is idle, for equal op times on every stage."""
    return (p - 1) / (m + p - 1)


def simulate(ops, t_f: float = 1.0, t_b: float = 2.0) -> list[list[tuple[str, int, float, float]]]:
    """(op, micro-batch, start, end) of every op of every stage, run in the given order: a forward
    waits for the same micro-batch's forward on the stage before, a backward for its backward on
    the stage after (the last stage: for its own forward). Communication takes no time."""
    p = len(ops)
    done, timeline, nxt, free = {}, [[] for _ in range(p)], [0] * p, [0.0] * p
    while any(nxt[s] < len(ops[s]) for s in range(p)):
        moved = False
        for s in range(p):
            if nxt[s] == len(ops[s]):
                continue
            kind, i = ops[s][nxt[s]]
            dep = (("F", s - 1, i) if s > 0 else None) if kind == "F" else (("B", s + 1, i) if s < p - 1 else ("F", s, i))
            if dep is not None and dep not in done:
                continue
            start = max(free[s], done[dep] if dep else 0.0)
            end = start + (t_f if kind == "F" else t_b)
            done[(kind, s, i)], free[s] = end, end
            timeline[s].append((kind, i, start, end))
            nxt[s] += 1
            moved = True
        if not moved:
            raise ValueError("the schedule deadlocks: some stage waits for an op that never runs")
    return timeline


def idle_fraction(timeline) -> list[float]:
    """Per stage: the share of the step (first start to last end, over all stages) not spent in an op."""
    t0 = min(ev[2] for stage in timeline for ev in stage)
    t1 = max(ev[3] for stage in timeline for ev in stage)
    return [1 - sum(end - start for _, _, start, end in stage) / (t1 - t0) for stage in timeline]


def in_flight(ops) -> list[int]:
    """Per stage: the most micro-batches forwarded and not yet backwarded at once (whose
    activations the stage must hold)."""
    out = []
    for stage in ops:
        live = most = 0
        for kind, _ in stage:
            live += 1 if kind == "F" else -1
            most = max(most, live)
        out.append(most)
    return out


# ---------------------------------------------------------------- on ranks


def mlp_stack(layers: int = 8, d: int = 64, seed: int = 0) -> nn.Sequential:
    """The model the pipeline cuts (layers divisible by p): layers.gelu_stack, seeded."""
    torch.manual_seed(seed)
    return gelu_stack(layers, d)


def run_pipeline(kind="1f1b", m: int = 4, layers: int = 8, d: int = 64, micro: int = 8,
                 op_s: float = 0.0, seed: int = 0, op=None) -> dict:
    """On every rank (stage s of p = world size): one training step of mlp_stack(layers, d) cut into
    p equal stages, `m` micro-batches of `micro` rows, the loss a mean squared error averaged over
    the micro-batches. Activations go forward and gradients back with dist.isend / dist.recv in
    the order schedule(kind, p, m) gives. `op_s` > 0 pads every forward to op_s seconds and every
    backward to 2·op_s with a sleep: ops long against the messages, and a timeline the schedule
    decides even with more ranks than cores (a sleeping rank leaves its core to the others; a
    stand-in for compute, said wherever it is used). Returns this
    stage's largest gradient difference against the whole model run in one process, the loss (last
    stage), the timeline (op, micro-batch, start, end in seconds from a common start) and the most
    micro-batches it held at once.

    kind: "gpipe", "1f1b" or a function (p, m) -> ops in the form schedule() returns. op: a
    function run for every op instead of the built-in one (see pipeline_op); its time on the
    timeline then includes its waits for neighbours."""
    p, s, stage, x_all, y_all = _my_stage(layers, d, m, micro, seed)
    ops = kind(p, m) if callable(kind) else schedule(kind, p, m)
    out = _pipeline_pass(stage, ops[s], x_all, y_all, m, micro, d, s, p, s - 1, s + 1, op_s, op)
    out["grad diff"], out["reference loss"] = _against_whole(stage, layers, d, seed, x_all, y_all)
    return out


def _my_stage(layers, d, m, micro, seed):
    """This rank's slice of mlp_stack(layers, d) and the whole step's inputs and targets (every
    rank draws the same): (p, s, stage, x_all, y_all)."""
    import torch.distributed as dist
    p, s = dist.get_world_size(), dist.get_rank()
    if layers % p:
        raise ValueError(f"layers ({layers}) must divide evenly into {p} stages")
    per = layers // p
    g = torch.Generator().manual_seed(seed + 1)
    x_all, y_all = torch.randn(m * micro, d, generator=g), torch.randn(m * micro, d, generator=g)
    return p, s, mlp_stack(layers, d, seed)[s * per:(s + 1) * per], x_all, y_all


def _against_whole(stage, layers, d, seed, x_all, y_all):
    """The whole model run in one process on the whole batch (the reference): the largest difference
    between stage's gradients and the same layers' there, and the reference loss."""
    import torch.distributed as dist
    per = layers // dist.get_world_size()
    ref = mlp_stack(layers, d, seed)
    loss = F.mse_loss(ref(x_all), y_all)
    loss.backward()
    s = dist.get_rank()
    theirs = [q.grad for q in ref[s * per:(s + 1) * per].parameters()]
    return max((a.grad - b).abs().max().item() for a, b in zip(stage.parameters(), theirs)), loss.item()


def pipeline_op(kind, i, stage, held, x, y, m, prev, nxt):
    """One op of a pipeline stage, the way run_pipeline does it: a forward ("F") receives its input
    from rank `prev` (None on the first stage, which takes x), runs the stage and sends the output to
    `nxt` (None on the last stage, which computes the loss against y, divided by m); a backward ("B")
    receives the output's gradient from `nxt` (the last stage starts from its loss), runs backward
    and sends the input's gradient to `prev`. held[i] keeps (input, output) from F to B. Returns the
    send requests it started (to wait on before the step ends)."""
    import torch.distributed as dist
    if kind == "F":
        if prev is None:
            inp = x
        else:
            inp = torch.empty_like(x)
            dist.recv(inp, src=prev)
            inp.requires_grad_()
        out = stage(inp)
        if nxt is None:
            out = F.mse_loss(out, y) / m
        held[i] = (inp, out)
        return [] if nxt is None else [dist.isend(out.detach().contiguous(), dst=nxt)]
    inp, out = held.pop(i)
    if nxt is None:
        out.backward()
    else:
        grad = torch.empty_like(out)
        dist.recv(grad, src=nxt)
        out.backward(grad)
    return [] if prev is None else [dist.isend(inp.grad.contiguous(), dst=prev)]


def _pipeline_pass(stage, ops, x_all, y_all, m, micro, d, s, p, prev, nxt, op_s, op):
    """This rank's ops of one pipelined step (stage s of p; neighbours: global ranks prev, nxt)."""
    import torch.distributed as dist

    def pad(start, seconds):
        rest = seconds - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)

    for _ in range(2):    # warm-up: a process's first backward from a given gradient costs ~0.3 s once
        out = stage(torch.randn(micro, d, requires_grad=s > 0))   # as the real ops: stage 0 has no input grad
        out.backward(torch.randn_like(out))
    stage.zero_grad()
    held, most, sends, timeline, losses, sent = {}, 0, [], [], [], 0
    prev, nxt = (prev if s > 0 else None), (nxt if s < p - 1 else None)
    dist.barrier()
    t0 = time.perf_counter()
    for kind, i in ops:
        batch = slice(i * micro, (i + 1) * micro)
        if op is not None:
            start = time.perf_counter()
            reqs = op(kind, i, stage, held, x_all[batch], y_all[batch], m, prev, nxt)
            sends += reqs or []
            sent += (micro * d * 4) if ((kind == "F" and nxt is not None) or (kind == "B" and prev is not None)) else 0
            if kind == "F" and nxt is None:
                losses.append(held[i][1].item())
            most = max(most, len(held))
            timeline.append((kind, i, start - t0, time.perf_counter() - t0))
            continue
        if kind == "F":
            if prev is None:
                x = x_all[batch]
            else:
                x = torch.empty(micro, d)
                dist.recv(x, src=prev)
                x.requires_grad_()
            start = time.perf_counter()
            y = stage(x)
            pad(start, op_s)
            end = time.perf_counter()                          # the op's own time: waits and sends left out
            if nxt is not None:
                sends.append(dist.isend(y.detach().contiguous(), dst=nxt))
                sent += y.numel() * y.element_size()
            else:
                y = F.mse_loss(y, y_all[batch]) / m
                losses.append(y.item())
            held[i] = (x, y)
            most = max(most, len(held))
        else:
            x, y = held.pop(i)
            if nxt is None:
                start = time.perf_counter()
                y.backward()
            else:
                grad = torch.empty(micro, d)
                dist.recv(grad, src=nxt)
                start = time.perf_counter()
                y.backward(grad)
            pad(start, 2 * op_s)
            end = time.perf_counter()
            if prev is not None:
                sends.append(dist.isend(x.grad.contiguous(), dst=prev))
                sent += x.grad.numel() * x.grad.element_size()
        timeline.append((kind, i, start - t0, end - t0))
    for req in sends:
        req.wait()
    dist.barrier()                                            # no rank's wrap-up competes with another's ops
    return {"loss": sum(losses) if losses else None, "timeline": timeline, "most held": most, "p2p bytes sent": sent}


def run_torch_pipeline(kind: str = "1f1b", m: int = 4, layers: int = 8, d: int = 64, micro: int = 8,
                       seed: int = 0) -> dict:
    """run_pipeline's step through PyTorch's own pipelining: this rank's slice of the same model in a
    torch.distributed.pipelining.PipelineStage, driven by ScheduleGPipe or Schedule1F1B. PyTorch
    divides the summed micro-batch gradients by m itself, so the loss function is the plain mean
    squared error. One warm-up step runs first (its gradients are cleared). Returns this stage's
    largest gradient difference against the whole model in one process, the loss (last stage), the
    step's wall time and the reference loss."""
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p, s, mine, x_all, y_all = _my_stage(layers, d, m, micro, seed)
    stage = PipelineStage(mine, s, p, torch.device("cpu"))
    sched = (ScheduleGPipe if kind == "gpipe" else Schedule1F1B)(stage, n_microbatches=m, loss_fn=F.mse_loss)

    def step(losses):
        if s == 0:
            sched.step(x_all)
        elif s == p - 1:
            sched.step(target=y_all, losses=losses)
        else:
            sched.step()

    step([])                      # warm-up (buffers, the first backward), then a clean step
    mine.zero_grad()
    losses = []
    dist.barrier()
    t0 = time.perf_counter()
    step(losses)
    seconds = time.perf_counter() - t0
    diff, ref_loss = _against_whole(mine, layers, d, seed, x_all, y_all)
    return {"grad diff": diff, "loss": sum(v.item() for v in losses) / m if losses else None, "seconds": seconds,
            "reference loss": ref_loss}


def chimera(p: int, m: int, t_f: float = 1.0, t_b: float = 2.0) -> list[list[tuple[str, int, float, float]]]:
    """Chimera (Li & Hoefler, SC'21): two pipelines over the same p workers in opposite directions:
    "down" puts stage s on worker s, "up" puts stage s on worker p−1−s, and each takes half of the m
    micro-batches (micro-batches ≥ m/2 go up). Every worker so holds two stages (twice the weights)
    and the fill of one pipeline runs in the other's drain. The ops are list-scheduled, a simple
    stand-in for the paper's hand-built schedule (so its bubble is an upper bound on Chimera's): the
    op that can start soonest runs first; among equals, the one with the longest path of ops still
    after it (forwards at early stages), then the lowest micro-batch. Returns the timeline in
    simulate()'s form, one list per worker."""
    if not isinstance(p, int) or p < 2 or p % 2:
        raise ValueError(f"p must be an even int >= 2, got {p!r}")
    if not isinstance(m, int) or m < 2 or m % 2:
        raise ValueError(f"m must be an even int >= 2 (half the micro-batches per direction), got {m!r}")
    half = m // 2
    worker = lambda i, st: st if i < half else p - 1 - st           # micro-batch i's stage st runs here
    todo = {(k, st, i) for i in range(m) for st in range(p) for k in "FB"}
    done, free, timeline = {}, [0.0] * p, [[] for _ in range(p)]

    def ready_at(op):
        k, st, i = op
        dep = (("F", st - 1, i) if st > 0 else None) if k == "F" else (("B", st + 1, i) if st < p - 1 else ("F", st, i))
        if dep is not None and dep not in done:
            return None
        return max(free[worker(i, st)], done[dep] if dep else 0.0)

    def after(op):    # the ops still to run on this micro-batch's path once op is done
        k, st, _ = op
        return (p - 1 - st) * t_f + p * t_b if k == "F" else st * t_b

    while todo:
        cands = [(t, -after(o), o[2], o) for o in todo if (t := ready_at(o)) is not None]
        t, _, _, op = min(cands)
        k, st, i = op
        w = worker(i, st)
        end = t + (t_f if k == "F" else t_b)
        done[op], free[w] = end, end
        timeline[w].append((k, i, t, end))
        todo.remove(op)
    return [sorted(ev, key=lambda e: e[2]) for ev in timeline]


def run_dp_pp(m: int = 4, layers: int = 8, d: int = 64, micro: int = 8, seed: int = 0) -> dict:
    """2-D parallelism on 4 ranks: data parallel × pipeline parallel, 2 × 2. Rank r is stage r % 2 of
    pipeline r // 2; each pipeline runs 1F1B on its half of the global batch (m micro-batches of
    `micro` rows each), then each stage all-reduces its gradients with the same stage of the other
    pipeline (a process group per stage) and averages them. Returns this rank's largest gradient
    difference against the whole model on the whole batch in one process, and the bytes it sent
    point to point and handed to the all-reduce."""
    import torch.distributed as dist
    if dist.get_world_size() != 4:
        raise ValueError(f"run_dp_pp needs 4 ranks (2 pipelines of 2 stages), got {dist.get_world_size()}")
    r = dist.get_rank()
    s, pipe, per = r % 2, r // 2, layers // 2
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]   # every rank creates every group, in order
    stage = mlp_stack(layers, d, seed)[s * per:(s + 1) * per]
    g = torch.Generator().manual_seed(seed + 1)
    x_all, y_all = torch.randn(2 * m * micro, d, generator=g), torch.randn(2 * m * micro, d, generator=g)
    mine = slice(pipe * m * micro, (pipe + 1) * m * micro)
    out = _pipeline_pass(stage, schedule("1f1b", 2, m)[s], x_all[mine], y_all[mine], m, micro, d, s, 2,
                         r - 1, r + 1, 0.0, None)
    flat = torch.cat([q.grad.flatten() for q in stage.parameters()])
    dist.all_reduce(flat, group=groups[s])
    flat /= 2
    ref = mlp_stack(layers, d, seed)
    F.mse_loss(ref(x_all), y_all).backward()
    theirs = torch.cat([q.grad.flatten() for q in ref[s * per:(s + 1) * per].parameters()])
    return {"stage": s, "pipeline": pipe, "grad diff": (flat - theirs).abs().max().item(),
            "p2p bytes sent": out["p2p bytes sent"], "all-reduce bytes": flat.numel() * flat.element_size(),
            "stage parameters": flat.numel()}


def draw(timeline, ax=None, title=None, t_unit: float = 1.0, unit: str = "time units", labels=None):
    """A pipeline's timeline as bars: one row per stage (or worker), forwards light and backwards
    dark, each labelled with its micro-batch. timeline: simulate()'s or run_pipeline's form. t_unit
    divides the times (1e-3 for ms). labels: micro-batch → text, e.g. to tell Chimera's directions
    apart. Returns the Axes."""
    import matplotlib.pyplot as plt
    from .plots import COLORS
    ax = ax or plt.subplots(figsize=(8, 0.5 + 0.45 * len(timeline)))[1]
    for s, ops in enumerate(timeline):
        for k, i, start, end in ops:
            ax.barh(s, (end - start) / t_unit, left=start / t_unit, height=0.8, edgecolor="white",
                    color=COLORS[0] if k == "F" else COLORS[1], alpha=0.55 if k == "F" else 0.9)
            ax.text((start + end) / 2 / t_unit, s, labels(i) if labels else str(i), ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(timeline)), [f"stage {s}" for s in range(len(timeline))])
    ax.invert_yaxis()
    ax.set_xlabel(f"time [{unit}]")
    ax.set_title(title or "pipeline timeline (light: forward, dark: backward)")
    ax.grid(False)
    return ax


# ---------------------------------------------------------------- 3-D planning


@dataclass
class Model:
    """A decoder-only transformer, as the planner needs it."""
    name: str
    params: float          # parameters
    layers: int
    hidden: int
    heads: int
    seq: int               # tokens per sequence in training


@dataclass
class Cluster:
    """GPUs and their links. Bandwidths are per GPU, one direction, as a collective sees them."""
    name: str
    nodes: int
    gpus_per_node: int
    gpu_memory: float      # bytes
    peak_flops: float      # dense 16-bit FLOP/s per GPU
    intra_bw: float        # bytes/s per GPU inside a node (NVLink)
    inter_bw: float        # bytes/s per GPU between nodes (InfiniBand)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def memory_per_gpu(model: Model, dp: int, tp: int, pp: int, m: int, micro_batch: int = 1,
                   state_bytes=lambda dp: 16.0, act_bytes=None) -> dict:
    """Bytes one GPU holds: state_bytes(dp) per parameter (default 16: mixed-precision Adam, nothing
    sharded; pass the memory lab's ZeRO formula to shard) over the tp · pp GPUs that share one model
    copy; plus the activations of the micro-batches stage 0 holds under 1F1B, min(pp, m), each
    act_bytes(micro_batch, seq) per layer (default 34·b·s·h + 5·b·s²·a: Korthikanti et al. 2022,
    16-bit, no recomputation) for its layers/pp layers, all of it split over tp: that assumes
    sequence parallelism (tensor parallelism alone leaves the 10·b·s·h of LayerNorms and dropouts
    on every GPU)."""
    b, s = micro_batch, model.seq
    act = act_bytes(b, s) if act_bytes else 34 * b * s * model.hidden + 5 * b * s * s * model.heads
    states = state_bytes(dp) * model.params / (tp * pp)
    activations = act * math.ceil(model.layers / pp) * min(pp, m) / tp
    return {"states": states, "activations": activations, "total": states + activations}


def bytes_per_step(model: Model, dp: int, tp: int, pp: int, m: int, micro_batch: int = 1,
                   wire_bytes: int = 2) -> dict:
    """Bytes one GPU sends per training step in each dimension (the busiest GPU of each):
    tp: 4 all-reduces (2 forward, 2 backward) per layer it holds and micro-batch, of b·s·h values,
       a ring sending 2(tp−1)/tp of each;
    pp: per micro-batch, one activation forward and one gradient back, b·s·h values each; an inner
       stage sends both, the first and the last stage one (so with pp = 2, one per micro-batch);
    dp: one ring all-reduce of its gradients, params/(tp·pp) values, sending 2(dp−1)/dp of them.
    wire_bytes: bytes per value (2: 16-bit)."""
    wire = micro_batch * model.seq * model.hidden * wire_bytes
    return {"tp": math.ceil(model.layers / pp) * m * 4 * 2 * (tp - 1) / tp * wire,
            "pp": 0 if pp == 1 else m * wire * (1 if pp == 2 else 2),
            "dp": 2 * (dp - 1) / dp * wire_bytes * model.params / (tp * pp)}


def plan(model: Model, cluster: Cluster, dp: int, tp: int, pp: int, global_batch: int, micro_batch: int = 1,
         state_bytes=lambda dp: 16.0, act_bytes=None, efficiency: float = 0.6, overlap_dp: bool = True,
         wire_bytes: int = 2) -> dict:
    """One layout: dp × tp × pp GPUs (tensor parallel innermost, inside a node; then pipeline; then
    data parallel), 1F1B with m = global_batch / (dp · micro_batch) micro-batches; memory from
    memory_per_gpu, traffic from bytes_per_step. A dimension runs on NVLink while the GPUs it spans
    fit in a node, else on the inter-node links.

    Time: compute = 6 · params · tokens / (GPUs · peak · efficiency), stretched by the bubble to
    compute · (m + pp − 1) / m; TP and PP traffic add to it (not overlapped); DP traffic overlaps the
    backward pass (two thirds of the compute) when overlap_dp, and only what sticks out counts.
    MFU = 6 · params · tokens / (step time · GPUs · peak)."""
    for name, v in (("dp", dp), ("tp", tp), ("pp", pp), ("global_batch", global_batch), ("micro_batch", micro_batch)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if dp * tp * pp != cluster.gpus:
        raise ValueError(f"dp × tp × pp = {dp * tp * pp}, but {cluster.name} has {cluster.gpus} GPUs")
    if global_batch % (dp * micro_batch):
        raise ValueError(f"global_batch {global_batch} is not a multiple of dp × micro_batch = {dp * micro_batch}")
    m = global_batch // (dp * micro_batch)
    mem = memory_per_gpu(model, dp, tp, pp, m, micro_batch, state_bytes, act_bytes)
    sent = bytes_per_step(model, dp, tp, pp, m, micro_batch, wire_bytes)
    link = lambda span: cluster.intra_bw if span <= cluster.gpus_per_node else cluster.inter_bw
    tokens = global_batch * model.seq
    compute = 6 * model.params * tokens / (cluster.gpus * cluster.peak_flops * efficiency)
    t_tp, t_pp, t_dp = sent["tp"] / link(tp), sent["pp"] / link(tp * pp), sent["dp"] / link(tp * pp * dp)
    exposed_dp = max(0.0, t_dp - 2 / 3 * compute) if overlap_dp else t_dp
    step = compute * (m + pp - 1) / m + t_tp + t_pp + exposed_dp
    return {"dp": dp, "tp": tp, "pp": pp, "m": m, "memory": mem["total"], "state memory": mem["states"],
            "activation memory": mem["activations"], "fits": mem["total"] <= cluster.gpu_memory,
            "tp bytes": sent["tp"], "pp bytes": sent["pp"], "dp bytes": sent["dp"], "bubble": bubble_fraction(pp, m),
            "compute s": compute, "tp s": t_tp, "pp s": t_pp, "dp s": t_dp, "step s": step,
            "mfu": 6 * model.params * tokens / (step * cluster.gpus * cluster.peak_flops)}


def layouts(model: Model, cluster: Cluster, global_batch: int, micro_batch: int = 1, **kw) -> list[dict]:
    """plan() for every dp × tp × pp = GPUs with tp a power of two within a node dividing the heads,
    pp ≤ 64 and at most the layer count (a stage takes ceil(layers/pp) layers), and dp · micro_batch
    dividing the global batch; fastest first, layouts that do not fit in memory last."""
    out = []
    for tp in (t for t in (1, 2, 4, 8, 16) if t <= cluster.gpus_per_node and model.heads % t == 0):
        for pp in range(1, min(64, model.layers) + 1):
            if cluster.gpus % (tp * pp):
                continue
            dp = cluster.gpus // (tp * pp)
            if global_batch % (dp * micro_batch):
                continue
            out.append(plan(model, cluster, dp, tp, pp, global_batch, micro_batch, **kw))
    return sorted(out, key=lambda r: (not r["fits"], r["step s"]))

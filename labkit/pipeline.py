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
    in_flight(ops)                the most micro-batches whose activations a stage holds at once
    run_pipeline(kind, m, ...)    on ranks (labkit.parallel.run): an MLP cut into p stages, trained
                                  one step with point-to-point sends; its loss and gradients against
                                  the whole model in one process, and a timeline of every op
                                  (measured on 2 and 4 gloo ranks with ops padded to 20 / 40 ms: the
                                  idle share is the formula's within 0.02)
"""
import time

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


def run_pipeline(kind: str = "1f1b", m: int = 4, layers: int = 8, d: int = 64, micro: int = 8,
                 op_s: float = 0.0, seed: int = 0) -> dict:
    """On every rank (stage s of p = world size): one training step of mlp_stack(layers, d) cut into
    p equal stages, `m` micro-batches of `micro` rows, the loss a mean squared error averaged over
    the micro-batches. Activations go forward and gradients back with dist.isend / dist.recv in
    the order schedule(kind, p, m) gives. `op_s` > 0 pads every forward to op_s seconds and every
    backward to 2·op_s with a sleep: ops long against the messages, and a timeline the schedule
    decides even with more ranks than cores (a sleeping rank leaves its core to the others; a
    stand-in for compute, said wherever it is used). Returns this
    stage's largest gradient difference against the whole model run in one process, the loss (last
    stage), the timeline (op, micro-batch, start, end in seconds from a common start) and the most
    micro-batches it held at once."""
    import torch.distributed as dist
    p, s = dist.get_world_size(), dist.get_rank()
    if layers % p:
        raise ValueError(f"layers ({layers}) must divide evenly into {p} stages")
    whole = mlp_stack(layers, d, seed)
    per = layers // p
    stage = whole[s * per:(s + 1) * per]
    g = torch.Generator().manual_seed(seed + 1)
    x_all, y_all = torch.randn(m * micro, d, generator=g), torch.randn(m * micro, d, generator=g)
    ref = mlp_stack(layers, d, seed)
    F.mse_loss(ref(x_all), y_all).backward()                  # the whole model, one process: the reference

    def pad(start, seconds):
        rest = seconds - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)

    for _ in range(2):    # warm-up: a process's first backward from a given gradient costs ~0.3 s once
        out = stage(torch.randn(micro, d, requires_grad=s > 0))   # as the real ops: stage 0 has no input grad
        out.backward(torch.randn_like(out))
    stage.zero_grad()
    held, most, sends, timeline, losses = {}, 0, [], [], []
    dist.barrier()
    t0 = time.perf_counter()
    for kind, i in schedule(kind, p, m)[s]:
        if kind == "F":
            if s == 0:
                x = x_all[i * micro:(i + 1) * micro]
            else:
                x = torch.empty(micro, d)
                dist.recv(x, src=s - 1)
                x.requires_grad_()
            start = time.perf_counter()
            y = stage(x)
            pad(start, op_s)
            end = time.perf_counter()                          # the op's own time: waits and sends left out
            if s < p - 1:
                sends.append(dist.isend(y.detach().contiguous(), dst=s + 1))
            else:
                y = F.mse_loss(y, y_all[i * micro:(i + 1) * micro]) / m
                losses.append(y.item())
            held[i] = (x, y)
            most = max(most, len(held))
        else:
            x, y = held.pop(i)
            if s == p - 1:
                start = time.perf_counter()
                y.backward()
            else:
                grad = torch.empty(micro, d)
                dist.recv(grad, src=s + 1)
                start = time.perf_counter()
                y.backward(grad)
            pad(start, 2 * op_s)
            end = time.perf_counter()
            if s > 0:
                sends.append(dist.isend(x.grad.contiguous(), dst=s - 1))
        timeline.append((kind, i, start - t0, end - t0))
    for req in sends:
        req.wait()
    dist.barrier()                                            # no rank's wrap-up competes with another's ops
    theirs = [q.grad for q in ref[s * per:(s + 1) * per].parameters()]
    diff = max((a.grad - b).abs().max().item() for a, b in zip(stage.parameters(), theirs))
    return {"grad diff": diff, "loss": sum(losses) if losses else None, "timeline": timeline, "most held": most,
            "reference loss": F.mse_loss(ref(x_all), y_all).item()}

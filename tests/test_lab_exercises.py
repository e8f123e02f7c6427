"""Each lab's visible tests catch the core mistake of each exercise.

For every exercise listed here, a plausible wrong solution (the ignored argument, the missing
synchronisation, the double-counted time) must fail the *visible* asserts of its test cell, the
ones a student runs before handing in, with an AssertionError (a message saying what is wrong),
while the instructor's solution passes the same asserts in the same namespace. Hidden tests are
not run here: nbval runs them on the instructor source, and test_grading on hand-ins.

The namespace is the lab's own: its parameters and set-up cells (the code cells before its first
exercise) run once per lab; each case then runs the instructor's solutions of the exercises before
(later exercises build on earlier ones), the solution under test and the visible part of its test cell.
"""
import nbformat
import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WRONG = {
    "01-flops": {
        "ex1-days": [  # the GPU count ignored
            "def days_to_train(total_flop, n_gpus, peak_flop_per_s, mfu):\n"
            "    return total_flop / (peak_flop_per_s * mfu) / 86400"],
        "ex2-attention": [  # the batch ignored (the old visible tests only used batch_size=1)
            "def attention_flops(seq_len, d_model, batch_size=1, causal=False):\n"
            "    pairs = seq_len * (seq_len + 1) // 2 if causal else seq_len * seq_len\n"
            "    return 4 * pairs * d_model"],
        "ex3-gpt": [
            # the batch ignored
            "def gpt_forward_flops(n_layer, d_model, vocab_size, seq_len, batch_size=1):\n"
            "    d, T = d_model, seq_len\n"
            "    return n_layer * (2 * T * 12 * d * d + 4 * T * T * d) + 2 * T * d * vocab_size",
            # the language-model head forgotten (right for GPT-2 small? no: its head is 20 % of the FLOP)
            "def gpt_forward_flops(n_layer, d_model, vocab_size, seq_len, batch_size=1):\n"
            "    d, T, B = d_model, seq_len, batch_size\n"
            "    return n_layer * (2 * B * T * 12 * d * d + 4 * B * T * T * d)"],
        "ex4-timer": [
            # the clock read before the (pretend) GPU finished: sync only once, after the loop
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    for _ in range(warmup):\n        fn()\n"
            "    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        times.append(time.perf_counter() - t)\n"
            "    sync()\n"
            "    q = statistics.quantiles(times, n=4, method='inclusive')\n    return q[1], q[0], q[2]",
            # no warm-up
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        sync()\n        times.append(time.perf_counter() - t)\n"
            "    q = statistics.quantiles(times, n=4, method='inclusive')\n    return q[1], q[0], q[2]",
            # the mean for the median
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    for _ in range(warmup):\n        fn()\n"
            "    sync()\n    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        sync()\n        times.append(time.perf_counter() - t)\n"
            "    return sum(times) / len(times), min(times), max(times)"],
        "ex5-intensity": [  # the output's write forgotten
            "def matmul_intensity(m, n, k, bytes_per_element):\n"
            "    return 2 * m * n * k / ((m * k + k * n) * bytes_per_element)"],
        "ex6-roofline": [  # the ridge point called memory-bound
            "def roofline(intensity, peak_flop_per_s, peak_bytes_per_s):\n"
            "    memory_roof = intensity * peak_bytes_per_s\n"
            "    return (memory_roof, 'memory') if memory_roof <= peak_flop_per_s else (peak_flop_per_s, 'compute')"],
        "ex7-shares": [  # total times added up: nested ops counted twice
            "def class_shares(rows):\n"
            "    f = dict.fromkeys(flops.CLASSES, 0.0)\n    s = dict.fromkeys(flops.CLASSES, 0.0)\n"
            "    for r in rows:\n"
            "        f[flops.op_class(r['op'])] += r['flop']\n        s[flops.op_class(r['op'])] += r['total_s']\n"
            "    return {c: (100 * f[c] / sum(f.values()), 100 * s[c] / sum(s.values())) for c in flops.CLASSES}"],
        "ex8-bytes": [
            # views counted: a transpose "moves" a whole matrix
            "from torch.utils._pytree import tree_leaves\n"
            "from torch.utils._python_dispatch import TorchDispatchMode\n"
            "class ByteCounter(TorchDispatchMode):\n"
            "    def __init__(self):\n        super().__init__()\n        self.bytes = {}\n"
            "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
            "        kwargs = kwargs or {}\n        out = func(*args, **kwargs)\n"
            "        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]\n"
            "        name = 'aten::' + func.overloadpacket.__name__\n"
            "        self.bytes[name] = self.bytes.get(name, 0) + sum(t.numel() * t.element_size() for t in tensors)\n"
            "        return out\n"
            "def intensity_by_class(rows, byte_counts):\n"
            "    flop = dict.fromkeys(flops.CLASSES, 0.0)\n    moved = dict.fromkeys(flops.CLASSES, 0)\n"
            "    for r in rows:\n        flop[flops.op_class(r['op'])] += r['flop']\n"
            "    for op, n in byte_counts.items():\n        moved[flops.op_class(op)] += n\n"
            "    return {c: flop[c] / moved[c] for c in flops.CLASSES if moved[c] > 0}",
            # 4 bytes per element whatever the dtype
            "from torch.utils._pytree import tree_leaves\n"
            "from torch.utils._python_dispatch import TorchDispatchMode\n"
            "class ByteCounter(TorchDispatchMode):\n"
            "    def __init__(self):\n        super().__init__()\n        self.bytes = {}\n"
            "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
            "        kwargs = kwargs or {}\n        out = func(*args, **kwargs)\n"
            "        if not flops.is_view_op(func, args, kwargs, out):\n"
            "            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]\n"
            "            name = 'aten::' + func.overloadpacket.__name__\n"
            "            self.bytes[name] = self.bytes.get(name, 0) + sum(4 * t.numel() for t in tensors)\n"
            "        return out\n"
            "def intensity_by_class(rows, byte_counts):\n"
            "    flop = dict.fromkeys(flops.CLASSES, 0.0)\n    moved = dict.fromkeys(flops.CLASSES, 0)\n"
            "    for r in rows:\n        flop[flops.op_class(r['op'])] += r['flop']\n"
            "    for op, n in byte_counts.items():\n        moved[flops.op_class(op)] += n\n"
            "    return {c: flop[c] / moved[c] for c in flops.CLASSES if moved[c] > 0}",
            # only what is written: the reads forgotten
            "from torch.utils._pytree import tree_leaves\n"
            "from torch.utils._python_dispatch import TorchDispatchMode\n"
            "class ByteCounter(TorchDispatchMode):\n"
            "    def __init__(self):\n        super().__init__()\n        self.bytes = {}\n"
            "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
            "        kwargs = kwargs or {}\n        out = func(*args, **kwargs)\n"
            "        if not flops.is_view_op(func, args, kwargs, out):\n"
            "            tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]\n"
            "            name = 'aten::' + func.overloadpacket.__name__\n"
            "            self.bytes[name] = self.bytes.get(name, 0) + sum(t.numel() * t.element_size() for t in tensors)\n"
            "        return out\n"
            "def intensity_by_class(rows, byte_counts):\n"
            "    flop = dict.fromkeys(flops.CLASSES, 0.0)\n    moved = dict.fromkeys(flops.CLASSES, 0)\n"
            "    for r in rows:\n        flop[flops.op_class(r['op'])] += r['flop']\n"
            "    for op, n in byte_counts.items():\n        moved[flops.op_class(op)] += n\n"
            "    return {c: flop[c] / moved[c] for c in flops.CLASSES if moved[c] > 0}",
            # the mean of the ops' intensities, not the class's FLOP over its bytes
            "from torch.utils._pytree import tree_leaves\n"
            "from torch.utils._python_dispatch import TorchDispatchMode\n"
            "class ByteCounter(TorchDispatchMode):\n"
            "    def __init__(self):\n        super().__init__()\n        self.bytes = {}\n"
            "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
            "        kwargs = kwargs or {}\n        out = func(*args, **kwargs)\n"
            "        if not flops.is_view_op(func, args, kwargs, out):\n"
            "            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]\n"
            "            name = 'aten::' + func.overloadpacket.__name__\n"
            "            self.bytes[name] = self.bytes.get(name, 0) + sum(t.numel() * t.element_size() for t in tensors)\n"
            "        return out\n"
            "def intensity_by_class(rows, byte_counts):\n"
            "    out = {}\n"
            "    for c in flops.CLASSES:\n"
            "        ratios = [r['flop'] / byte_counts[r['op']] for r in rows if flops.op_class(r['op']) == c and byte_counts.get(r['op'])]\n"
            "        if ratios:\n            out[c] = sum(ratios) / len(ratios)\n"
            "    return out"],
    },
    "02-kernels": {
        "ex1-add": [  # no mask: the last program reads and writes past the end
            "@triton.jit\ndef add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):\n"
            "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n"
            "    tl.store(out_ptr + offs, tl.load(x_ptr + offs) + tl.load(y_ptr + offs))\n"
            "def my_add(x, y, block=256):\n    out = torch.empty_like(x)\n"
            "    add_kernel[(triton.cdiv(x.numel(), block),)](x, y, out, x.numel(), BLOCK=block)\n    return out"],
        "ex2-softmax": [  # masked lanes loaded as 0: they join the sum
            "@triton.jit\ndef softmax_kernel(x_ptr, y_ptr, n_cols, x_row_stride, y_row_stride, BLOCK: tl.constexpr):\n"
            "    row = tl.program_id(0)\n    offs = tl.arange(0, BLOCK)\n    mask = offs < n_cols\n"
            "    x = tl.load(x_ptr + row * x_row_stride + offs, mask=mask, other=0.0).to(tl.float32)\n"
            "    e = tl.exp(x - tl.max(x, axis=0))\n"
            "    tl.store(y_ptr + row * y_row_stride + offs, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)\n"
            "def my_softmax(x):\n    x2 = x.contiguous().view(-1, x.shape[-1])\n    y = torch.empty_like(x2)\n"
            "    softmax_kernel[(x2.shape[0],)](x2, y, x2.shape[1], x2.stride(0), y.stride(0), BLOCK=triton.next_power_of_2(x2.shape[1]))\n"
            "    return y.view(x.shape)"],
        "ex3-online": [  # the running sum not rescaled when the max grows
            "@triton.jit\ndef online_softmax_kernel(x_ptr, y_ptr, n_cols, x_row_stride, y_row_stride, BLOCK: tl.constexpr):\n"
            "    row = tl.program_id(0)\n"
            "    m = tl.full([], -float('inf'), tl.float32)\n    s = tl.full([], 0.0, tl.float32)\n"
            "    for start in range(0, n_cols, BLOCK):\n"
            "        offs = start + tl.arange(0, BLOCK)\n"
            "        x = tl.load(x_ptr + row * x_row_stride + offs, mask=offs < n_cols, other=-float('inf')).to(tl.float32)\n"
            "        m = tl.maximum(m, tl.max(x, axis=0))\n"
            "        s = s + tl.sum(tl.exp(x - m), axis=0)\n"
            "    for start in range(0, n_cols, BLOCK):\n"
            "        offs = start + tl.arange(0, BLOCK)\n        mask = offs < n_cols\n"
            "        x = tl.load(x_ptr + row * x_row_stride + offs, mask=mask, other=-float('inf')).to(tl.float32)\n"
            "        tl.store(y_ptr + row * y_row_stride + offs, (tl.exp(x - m) / s).to(y_ptr.dtype.element_ty), mask=mask)\n"
            "def my_online_softmax(x, block=256):\n    x2 = x.contiguous().view(-1, x.shape[-1])\n    y = torch.empty_like(x2)\n"
            "    online_softmax_kernel[(x2.shape[0],)](x2, y, x2.shape[1], x2.stride(0), y.stride(0), BLOCK=block)\n"
            "    return y.view(x.shape)"],
        "ex4-bias-gelu": [  # the bias indexed by the flat offset, not the column
            "@triton.jit\ndef bias_gelu_kernel(x_ptr, b_ptr, out_ptr, n, n_cols, BLOCK: tl.constexpr):\n"
            "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n    mask = offs < n\n"
            "    z = tl.load(x_ptr + offs, mask=mask).to(tl.float32) + tl.load(b_ptr + offs, mask=offs < n_cols, other=0.0).to(tl.float32)\n"
            "    tl.store(out_ptr + offs, (0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))).to(out_ptr.dtype.element_ty), mask=mask)\n"
            "def my_bias_gelu(x, b, block=1024):\n    x = x.contiguous()\n    out = torch.empty_like(x)\n"
            "    bias_gelu_kernel[(triton.cdiv(x.numel(), block),)](x, b, out, x.numel(), x.shape[-1], BLOCK=block)\n    return out"],
        "ex5-tile": [  # the output tile counted as loaded at every step of K
            "def tile_intensity(block_m, block_n, block_k, bytes_per_element):\n"
            "    return 2 * block_m * block_n * block_k / ((block_m * block_k + block_k * block_n + block_m * block_n) * bytes_per_element)"],
        "ex6-traffic": [  # each matrix read once: the reuse across tiles ignored
            "def matmul_traffic(M, N, K, block_m, block_n, bytes_per_element):\n"
            "    return (M * K + K * N + M * N) * bytes_per_element",
            # floor instead of ceil: partial tiles forgotten
            "def matmul_traffic(M, N, K, block_m, block_n, bytes_per_element):\n"
            "    return (M * K * (N // block_n) + K * N * (M // block_m) + M * N) * bytes_per_element"],
        "ex7-matmul": [
            # the accumulator overwritten at each step of K: only the last BLOCK_K columns count
            '@triton.jit\ndef matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,\n                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):\n    pid = tl.program_id(0)\n    pid_m = pid // tl.cdiv(N, BLOCK_N)\n    pid_n = pid % tl.cdiv(N, BLOCK_N)\n    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)\n    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)\n    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)\n    for k in range(0, K, BLOCK_K):\n        rk = k + tl.arange(0, BLOCK_K)\n        a = tl.load(a_ptr + rm[:, None] * sam + rk[None, :] * sak, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)\n        b = tl.load(b_ptr + rk[:, None] * sbk + rn[None, :] * sbn, mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)\n        acc = tl.dot(a, b, input_precision="ieee")\n    c_mask = (rm[:, None] < M) & (rn[None, :] < N)\n    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(c_ptr.dtype.element_ty), mask=c_mask)\n\n\ndef my_matmul(a, b, block=(32, 32, 16)):\n    M, K = a.shape\n    N = b.shape[1]\n    c = torch.empty((M, N), device=a.device, dtype=a.dtype)\n    bm, bn, bk = block\n    matmul_kernel[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](a, b, c, M, N, K, *a.stride(), *b.stride(), *c.stride(),\n                                                              BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)\n    return c',
            # the shapes used as strides: right only for contiguous inputs
            '@triton.jit\ndef matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,\n                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):\n    pid = tl.program_id(0)\n    pid_m = pid // tl.cdiv(N, BLOCK_N)\n    pid_n = pid % tl.cdiv(N, BLOCK_N)\n    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)\n    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)\n    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)\n    for k in range(0, K, BLOCK_K):\n        rk = k + tl.arange(0, BLOCK_K)\n        a = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)\n        b = tl.load(b_ptr + rk[:, None] * N + rn[None, :], mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)\n        acc = tl.dot(a, b, acc, input_precision="ieee")\n    c_mask = (rm[:, None] < M) & (rn[None, :] < N)\n    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(c_ptr.dtype.element_ty), mask=c_mask)\n\n\ndef my_matmul(a, b, block=(32, 32, 16)):\n    M, K = a.shape\n    N = b.shape[1]\n    c = torch.empty((M, N), device=a.device, dtype=a.dtype)\n    bm, bn, bk = block\n    matmul_kernel[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](a, b, c, M, N, K, *a.stride(), *b.stride(), *c.stride(),\n                                                              BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)\n    return c',
            # the tile column taken modulo the number of tile rows: some tiles computed twice, some never
            '@triton.jit\ndef matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,\n                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):\n    pid = tl.program_id(0)\n    pid_m = pid // tl.cdiv(N, BLOCK_N)\n    pid_n = pid % tl.cdiv(M, BLOCK_M)\n    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)\n    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)\n    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)\n    for k in range(0, K, BLOCK_K):\n        rk = k + tl.arange(0, BLOCK_K)\n        a = tl.load(a_ptr + rm[:, None] * sam + rk[None, :] * sak, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)\n        b = tl.load(b_ptr + rk[:, None] * sbk + rn[None, :] * sbn, mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)\n        acc = tl.dot(a, b, acc, input_precision="ieee")\n    c_mask = (rm[:, None] < M) & (rn[None, :] < N)\n    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(c_ptr.dtype.element_ty), mask=c_mask)\n\n\ndef my_matmul(a, b, block=(32, 32, 16)):\n    M, K = a.shape\n    N = b.shape[1]\n    c = torch.empty((M, N), device=a.device, dtype=a.dtype)\n    bm, bn, bk = block\n    matmul_kernel[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](a, b, c, M, N, K, *a.stride(), *b.stride(), *c.stride(),\n                                                              BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)\n    return c'],
    },
    "05-pruning": {
        "ex1-magnitude": [  # signed values, not magnitudes: the most negative weights go
            "def magnitude_keep_mask(w, sparsity):\n"
            "    k = round(sparsity * w.numel())\n    mask = torch.ones(w.numel(), dtype=torch.bool)\n"
            "    if k:\n        mask[torch.topk(w.flatten(), k, largest=False).indices] = False\n"
            "    return mask.view_as(w)"],
        "ex2-global": [  # one threshold per layer, averaged
            "def global_threshold(weights, sparsity):\n"
            "    ts = []\n    for w in weights:\n        k = round(sparsity * w.numel())\n"
            "        ts.append(torch.kthvalue(w.abs().flatten(), k).values.item() if k else 0.0)\n"
            "    return sum(ts) / len(ts)"],
        "ex3-24": [  # half of each row, not 2 of every 4
            "def two_four_mask(w):\n"
            "    if w.shape[-1] % 4:\n        raise ValueError('not a multiple of 4')\n"
            "    rows = w.abs().reshape(-1, w.shape[-1])\n    keep = torch.zeros_like(rows, dtype=torch.bool)\n"
            "    keep.scatter_(1, rows.topk(w.shape[-1] // 2, dim=1).indices, True)\n    return keep.view_as(w)"],
        "ex4-filters": [  # the smallest filters kept
            "def filters_to_keep(conv, fraction):\n"
            "    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))\n"
            "    n_keep = max(1, conv.out_channels - round(fraction * conv.out_channels))\n"
            "    return torch.sort(torch.topk(norms, n_keep, largest=False).indices).values"],
        "ex5-neurons": [  # the first layer's bias forgotten
            "def prune_neurons(lin, next_lin, keep):\n"
            "    new, nxt = nn.Linear(lin.in_features, len(keep)), nn.Linear(len(keep), next_lin.out_features)\n"
            "    with torch.no_grad():\n"
            "        new.weight.copy_(lin.weight[keep])\n        nxt.weight.copy_(next_lin.weight[:, keep])\n"
            "        nxt.bias.copy_(next_lin.bias)\n"
            "    return new, nxt"],
        "ex6-scan": [  # each layer pruned on top of the previous ones: never restored
            "@torch.no_grad()\ndef sensitivity_scan(model, sparsities, evaluate):\n"
            "    scan = {}\n    for name, w in prune.prunable(model):\n        scan[name] = []\n"
            "        for s in sparsities:\n            w.mul_(magnitude_keep_mask(w.detach().clone(), s))\n"
            "            scan[name].append(evaluate(model))\n    return scan"],
        "ex7-wanda": [
            # the activations ignored: plain magnitude per row
            "def wanda_keep_mask(w, act_norm, sparsity):\n"
            "    k = round(sparsity * w.shape[1])\n    mask = torch.ones_like(w, dtype=torch.bool)\n"
            "    if k > 0:\n        mask.scatter_(1, torch.topk(w.abs(), k, dim=1, largest=False).indices, False)\n"
            "    return mask",
            # the whole layer compared at once: a row of small weights loses everything
            "def wanda_keep_mask(w, act_norm, sparsity):\n"
            "    score = (w.abs() * act_norm[None, :]).flatten()\n    k = round(sparsity * score.numel())\n"
            "    mask = torch.ones_like(score, dtype=torch.bool)\n"
            "    if k > 0:\n        mask[torch.topk(score, k, largest=False).indices] = False\n"
            "    return mask.view_as(w)"],
    },
    "06-energy": {
        "ex1-trace": [  # the mean power times the whole duration: uneven samples weighted alike
            "def energy_from_trace(times_s, watts):\n"
            "    return sum(watts) / len(watts) * (times_s[-1] - times_s[0])"],
        "ex2-wrap": [  # the wrap forgotten: a negative increase
            "def wrapped_delta(start, end, max_range):\n    return end - start"],
        "ex3-sampler": [
            # no sample as the window closes: the last interval is lost
            "import threading\n"
            "class SamplingMeter:\n"
            "    def __init__(self, read_watts, interval_s=0.005):\n"
            "        self.read_watts, self.interval_s = read_watts, interval_s\n        self.times, self.watts = [], []\n"
            "    def start(self):\n"
            "        self.done = threading.Event()\n        self._record()\n"
            "        def loop():\n            while not self.done.wait(self.interval_s):\n                self._record()\n"
            "        self.thread = threading.Thread(target=loop, daemon=True)\n        self.thread.start()\n        return self\n"
            "    def stop(self):\n        self.done.set()\n        self.thread.join()\n"
            "        return energy_from_trace(self.times, self.watts)\n"
            "    def _record(self):\n        self.times.append(time.perf_counter())\n        self.watts.append(self.read_watts())",
            # the thread never stopped: samples keep arriving
            "import threading\n"
            "class SamplingMeter:\n"
            "    def __init__(self, read_watts, interval_s=0.005):\n"
            "        self.read_watts, self.interval_s = read_watts, interval_s\n        self.times, self.watts = [], []\n"
            "    def start(self):\n"
            "        self._record()\n"
            "        def loop():\n            while True:\n                time.sleep(self.interval_s)\n                self._record()\n"
            "        threading.Thread(target=loop, daemon=True).start()\n        return self\n"
            "    def stop(self):\n        self._record()\n"
            "        return energy_from_trace(list(self.times), list(self.watts))\n"
            "    def _record(self):\n        self.times.append(time.perf_counter())\n        self.watts.append(self.read_watts())"],
        "ex4-window": [  # one missed period, not one at each end
            "def min_window_s(update_period_s, resolution_j, watts, max_error):\n"
            "    return (update_period_s + resolution_j / watts) / max_error"],
        "ex5-attribute": [  # idle watts subtracted from joules: the units do not match
            "def energy_per_inference(total_j, seconds, idle_w, n):\n"
            "    return {'total_mj': 1e3 * total_j / n, 'dynamic_mj': 1e3 * (total_j - idle_w) / n}"],
        "ex6-average": [
            # the window closed at its far end: one sample too many
            "def averaged_readings(times_s, watts, window_s):\n"
            "    out = []\n    for i, t in enumerate(times_s):\n"
            "        inside = [w for tj, w in zip(times_s[:i + 1], watts[:i + 1]) if tj >= t - window_s]\n"
            "        out.append(sum(inside) / len(inside))\n    return out",
            # a centred window: the sensor sees the future
            "def averaged_readings(times_s, watts, window_s):\n"
            "    return [sum(w for tj, w in zip(times_s, watts) if abs(tj - t) < window_s / 2)\n"
            "            / sum(1 for tj in times_s if abs(tj - t) < window_s / 2) for t in times_s]"],
        "ex7-burst": [
            # read only during the kernel: most of it is still to come
            "def burst_energy(times_s, reported_w, start, end, window_s, idle_w):\n"
            "    keep = [i for i, t in enumerate(times_s) if start <= t <= end]\n"
            "    return energy_from_trace([times_s[i] for i in keep], [reported_w[i] for i in keep])",
            # one window past the end, but the idle power of that window kept
            "def burst_energy(times_s, reported_w, start, end, window_s, idle_w):\n"
            "    keep = [i for i, t in enumerate(times_s) if start <= t <= end + window_s]\n"
            "    return energy_from_trace([times_s[i] for i in keep], [reported_w[i] for i in keep])"],
        "ex8-part-time": [  # the whole period averaged: a sensor that never misses anything
            "def part_time_readings(times_s, watts, period_s, on_s):\n"
            "    reports = []\n"
            "    for k in range(int(times_s[-1] // period_s) + 1):\n"
            "        seen = [w for t, w in zip(times_s, watts) if k * period_s <= t < (k + 1) * period_s]\n"
            "        if seen:\n            reports.append((k * period_s + on_s, sum(seen) / len(seen)))\n"
            "    return reports"],
    },
    "04-lowbit": {
        "ex5-gptq-layer": [
            # the lower Cholesky factor: row i no longer reaches the later columns
            "def gptq_layer(w, H, bits, group, damp=0.01):\n"
            "    W = w.detach().float().clone()\n    n = W.shape[1]\n"
            "    H_damped = H + damp * torch.diag(H).mean() * torch.eye(n)\n"
            "    U = torch.linalg.cholesky(torch.linalg.inv(H_damped))\n"
            "    for i in range(n):\n"
            "        if i % group == 0:\n            s, z, qmax = kbit.int_row_params(W[:, i:i + group], bits)\n"
            "        gptq_column_step(W, U, i, s, z, qmax)\n"
            "    return W",
            # the inverse itself, not its Cholesky factor: each column corrected as if it were the first
            "def gptq_layer(w, H, bits, group, damp=0.01):\n"
            "    W = w.detach().float().clone()\n    n = W.shape[1]\n"
            "    H_damped = H + damp * torch.diag(H).mean() * torch.eye(n)\n"
            "    U = torch.linalg.inv(H_damped)\n"
            "    for i in range(n):\n"
            "        if i % group == 0:\n            s, z, qmax = kbit.int_row_params(W[:, i:i + group], bits)\n"
            "        gptq_column_step(W, U, i, s, z, qmax)\n"
            "    return W",
            # no damping: a singular Hessian has no inverse
            "def gptq_layer(w, H, bits, group, damp=0.01):\n"
            "    W = w.detach().float().clone()\n    n = W.shape[1]\n"
            "    H_damped = H\n"
            "    U = torch.linalg.cholesky(torch.linalg.inv(H_damped), upper=True)\n"
            "    for i in range(n):\n"
            "        if i % group == 0:\n            s, z, qmax = kbit.int_row_params(W[:, i:i + group], bits)\n"
            "        gptq_column_step(W, U, i, s, z, qmax)\n"
            "    return W"],
        "ex7-ternary-product": [
            # gamma forgotten: the codes' product, not the layer's
            "def ternary_product(x, codes, gamma):\n"
            "    out = torch.empty(x.shape[0], codes.shape[0])\n"
            "    for j in range(codes.shape[0]):\n"
            "        out[:, j] = x[:, codes[j] == 1].sum(dim=1) - x[:, codes[j] == -1].sum(dim=1)\n"
            "    return out",
            # the -1 weights added, not subtracted
            "def ternary_product(x, codes, gamma):\n"
            "    out = torch.empty(x.shape[0], codes.shape[0])\n"
            "    for j in range(codes.shape[0]):\n"
            "        out[:, j] = x[:, codes[j] != 0].sum(dim=1)\n"
            "    return gamma * out"],
        "ex1-nf4-block": [  # an all-zero block divided by its absmax of 0: NaN codes
            "def quantize_block(block, codebook):\n"
            "    absmax = block.abs().max()\n"
            "    codes = (( block / absmax)[:, None] - codebook[None, :]).abs().argmin(dim=1).to(torch.uint8)\n"
            "    return codes, absmax"],
        "ex2-int-groups": [
            # the range [min, max] without 0: an all-positive run gets levels that skip 0
            "def int_groups(w, bits, group):\n"
            "    qmax = 2 ** bits - 1\n    runs = w.reshape(w.shape[0], -1, group)\n"
            "    lo, hi = runs.amin(-1, keepdim=True), runs.amax(-1, keepdim=True)\n"
            "    s = ((hi - lo) / qmax).clamp(min=1e-8)\n    z = torch.round(-lo / s)\n"
            "    return ((torch.clamp(torch.round(runs / s) + z, 0, qmax) - z) * s).reshape(w.shape)",
            # one scale and zero per row: the groups ignored
            "def int_groups(w, bits, group):\n"
            "    qmax = 2 ** bits - 1\n"
            "    lo, hi = w.amin(1, keepdim=True).clamp(max=0), w.amax(1, keepdim=True).clamp(min=0)\n"
            "    s = ((hi - lo) / qmax).clamp(min=1e-8)\n    z = torch.round(-lo / s)\n"
            "    return (torch.clamp(torch.round(w / s) + z, 0, qmax) - z) * s",
            # the zero point never subtracted when dequantizing
            "def int_groups(w, bits, group):\n"
            "    qmax = 2 ** bits - 1\n    runs = w.reshape(w.shape[0], -1, group)\n"
            "    lo, hi = runs.amin(-1, keepdim=True).clamp(max=0), runs.amax(-1, keepdim=True).clamp(min=0)\n"
            "    s = ((hi - lo) / qmax).clamp(min=1e-8)\n    z = torch.round(-lo / s)\n"
            "    return (torch.clamp(torch.round(runs / s) + z, 0, qmax) * s).reshape(w.shape)"],
        "ex3-pack": [  # the nibbles in the wrong order
            "def pack_nibbles(codes):\n"
            "    c = codes.reshape(-1).to(torch.uint8)\n"
            "    if c.numel() % 2:\n        c = torch.cat([c, c.new_zeros(1)])\n"
            "    return (c[1::2] << 4) | c[0::2]\n"
            "def unpack_nibbles(packed, n):\n"
            "    return torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)[:n]"],
        "ex4-gptq": [  # rounding without repair: the error never reaches the later columns
            "def gptq_column_step(W, U, i, s, z, qmax):\n"
            "    W[:, i] = kbit.int_round(W[:, i], s, z, qmax)\n    return W"],
        "ex5-ternary": [  # the straight-through estimator without detach: the gradient is zero
            "def absmean_ternarize(w):\n"
            "    gamma = w.detach().abs().mean().clamp(min=1e-5)\n"
            "    return torch.clamp(torch.round(w.detach() / gamma), -1, 1).to(torch.int8), gamma\n"
            "def ste(w, w_q):\n    return w_q"],
    },
    "07-parallel": {
        "ex1-ring": [  # every rank sends the same chunk index at each step: the sums land in the wrong places
            "def ring_allreduce(xs):\n"
            "    p = len(xs)\n    chunks = [[c.clone() for c in torch.chunk(x, p)] for x in xs]\n    sent = [0] * p\n"
            "    for phase in ('rs', 'ag'):\n        for s in range(p - 1):\n            msgs = []\n"
            "            for r in range(p):\n                c = s % p\n"
            "                msgs.append(((r + 1) % p, c, chunks[r][c].clone()))\n                sent[r] += chunks[r][c].numel() * 4\n"
            "            for dst, c, data in msgs:\n"
            "                if phase == 'rs':\n                    chunks[dst][c] += data\n"
            "                else:\n                    chunks[dst][c] = data\n"
            "    return [torch.cat(ch) for ch in chunks], sent"],
        "ex2-dp": [  # summed instead of averaged
            "def data_parallel_gradients(model, loss_fn, x, y, p):\n"
            "    params = list(model.parameters())\n    total = [torch.zeros_like(q) for q in params]\n"
            "    for xs, ys in zip(torch.chunk(x, p), torch.chunk(y, p)):\n"
            "        for acc, g in zip(total, torch.autograd.grad(loss_fn(model(xs), ys), params)):\n            acc += g\n"
            "    return total"],
        "ex3-buckets": [
            # filled in forward order: the first bucket would wait for the end of the backward pass
            "def assign_buckets(sizes, cap):\n"
            "    buckets, bucket, held = [], [], 0\n"
            "    for i in range(len(sizes)):\n        bucket.append(i)\n        held += sizes[i]\n"
            "        if held >= cap:\n            buckets.append(bucket)\n            bucket, held = [], 0\n"
            "    return buckets + ([bucket] if bucket else [])",
            # closed before it would overflow the cap: a tensor larger than the cap makes an empty bucket
            "def assign_buckets(sizes, cap):\n"
            "    buckets, bucket, held = [], [], 0\n"
            "    for i in reversed(range(len(sizes))):\n"
            "        if held + sizes[i] > cap:\n            buckets.append(bucket)\n            bucket, held = [], 0\n"
            "        bucket.append(i)\n        held += sizes[i]\n"
            "    return buckets + ([bucket] if bucket else [])"],
        "ex4-ddp": [
            # the all-reduces started in finish(), after backward: correct numbers, no overlap
            "def attach_bucketed_allreduce(model, buckets):\n"
            "    params = list(model.parameters())\n"
            "    def finish():\n"
            "        for bucket in buckets:\n"
            "            flat = torch.cat([params[j].grad.flatten() for j in bucket])\n"
            "            dist.all_reduce(flat)\n            flat /= dist.get_world_size()\n            offset = 0\n"
            "            for j in bucket:\n                n = params[j].numel()\n"
            "                params[j].grad.copy_(flat[offset:offset + n].view_as(params[j].grad))\n                offset += n\n"
            "    return finish",
            # summed, never divided by the number of ranks
            "def attach_bucketed_allreduce(model, buckets):\n"
            "    params = list(model.parameters())\n"
            "    bucket_of = {i: b for b, bucket in enumerate(buckets) for i in bucket}\n"
            "    ready, pending = [0] * len(buckets), []\n"
            "    def hook_for(i):\n        def on_grad(param):\n            b = bucket_of[i]\n            ready[b] += 1\n"
            "            if ready[b] == len(buckets[b]):\n"
            "                flat = torch.cat([params[j].grad.flatten() for j in buckets[b]])\n"
            "                pending.append((dist.all_reduce(flat, async_op=True), flat, buckets[b]))\n"
            "        return on_grad\n"
            "    for i, param in enumerate(params):\n        param.register_post_accumulate_grad_hook(hook_for(i))\n"
            "    def finish():\n"
            "        for work, flat, bucket in pending:\n            work.wait()\n            offset = 0\n"
            "            for j in bucket:\n                n = params[j].numel()\n"
            "                params[j].grad.copy_(flat[offset:offset + n].view_as(params[j].grad))\n                offset += n\n"
            "        pending.clear()\n        ready[:] = [0] * len(ready)\n"
            "    return finish"],
        "ex5-tp": [  # the whole MLP on every rank, its output divided by p: sums right, splits nothing
            "def tensor_parallel_mlp(x, mlp, p):\n"
            "    y = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight)\n"
            "    return [y / p for _ in range(p)]"],
        "ex6-topk": [  # the residual not added before choosing: error feedback forgotten
            "def topk_with_feedback(grad, residual, k):\n"
            "    g = grad.flatten()\n    idx = g.abs().topk(k).indices\n"
            "    rest = (grad + residual).flatten().clone()\n    rest[idx] = 0\n"
            "    return idx, g[idx], rest.view_as(grad)"],
    },
    "09-pipeline": {
        "ex1-1f1b": [
            # no warm-up: one forward, one backward from the start (valid, but the pipeline never fills)
            "def one_f_one_b(p, m):\n"
            "    return [[op for i in range(m) for op in (('F', i), ('B', i))] for s in range(p)]",
            # one warm-up forward too many: p - s instead of p - s - 1
            "def one_f_one_b(p, m):\n"
            "    ops = []\n"
            "    for s in range(p):\n"
            "        warm = min(p - s, m)\n"
            "        st = [('F', i) for i in range(warm)]\n"
            "        f, b = warm, 0\n"
            "        while f < m:\n            st += [('F', f), ('B', b)]\n            f, b = f + 1, b + 1\n"
            "        st += [('B', i) for i in range(b, m)]\n"
            "        ops.append(st)\n"
            "    return ops"],
        "ex2-op": [  # the loss not divided by m: gradients m times too large
            "def pipeline_op(kind, i, stage, held, x, y, m, prev, nxt):\n"
            "    if kind == 'F':\n"
            "        if prev is None:\n            inp = x\n"
            "        else:\n            inp = torch.empty_like(x)\n            dist.recv(inp, src=prev)\n            inp.requires_grad_()\n"
            "        out = stage(inp)\n"
            "        if nxt is None:\n            out = F.mse_loss(out, y)\n"
            "        held[i] = (inp, out)\n"
            "        return [] if nxt is None else [dist.isend(out.detach().contiguous(), dst=nxt)]\n"
            "    inp, out = held.pop(i)\n"
            "    if nxt is None:\n        out.backward()\n"
            "    else:\n        grad = torch.empty_like(out)\n        dist.recv(grad, src=nxt)\n        out.backward(grad)\n"
            "    return [] if prev is None else [dist.isend(inp.grad.contiguous(), dst=prev)]"],
        "ex3-idle": [  # each rank's own span instead of the step's
            "def idle_shares(timelines):\n"
            "    return [1 - sum(e - s for _, _, s, e in ops) / (ops[-1][3] - ops[0][2]) for ops in timelines]"],
        "ex4-memory": [  # GPipe's count: every micro-batch held
            "def gpu_memory(model, dp, tp, pp, m, micro_batch=1):\n"
            "    b, s, h, a = micro_batch, model.seq, model.hidden, model.heads\n"
            "    return 16 * model.params / (tp * pp) + (34 * b * s * h + 5 * b * s * s * a) * math.ceil(model.layers / pp) * m / tp"],
        "ex5-comm": [  # both directions counted on every stage, the end stages too
            "def step_bytes(model, dp, tp, pp, m, micro_batch=1, wire_bytes=2):\n"
            "    act = micro_batch * model.seq * model.hidden * wire_bytes\n"
            "    return {'tp': math.ceil(model.layers / pp) * m * 4 * 2 * (tp - 1) / tp * act,\n"
            "            'pp': 0 if pp == 1 else 2 * m * act,\n"
            "            'dp': 2 * (dp - 1) / dp * wire_bytes * model.params / (tp * pp)}"],
    },
    "10-io": {
        "ex1-storage": [  # the ratio upside down
            "def storage_for(samples_per_s, mean_bytes, device_bytes_per_s):\n"
            "    for name, v in (('samples_per_s', samples_per_s), ('mean_bytes', mean_bytes), ('device_bytes_per_s', device_bytes_per_s)):\n"
            "        if not v > 0:\n            raise ValueError(f'{name} must be > 0')\n"
            "    rate = samples_per_s * mean_bytes\n"
            "    return rate, device_bytes_per_s / rate"],
        "ex2-order": [
            # the epoch left out of the seed: every epoch the same order
            "def my_access_order(n, seed, epoch, world, rank):\n"
            "    g = torch.Generator()\n    g.manual_seed(seed)\n"
            "    perm = torch.randperm(n, generator=g).tolist()\n"
            "    total = -(-n // world) * world\n    perm += perm[:total - n]\n"
            "    return perm[rank:total:world]",
            # no padding: ranks get different counts
            "def my_access_order(n, seed, epoch, world, rank):\n"
            "    g = torch.Generator()\n    g.manual_seed(seed + epoch)\n"
            "    return torch.randperm(n, generator=g).tolist()[rank::world]"],
        "ex3-workers": [  # contiguous chunks per worker instead of batch k to worker k mod W
            "def my_worker_batches(order, batch, workers):\n"
            "    batches = [list(order[i:i + batch]) for i in range(0, len(order), batch)]\n"
            "    w = max(workers, 1)\n    per = -(-len(batches) // w)\n"
            "    return [batches[k * per:(k + 1) * per] for k in range(w)]"],
        "ex4-belady": [
            # LRU
            "def belady_misses(order, capacity):\n"
            "    return IO.simulate_cache(order, capacity, 'lru')['misses']",
            # evict the sample needed soonest
            "def belady_misses(order, capacity):\n"
            "    order = list(order)\n    nxt, up = [0] * len(order), {}\n"
            "    for t in range(len(order) - 1, -1, -1):\n        nxt[t] = up.get(order[t], float('inf'))\n        up[order[t]] = t\n"
            "    cache, misses = {}, 0\n"
            "    for t, x in enumerate(order):\n"
            "        if x in cache:\n            cache[x] = nxt[t]\n            continue\n"
            "        misses += 1\n"
            "        if capacity == 0:\n            continue\n"
            "        if len(cache) >= capacity:\n            del cache[min(cache, key=cache.get)]\n"
            "        cache[x] = nxt[t]\n"
            "    return misses"],
        "ex5-prefetch": [
            # one read at a time: in order, but nothing hidden
            "def prefetch(store, order, depth, threads):\n"
            "    for i in order:\n        yield i, store.read(i)",
            # every read submitted at once: fast, but no memory bound
            "def prefetch(store, order, depth, threads):\n"
            "    with ThreadPoolExecutor(threads) as pool:\n"
            "        futs = [(i, pool.submit(store.read, i)) for i in order]\n"
            "        for i, f in futs:\n            yield i, f.result()"],
    },
    "08-memory": {
        "ex1-state": [  # mixed precision without the fp32 master weight
            "def state_bytes(optimizer, mixed=False):\n"
            "    moments = {'sgd': 0, 'momentum': 1, 'adam': 2}\n"
            "    if optimizer not in moments:\n        raise ValueError(f'unknown optimizer {optimizer!r}')\n"
            "    return (2 + 2 if mixed else 4 + 4) + 4 * moments[optimizer]"],
        "ex2-activations": [
            # the attention scores forgotten: right at one T only by chance
            "def activation_bytes(b, T, d, heads, act_bytes=4):\n"
            "    return b * T * (act_bytes * 16 * d + 16)",
            # GELU's output forgotten (it is the last linear layer's input)
            "def activation_bytes(b, T, d, heads, act_bytes=4):\n"
            "    return b * T * (act_bytes * (12 * d + heads * T) + 16)",
            # LayerNorm's statistics forgotten
            "def activation_bytes(b, T, d, heads, act_bytes=4):\n"
            "    return b * T * act_bytes * (16 * d + heads * T)"],
        "ex3-loss-scale": [
            # the gradients never unscaled: the step is scale times too large
            "def loss_scaled_step(model, loss, opt, scaler):\n"
            "    (loss * scaler['scale']).backward()\n"
            "    finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)\n"
            "    if finite:\n        opt.step()\n        scaler['good'] += 1\n"
            "        if scaler['good'] == scaler['interval']:\n            scaler['scale'] *= 2.0\n            scaler['good'] = 0\n"
            "    else:\n        scaler['scale'] *= 0.5\n        scaler['good'] = 0\n"
            "    opt.zero_grad()\n    return finite",
            # an overflow skipped, but the scale kept: the next step overflows again
            "def loss_scaled_step(model, loss, opt, scaler):\n"
            "    (loss * scaler['scale']).backward()\n"
            "    grads = [p.grad for p in model.parameters() if p.grad is not None]\n"
            "    finite = all(torch.isfinite(g).all() for g in grads)\n"
            "    if finite:\n        for g in grads:\n            g.div_(scaler['scale'])\n        opt.step()\n"
            "        scaler['good'] += 1\n"
            "        if scaler['good'] == scaler['interval']:\n            scaler['scale'] *= 2.0\n            scaler['good'] = 0\n"
            "    opt.zero_grad()\n    return finite"],
        "ex4-checkpoint": [
            # the whole stack as one checkpoint, whatever `every`
            "from torch.utils.checkpoint import checkpoint\n"
            "def checkpoint_blocks(blocks, x, every):\n"
            "    def run(h):\n        for blk in blocks:\n            h = blk(h)\n        return h\n"
            "    return run(x) if every == 0 else checkpoint(run, x, use_reentrant=False)",
            # no checkpointing at all
            "def checkpoint_blocks(blocks, x, every):\n"
            "    for blk in blocks:\n        x = blk(x)\n    return x"],
        "ex5-zero": [  # stage 1 shards Adam's moments but not the fp32 master weights
            "def zero_bytes(stage, world):\n"
            "    sharded = {0: 0, 1: 8, 2: 10, 3: 16}[stage]\n    return 16 - sharded + sharded / world"],
        "ex6-zero1": [
            # Adam's bias correction forgotten
            "def zero1_adam_step(param, grad, state, lr, t):\n"
            "    p, r = dist.get_world_size(), dist.get_rank()\n    n = param.numel() // p\n"
            "    piece = slice(r * n, (r + 1) * n)\n    g = grad[piece]\n"
            "    if not state:\n        state['m'], state['v'] = torch.zeros_like(g), torch.zeros_like(g)\n"
            "    m, v = state['m'], state['v']\n"
            "    m.mul_(0.9).add_(g, alpha=0.1)\n    v.mul_(0.999).addcmul_(g, g, value=0.001)\n"
            "    mine = param[piece] - lr * m / (v.sqrt() + 1e-8)\n"
            "    pieces = [torch.empty_like(mine) for _ in range(p)]\n    dist.all_gather(pieces, mine)\n"
            "    param.copy_(torch.cat(pieces))",
            # right numbers, but every rank keeps the moments of every entry: nothing sharded
            "def zero1_adam_step(param, grad, state, lr, t):\n"
            "    if not state:\n        state['m'], state['v'] = torch.zeros_like(grad), torch.zeros_like(grad)\n"
            "    m, v = state['m'], state['v']\n"
            "    m.mul_(0.9).add_(grad, alpha=0.1)\n    v.mul_(0.999).addcmul_(grad, grad, value=0.001)\n"
            "    param.sub_(lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8))"],
    },
    "03-int8": {
        "ex1-absmax": [
            # no clamp: a value past a static scale's range wraps around in int8
            "def absmax_quantize(x, scale=None):\n"
            "    scale = x.abs().max().item() / 127 if scale is None else scale\n"
            "    return torch.round(x / scale).to(torch.int8), scale\n"
            "def absmax_dequantize(q, scale):\n    return q.float() * scale",
            # dequantize divides
            "def absmax_quantize(x, scale=None):\n"
            "    scale = x.abs().max().item() / 127 if scale is None else scale\n"
            "    return torch.round(x / scale).clamp(-127, 127).to(torch.int8), scale\n"
            "def absmax_dequantize(q, scale):\n    return q.float() / scale"],
        "ex2-channel": [  # per column (input channel) instead of per row
            "def per_channel_scales(w):\n    return w.abs().amax(dim=0, keepdim=True).t() / 127"],
        "ex3-zeropoint": [  # the range [min, max] without 0: values in [1, 1.5] get a negative zero point
            "def zeropoint_quantize(x):\n"
            "    lo, hi = x.min().item(), x.max().item()\n"
            "    scale = (hi - lo) / 255\n    zero = int(round(-lo / scale))\n"
            "    return (torch.round(x / scale) + zero).clamp(0, 255).to(torch.uint8), scale, zero\n"
            "def zeropoint_dequantize(q, scale, zero):\n    return (q.float() - zero) * scale"],
        "ex4-int8-linear": [
            # one scale for the whole activation tensor
            "def int8_linear(x, w, bias=None):\n"
            "    sx = x.abs().max() / 127\n    sw = w.abs().amax(1, keepdim=True) / 127\n"
            "    acc = torch.round(x / sx).to(torch.int32) @ torch.round(w / sw).to(torch.int32).t()\n"
            "    y = acc.float() * sx * sw.t()\n    return y if bias is None else y + bias",
            # accumulated in int8: overflows
            "def int8_linear(x, w, bias=None):\n"
            "    sx = x.abs().amax(1, keepdim=True) / 127\n    sw = w.abs().amax(1, keepdim=True) / 127\n"
            "    qx, qw = torch.round(x / sx).to(torch.int8), torch.round(w / sw).to(torch.int8)\n"
            "    acc = (qx[:, None, :] * qw[None, :, :]).sum(-1, dtype=torch.int8)\n"
            "    y = acc.float() * sx * sw.t()\n    return y if bias is None else y + bias",
            # rescaled by the weight's scale only
            "def int8_linear(x, w, bias=None):\n"
            "    sx = x.abs().amax(1, keepdim=True) / 127\n    sw = w.abs().amax(1, keepdim=True) / 127\n"
            "    acc = torch.round(x / sx).to(torch.int32) @ torch.round(w / sw).to(torch.int32).t()\n"
            "    y = acc.float() * sw.t()\n    return y if bias is None else y + bias"],
        "ex5-outliers": [  # |x| > threshold instead of >=, and the sign forgotten
            "def find_outliers(x, threshold=6.0):\n"
            "    return torch.nonzero((x.reshape(-1, x.shape[-1]) > threshold).any(0)).flatten()"],
        "ex6-smooth": [
            # alpha hard-coded to 0.5
            "def smooth_scale(act_absmax, w_absmax, alpha=0.5):\n    return act_absmax.sqrt() / w_absmax.sqrt()\n"
            "@torch.no_grad()\ndef fold_smoothing(ln, linear, s):\n    ln.weight.div_(s)\n    ln.bias.div_(s)\n    linear_weight(linear).mul_(s)",
            # the LayerNorm's bias forgotten
            "def smooth_scale(act_absmax, w_absmax, alpha=0.5):\n    return act_absmax.pow(alpha) / w_absmax.pow(1 - alpha)\n"
            "@torch.no_grad()\ndef fold_smoothing(ln, linear, s):\n"
            "    ln.weight.div_(s)\n    linear_weight(linear).mul_(s)",
            # the weight's rows (output channels) scaled instead of its input columns
            "def smooth_scale(act_absmax, w_absmax, alpha=0.5):\n    return act_absmax.pow(alpha) / w_absmax.pow(1 - alpha)\n"
            "@torch.no_grad()\ndef fold_smoothing(ln, linear, s):\n"
            "    ln.weight.div_(s)\n    ln.bias.div_(s)\n    linear.weight.mul_(s[:linear.weight.shape[0], None])"],
        "ex7-llm-int8": [
            # the outlier columns added in float but left in the int8 part too: counted twice
            "def llm_int8_linear(x, w, bias=None, threshold=6.0):\n"
            "    cols = find_outliers(x, threshold)\n"
            "    return int8_linear(x, w, bias) + x[:, cols] @ w[:, cols].t()",
            # plain int8: the outliers ignored
            "def llm_int8_linear(x, w, bias=None, threshold=6.0):\n    return int8_linear(x, w, bias)"],
        "ex8-static": [
            # only the last batch kept: the calibration forgets what it saw
            "class MyObserver:\n"
            "    def __init__(self, method='minmax', percentile=99.99):\n"
            "        if method not in ('minmax', 'percentile'):\n            raise ValueError(method)\n"
            "        self.method, self.percentile, self.seen = method, percentile, []\n"
            "    def update(self, x):\n        self.seen = [x.detach().float().flatten()]\n"
            "    def scale(self):\n        a = torch.cat(self.seen)\n"
            "        if self.method == 'minmax':\n            return a.abs().max().item() / 127\n"
            "        return torch.quantile(a.abs(), self.percentile / 100).item() / 127\n"
            "def static_quantize(x, scale):\n    return torch.round(x / scale).clamp(-127, 127).to(torch.int8)\n"
            "def static_dequantize(q, scale):\n    return q.float() * scale",
            # the percentile of the signed values: negative extremes ignored
            "class MyObserver:\n"
            "    def __init__(self, method='minmax', percentile=99.99):\n"
            "        if method not in ('minmax', 'percentile'):\n            raise ValueError(method)\n"
            "        self.method, self.percentile, self.seen = method, percentile, []\n"
            "    def update(self, x):\n        self.seen.append(x.detach().float().flatten())\n"
            "    def scale(self):\n        a = torch.cat(self.seen)\n"
            "        if self.method == 'minmax':\n            return a.abs().max().item() / 127\n"
            "        return torch.quantile(a, self.percentile / 100).item() / 127\n"
            "def static_quantize(x, scale):\n    return torch.round(x / scale).clamp(-127, 127).to(torch.int8)\n"
            "def static_dequantize(q, scale):\n    return q.float() * scale",
            # no clamp: 1000 cast to int8 wraps around
            "class MyObserver:\n"
            "    def __init__(self, method='minmax', percentile=99.99):\n"
            "        if method not in ('minmax', 'percentile'):\n            raise ValueError(method)\n"
            "        self.method, self.percentile, self.seen = method, percentile, []\n"
            "    def update(self, x):\n        self.seen.append(x.detach().abs().float().flatten())\n"
            "    def scale(self):\n        a = torch.cat(self.seen)\n"
            "        if self.method == 'minmax':\n            return a.max().item() / 127\n"
            "        return torch.quantile(a, self.percentile / 100).item() / 127\n"
            "def static_quantize(x, scale):\n    return torch.round(x / scale).to(torch.int8)\n"
            "def static_dequantize(q, scale):\n    return q.float() * scale"],
    },
}


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _visible(test_cell) -> str:
    return test_cell.source.split("### BEGIN HIDDEN TESTS")[0]


class Lab:
    def __init__(self, name):
        self.nb = nbformat.read(REPO / "notebooks" / name / f"{name}.ipynb", 4)
        cells = self.nb.cells
        first = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution"))
        self.namespace = {"__name__": "__lab__"}
        for cell in cells[:first]:
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{name} set-up", "exec"), self.namespace)

    def solution(self, grade_id):
        return next(c for c in self.nb.cells if _grade_id(c) == grade_id)

    def test_after(self, grade_id):
        cells = self.nb.cells
        at = cells.index(self.solution(grade_id))
        return next(c for c in cells[at + 1:] if c.metadata.get("nbgrader", {}).get("grade"))

    def run(self, solution_source: str, grade_id: str):
        ns = dict(self.namespace)
        for cell in self.nb.cells[:self.nb.cells.index(self.solution(grade_id))]:  # exercises it builds on
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
                exec(_compiled(cell.source, f"{_grade_id(cell)} (instructor)"), ns)
        exec(_compiled(solution_source, f"{grade_id} solution"), ns)
        exec(_compiled(_visible(self.test_after(grade_id)), f"{grade_id} visible tests"), ns)


def _compiled(source: str, name: str):
    """source compiled as a notebook cell is: its lines kept in linecache, so that inspect can
    read a function's source back (labkit.parallel.run sends notebook functions to ranks so)."""
    import linecache
    filename = f"<{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


@pytest.fixture(scope="module")
def labs():
    return {}


def _lab(labs, name) -> Lab:
    if name not in labs:
        labs[name] = Lab(name)
    return labs[name]


CASES = [(lab, gid, i) for lab, exercises in WRONG.items() for gid, wrongs in exercises.items()
         for i in range(len(wrongs))]


@pytest.mark.parametrize("lab, grade_id", sorted({(lab, gid) for lab, gid, _ in CASES}))
def test_instructor_solution_passes_the_visible_tests(labs, lab, grade_id):
    lab_ = _lab(labs, lab)
    source = lab_.solution(grade_id).source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")
    lab_.run(source, grade_id)


@pytest.mark.parametrize("lab, grade_id, i", CASES, ids=[f"{lab}:{gid}:{i}" for lab, gid, i in CASES])
def test_plausible_wrong_solution_fails_a_visible_test(labs, lab, grade_id, i):
    with pytest.raises(AssertionError) as err:
        _lab(labs, lab).run(WRONG[lab][grade_id][i], grade_id)
    assert str(err.value), "a failing visible assert must say what is wrong"


@pytest.mark.parametrize("lab", sorted(WRONG))
def test_every_exercise_of_a_deepened_lab_has_a_wrong_solution_here(lab):
    nb = nbformat.read(REPO / "notebooks" / lab / f"{lab}.ipynb", 4)
    code_exercises = {_grade_id(c) for c in nb.cells if c.cell_type == "code"
                      and c.metadata.get("nbgrader", {}).get("solution")
                      and c.metadata["nbgrader"]["grade_id"].startswith("ex")}
    assert code_exercises == set(WRONG[lab]), code_exercises ^ set(WRONG[lab])


DEEPENED = [lab for lab in sorted(WRONG)  # labs with a graded target: the full lab standard
            if any(c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("target")
                   for c in nbformat.read(REPO / "notebooks" / lab / f"{lab}.ipynb", 4).cells)]


@pytest.mark.parametrize("lab", DEEPENED)
def test_the_points_the_lab_announces_are_the_points_it_grades(lab):
    import re
    nb = nbformat.read(REPO / "notebooks" / lab / f"{lab}.ipynb", 4)
    graded = [c.metadata["nbgrader"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    exercises = [g for g in graded if g["grade_id"].startswith("ex")]
    words = {"five": 5, "six": 6, "seven": 7, "eight": 8}
    m = re.search(r"\*\*Graded:\*\* (\w+) exercises \((\d+) points\), one measured target \((\d+) points.*?"
                  r"one\s+written\s+answer.*?\((\d+) points", nb.cells[0].source, re.S)
    assert m, "the lab's first cell says what is graded: N exercises (P points), a target, a written answer"
    n, p, target, answer = words[m.group(1)], *map(int, m.groups()[1:])
    assert (n, p) == (len(exercises), sum(g["points"] for g in exercises))
    assert target == sum(g["points"] for g in graded if g["grade_id"].startswith("target"))
    assert answer == sum(g["points"] for g in graded if g["grade_id"].startswith("answer"))
    assert 5 <= n <= 8, "the lab standard: 5 to 8 graded exercises"

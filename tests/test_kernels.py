"""labkit.kernels against their PyTorch references: fresh random inputs, awkward shapes, per-dtype
tolerances. Without a GPU every kernel runs in Triton's interpreter; with one, compiled."""
import os

import pytest
import torch

from labkit import kernels as K

DEV = K.DEVICE
# (atol, rtol) per dtype: fp16 has a 10-bit mantissa, so ~1e-3 relative is its resolution
TOL = {torch.float32: (1e-6, 1e-5), torch.float16: (2e-3, 2e-3)}
DTYPES = [torch.float32, torch.float16]


def test_mode_matches_the_machine():
    assert K.INTERPRETED == (not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
                             or os.environ.get("LABKIT_DEVICE", "auto").startswith("cpu"))
    if K.INTERPRETED:
        assert os.environ["TRITON_INTERPRET"] == "1" and DEV == "cpu"


@pytest.mark.parametrize("shape", [(1,), (1000,), (4097,), (3, 5, 7)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_add(shape, dtype):
    x, y = torch.randn(shape, device=DEV, dtype=dtype), torch.randn(shape, device=DEV, dtype=dtype)
    torch.testing.assert_close(K.add(x, y), x + y, atol=0, rtol=0)  # one rounding, same as torch's
    torch.testing.assert_close(K.add(x, y, block=64), x + y, atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (3, 1000), (64, 33), (2, 3, 17)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax(shape, dtype):
    x = (torch.randn(shape, device=DEV) * 8).to(dtype)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(K.softmax(x), torch.softmax(x.float(), -1).to(dtype), atol=atol, rtol=rtol)


@pytest.mark.parametrize("n_cols", [1, 63, 64, 65, 300])
def test_softmax_online_kernel_any_row_length(n_cols):
    x = torch.randn(4, n_cols, device=DEV) * 5
    torch.testing.assert_close(K.softmax(x, online_block=64), torch.softmax(x, -1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("online_block", [None, 16])
def test_softmax_is_numerically_stable(online_block):
    x = torch.tensor([[1000.0, 999.0, -1000.0], [-float("inf"), 0.0, 88.0], [3e4, 3e4, 3e4]], device=DEV)
    y = K.softmax(x, online_block=online_block)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x, -1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (2, 3, 129)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gelu(shape, dtype):
    x = torch.randn(shape, device=DEV, dtype=dtype) * 3
    b = torch.randn(shape[-1], device=DEV, dtype=dtype)
    ref = K.bias_gelu_reference(x.float(), b.float()).to(dtype)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(K.bias_gelu(x, b), ref, atol=max(atol, 1e-5), rtol=rtol)


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 200, 1), (65, 33, 17), (128, 64, 96), (40, 100, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul(m, k, n, dtype):
    a, b = torch.randn(m, k, device=DEV, dtype=dtype), torch.randn(k, n, device=DEV, dtype=dtype)
    ref = (a.double() @ b.double())
    scale = k ** 0.5  # the sum of k products: its rounding error grows like sqrt(k)
    atol = {torch.float32: 1e-5, torch.float16: 2e-3}[dtype] * scale  # fp32 accumulate, then one rounding
    out = K.matmul(a, b)
    assert out.dtype == dtype and out.shape == (m, n)
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=2e-3 if dtype == torch.float16 else 1e-5)


def test_matmul_fixed_tiles_and_transposed_input():
    a = torch.randn(48, 80, device=DEV)
    b = torch.randn(50, 80, device=DEV).t()  # non-contiguous: strides are passed through
    torch.testing.assert_close(K.matmul(a, b, block=(16, 32, 16)), a @ b, atol=1e-4, rtol=1e-5)


def test_bad_input_is_a_clear_error():
    x = torch.randn(8, device=DEV)
    with pytest.raises(ValueError, match="same shape"):
        K.add(x, torch.randn(9, device=DEV))
    with pytest.raises(ValueError, match="same dtype"):
        K.add(x, x.half())
    with pytest.raises(ValueError, match="dtype torch.float64"):
        K.softmax(x.double())
    with pytest.raises(ValueError, match="dtype torch.int32"):
        K.add(x.int(), x.int())
    with pytest.raises(ValueError, match="is on meta"):
        K.softmax(torch.empty(4, device="meta"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        K.softmax([1.0, 2.0])
    with pytest.raises(ValueError, match="columns must equal"):
        K.matmul(torch.randn(3, 4, device=DEV), torch.randn(5, 6, device=DEV))
    with pytest.raises(ValueError, match="2 dimensions"):
        K.matmul(torch.randn(3, 4, 5, device=DEV), torch.randn(5, 6, device=DEV))
    with pytest.raises(ValueError, match="bias must have shape"):
        K.bias_gelu(torch.randn(3, 4, device=DEV), torch.randn(5, device=DEV))
    with pytest.raises(ValueError, match="empty"):
        K.softmax(torch.empty(0, 3, device=DEV))
    with pytest.raises(ValueError, match="power of two"):
        K.add(x, x, block=100)
    if K.INTERPRETED:
        with pytest.raises(ValueError, match="bfloat16"):
            K.matmul(x.view(2, 4).bfloat16(), x.view(4, 2).bfloat16())


@pytest.mark.gpu
def test_compiled_kernels_at_scale():
    x = torch.randn(4096, 8192, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(K.softmax(x), torch.softmax(x.float(), -1).half(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(K.softmax(x[:, :3000].float(), online_block=1024), torch.softmax(x[:, :3000].float(), -1))
    a, b = torch.randn(4096, 4096, device="cuda", dtype=torch.float16), torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(K.matmul(a, b).float(), (a.float() @ b.float()), atol=0.25, rtol=2e-2)
    bias = torch.randn(8192, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(K.bias_gelu(x, bias), K.bias_gelu_reference(x.float(), bias.float()).half(), atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter switch matters only without a GPU")
def test_late_interpreter_switch_is_a_clear_error():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import torch.utils.flop_counter\nimport labkit.kernels"  # the flop counter imports triton first
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Import labkit before anything that imports triton" in p.stderr
    ok = subprocess.run([sys.executable, "-c", "import labkit, transformers, labkit.kernels"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr


def test_a_tile_the_gpu_cannot_run_is_refused_before_launch_naming_the_limit():
    a100 = dict(shared_limit=163 * 1024)
    with pytest.raises(ValueError, match="needs at least 192 KiB of shared memory .* allows 163 KiB"):
        K.check_tile((128, 256, 64), 4, warps=8, stages=3, **a100)   # fp32: the launch would fail
    K.check_tile((128, 256, 64), 2, warps=8, stages=3, **a100)       # the same tile in fp16 fits
    with pytest.raises(ValueError, match="256 fp32 accumulators per thread"):
        K.check_tile((256, 256, 32), 2, warps=8, stages=3, **a100)
    with pytest.warns(UserWarning, match="spills registers"):
        K.check_tile((128, 256, 32), 4, warps=8, stages=3, **a100)
    assert K.tile_shared_bytes((128, 128, 64), 2, 4) == 96 * 1024  # 3 buffers of A and B tiles, fp16


def test_autotune_configs_are_chosen_per_element_size():
    fp32 = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in K.matmul_configs("fp32")}
    assert (128, 256, 64) not in fp32 and (128, 256, 64) in {
        (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in K.matmul_configs(torch.float16)}
    with pytest.raises(ValueError, match="dtype must be fp32, fp16 or bf16"):
        K.matmul_configs("int8")


@pytest.mark.skipif(not K.INTERPRETED, reason="traffic is counted by Triton's interpreter")
def test_count_traffic_counts_every_masked_in_element_once():
    x = torch.randn(5, 300, device=DEV)
    with K.count_traffic() as t:
        K.softmax(x)
    assert (t.read, t.written) == (x.numel() * 4, x.numel() * 4)           # masked lanes not counted
    with K.count_traffic() as t:
        K.softmax(x.half(), online_block=64)
    assert (t.read, t.written) == (2 * x.numel() * 2, x.numel() * 2)       # two passes, 2-byte elements
    a, b = torch.randn(100, 70, device=DEV), torch.randn(70, 90, device=DEV)
    with K.count_traffic() as t:
        K.matmul(a, b, block=(32, 64, 16))
    assert t.total == (100 * 70 * 2 + 70 * 90 * 4 + 100 * 90) * 4          # A per column of tiles, B per row
    x, bias = torch.randn(8, 64, device=DEV), torch.randn(64, device=DEV)
    with K.count_traffic() as fused:
        K.bias_gelu(x, bias)
    with K.count_traffic() as unfused:
        y = K.bias_gelu_unfused(x, bias)
    torch.testing.assert_close(y, K.bias_gelu_reference(x, bias), atol=1e-5, rtol=1e-5)
    assert (fused.total, unfused.total) == (3 * x.numel() * 4, 5 * x.numel() * 4)
    with K.count_traffic() as t:
        pass
    assert t.total == 0  # nothing counted outside, and the interpreter is restored after
    K.add(x, x)


def test_without_triton_the_import_says_what_to_do():
    import subprocess
    import sys
    code = ("import sys, builtins\nreal = builtins.__import__\n"
            "def imp(name, *a, **k):\n    if name == 'triton' or name.startswith('triton.'):\n"
            "        raise ImportError('No module named triton')\n    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\nimport labkit, labkit.flops\nprint('rest of labkit imports')\nimport labkit.kernels")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "rest of labkit imports" in p.stdout and p.returncode != 0
    assert "Triton publishes wheels for Linux" in p.stderr and "WSL2" in p.stderr, p.stderr[-2000:]

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

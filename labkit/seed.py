"""One seeding call for the whole kit: Python, NumPy and torch (CPU and every GPU)."""
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> int:
    """Seed every random number generator the labs use, and return the seed.

    Same seed, same machine, same versions: same random inputs. (GPU kernels may still
    differ in the last bits between runs: floating-point sums are not associative.)
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed

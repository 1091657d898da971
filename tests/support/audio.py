"""Test audio: a deterministic chirp that exercises every mel band and the log floor."""

import numpy as np

RATE = 16000


def chirp_signal(seed=0):
    """A chirp plus noise with a quiet start: exercises every mel band and the log floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    x = 0.4 * np.sin(2 * np.pi * (100 * t + 1900 * t * t)) + 0.05 * rng.standard_normal(RATE)
    x[:2000] *= 1e-4
    return x.astype(np.float32)

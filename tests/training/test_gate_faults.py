"""The gate's synthetic faults: one in each window, of the kinds in turn."""

from __future__ import annotations

import numpy as np

from aestream.training.gate import FAULT_KINDS, inject_faults


def test_each_window_gets_one_fault_and_a_decoupled_channel_comes_from_a_clean_window() -> None:
    rng = np.random.default_rng(3)
    clean = rng.normal(size=(80, 8, 3))
    faulted = inject_faults(clean, seed=1)
    changed = (faulted != clean).any(axis=1)  # (N, C): which channels each fault touched
    assert changed.sum(axis=1).tolist() == [1] * len(clean), "one channel of each window"
    decoupled = [i for i in range(len(clean)) if FAULT_KINDS[i % len(FAULT_KINDS)] == "decoupling"]
    for i in decoupled:
        ch = int(np.flatnonzero(changed[i])[0])
        sources = [j for j in range(len(clean)) if np.allclose(faulted[i, :, ch], clean[j, ::-1, ch])]
        assert sources, f"window {i}'s channel {ch} is not another clean window's: it carries a second fault"

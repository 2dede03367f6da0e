"""Per-file PNG plots of a SKAB evaluation: score, threshold, true anomaly span and predictions.

Needs matplotlib (``pip install aestream[report]``); imported only when plots are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from aestream.commands.evaluate.skab import FileResult

__all__ = ["plot_results"]


def plot_results(results: Sequence[FileResult], out_dir: str | Path) -> list[Path]:
    """Write ``<name>.png`` per file into ``out_dir``; the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'aestream[report]'") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        fig, ax = plt.subplots(figsize=(12, 3.5))
        span = ax.get_xaxis_transform()  # x in data, y in axes fraction
        ax.plot(r.times, np.maximum(r.scores, 1e-6), lw=0.8, color="tab:blue", label="score")
        ax.axhline(r.threshold, color="tab:red", ls="--", lw=1, label=f"threshold {r.threshold:.3g}")
        ax.fill_between(r.times, 0, 1, where=r.anomaly == 1, color="tab:orange", alpha=0.2, step="mid",
                        transform=span, label="true anomaly")
        ax.fill_between(r.times, 0, 0.06, where=r.pred == 1, color="tab:red", alpha=0.7, step="mid",
                        transform=span, label="predicted")
        for t in r.times[r.changepoint == 1]:
            ax.axvline(t, color="k", lw=0.6, alpha=0.5)
        ax.set_yscale("log")
        ax.set_title(f"SKAB {r.name}")
        ax.legend(loc="upper left", fontsize=7)
        fig.tight_layout()
        path = out / f"{r.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)  # "valve1/0" of the SKAB root
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written

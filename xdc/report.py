"""Per-round artifacts: the assignments table and a diagnostics plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_assignments(path: Path, videos: list, assignments: dict[str, np.ndarray], classes: list[str]) -> Path:
    """CSV with one row per video: its path, its cluster in each space (-1: features failed) and its label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spaces = list(assignments)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *[f"cluster_{s}" for s in spaces], "label"])
        for row, video in enumerate(videos):
            label = classes[video.label] if classes and video.label >= 0 else ""
            writer.writerow([video.path, *[int(assignments[s][row]) for s in spaces], label])
    return path


def write_round_plot(path: Path, assignments: dict[str, np.ndarray], round_index: int,
                     metrics: dict[str, float]) -> Path:
    """Cluster-size profile per space and, with two or more spaces, the contingency of the first two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(assignments)
    panels = len(spaces) + (1 if len(spaces) >= 2 else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    for axis, space in zip(axes[0], spaces):
        labels = assignments[space]
        sizes = np.sort(np.bincount(labels[labels >= 0]))[::-1]
        axis.bar(np.arange(len(sizes)), sizes, color="#4c72b0")
        axis.set_title(f"{space} clusters (entropy {metrics.get(f'entropy_{space}', 0):.2f})")
        axis.set_xlabel("cluster (by size)")
        axis.set_ylabel("videos")
    if len(spaces) >= 2:
        a, b = assignments[spaces[0]], assignments[spaces[1]]
        valid = (a >= 0) & (b >= 0)
        table = np.zeros((a.max() + 1, b.max() + 1))
        np.add.at(table, (a[valid], b[valid]), 1)
        axis = axes[0][-1]
        axis.imshow(table, aspect="auto", cmap="viridis")
        axis.set_title(f"{spaces[0]} x {spaces[1]} (NMI {metrics.get(f'nmi_{spaces[0]}_{spaces[1]}', 0):.2f})")
        axis.set_xlabel(f"{spaces[1]} cluster")
        axis.set_ylabel(f"{spaces[0]} cluster")
    fig.suptitle(f"round {round_index + 1}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

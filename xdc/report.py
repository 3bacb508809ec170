"""Per-round artifacts: the assignments table and a diagnostics plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from xdc.data.factors import NO_FACTORS, Factors


def write_assignments(path: Path, videos: list, assignments: dict[str, np.ndarray], classes: list[str],
                      factors: Factors = NO_FACTORS) -> Path:
    """CSV with one row per video: its path, its cluster in each space (-1: features failed), its label and its
    known nuisance factors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spaces = list(assignments)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *[f"cluster_{s}" for s in spaces], "label", *factors.codes])
        for row, video in enumerate(videos):
            label = classes[video.label] if classes and video.label >= 0 else ""
            known = [factors.values[name][codes[row]] if codes[row] >= 0 else ""
                     for name, codes in factors.codes.items()]
            writer.writerow([video.path, *[int(assignments[s][row]) for s in spaces], label, *known])
    return path


def head_fit(head: str, fit: float, ceiling: float | None) -> str:
    """'video←audio 0.17 of 0.30': a head's top-1 on its cluster targets and, where the data is labelled, what a
    perfect class recogniser would score on the same targets."""
    text = f"{head.replace('_from_', '←')} {fit:.2f}"
    return text if ceiling is None else f"{text} of {ceiling:.2f}"


def followed(metrics: dict[str, float], space: str) -> dict[str, float]:
    """What a space's clusters follow: NMI with the labels and with each factor, from a round's diagnostics."""
    prefix, suffix = "nmi_", f"_{space}"
    return {key[len(prefix):-len(suffix)].removeprefix("factor_"): value for key, value in metrics.items()
            if key.startswith(prefix) and key.endswith(suffix)
            and (key.startswith("nmi_labels_") or key.startswith("nmi_factor_"))}


def write_round_plot(path: Path, assignments: dict[str, np.ndarray], round_index: int,
                     metrics: dict[str, float]) -> Path:
    """Cluster-size profile per space and, with two or more spaces, the contingency of the first two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(assignments)
    follows = {space: followed(metrics, space) for space in spaces}
    show_follows = any(follows.values())
    panels = len(spaces) + (1 if len(spaces) >= 2 else 0) + (1 if show_follows else 0)
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
        axis = axes[0][len(spaces)]
        axis.imshow(table, aspect="auto", cmap="viridis")
        axis.set_title(f"{spaces[0]} x {spaces[1]} (NMI {metrics.get(f'nmi_{spaces[0]}_{spaces[1]}', 0):.2f})")
        axis.set_xlabel(f"{spaces[1]} cluster")
        axis.set_ylabel(f"{spaces[0]} cluster")
    if show_follows:
        _plot_follows(axes[0][-1], follows)
    fig.suptitle(f"round {round_index + 1}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plot_follows(axis, follows: dict[str, dict[str, float]]) -> None:
    """Grouped bars: per known truth (labels, each factor), the NMI of each space's clusters with it."""
    names = list(dict.fromkeys(name for values in follows.values() for name in values))
    width = 0.8 / max(1, len(follows))
    for offset, (space, values) in enumerate(follows.items()):
        axis.bar(np.arange(len(names)) + offset * width, [values.get(n, 0.0) for n in names], width, label=space)
    axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    axis.set_ylabel("NMI")
    axis.set_title("what the clusters follow")
    axis.legend(fontsize=7)

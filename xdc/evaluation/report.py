"""Result artifacts: result.json, the per-class table and the confusion-matrix plot, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_result(path: Path, record: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(record, indent=2, sort_keys=False) + "\n")


def write_per_class(path: Path, record: dict[str, Any]) -> Path:
    """class, test files, accuracy (or recall@1), one row per class of the benchmark."""
    confusion = record.get("confusion")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "test_files", "accuracy"])
    for index, name in enumerate(record["dataset"]["classes"]):
        count = sum(confusion[index]) if confusion else ""
        value = record["per_class"].get(name)
        writer.writerow([name, count, "" if value is None else f"{value:.6f}"])
    return write_text_atomic(path, buffer.getvalue())


def write_confusion_plot(path: Path, record: dict[str, Any]) -> Path | None:
    """A row-normalised confusion matrix as PNG; None when the protocol has none (retrieval)."""
    if not record.get("confusion"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(record["confusion"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = record["dataset"]["classes"]
    size = min(4 + 0.25 * len(names), 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names)) if len(names) <= 60 else []
    ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    metrics = record["metrics"]
    ax.set_title(f"{record['benchmark']} split {record['split']}, {record['protocol']['name']} "
                 f"v{record['protocol']['version']}: top-1 {metrics.get('top1', float('nan')):.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path

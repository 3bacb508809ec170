"""Evaluation metrics as pure functions on numpy arrays."""

from __future__ import annotations

import numpy as np


def average_by_owner(scores: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Mean of clip rows per file. scores: N x C, owners: N file indices -> count x C (zeros for a file with no
    clip, whose prediction is then class 0 and counts as whatever that is)."""
    sums = np.zeros((count, scores.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, scores)
    seen = np.bincount(owners, minlength=count)[:, None]
    return sums / np.maximum(seen, 1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest scores. scores: N x C, labels: N."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # N x k
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts; rows are true classes, columns predicted ones."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class_accuracy(confusion: np.ndarray, names: list[str]) -> dict[str, float]:
    """Accuracy of each class present in the test data (classes without test items are left out)."""
    totals = confusion.sum(axis=1)
    return {names[c]: float(confusion[c, c] / totals[c]) for c in range(len(names)) if totals[c]}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """top-1/top-5, per-class accuracy and the confusion matrix of file-level scores (N x C) against labels (N)."""
    predicted = np.argmax(scores, axis=1)
    confusion = confusion_matrix(labels, predicted, len(names))
    return {
        "metrics": {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5)},
        "per_class": per_class_accuracy(confusion, names),
        "confusion": confusion.tolist(),
    }


def recall_at_k(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                ks: tuple[int, ...]) -> tuple[dict[str, float], np.ndarray]:
    """Cosine nearest neighbours of each query among the gallery (exact faiss search on L2-normalised rows).

    Returns {"recall@k": share of queries with a same-class item in their top k} and the per-query hit at k=1.
    """
    import faiss

    depth = min(max(ks), len(gallery))
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(_unit_rows(gallery))
    _, neighbours = index.search(_unit_rows(queries), depth)  # Q x depth gallery indices
    same = gallery_labels[neighbours] == query_labels[:, None]  # Q x depth
    recalls = {f"recall@{k}": float(same[:, :min(k, depth)].any(axis=1).mean()) for k in ks}
    return recalls, same[:, 0]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

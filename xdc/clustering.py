"""Clustering of features into pseudo-labels, following DeepCluster (Caron et al., ECCV 2018).

features -> PCA-whitening -> L2 normalisation -> faiss k-means -> assignments, with empty clusters split, sampling
weights uniform over clusters, and per-round diagnostics. Features may be memory-mapped arrays: PCA is fitted on a
bounded sample and every pass over the rows goes in chunks, so host memory stays bounded for any dataset size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

CHUNK_ROWS = 65536
PCA_SAMPLE_ROWS = 200_000
VARIANCE_FLOOR = 1e-6  # components below this fraction of the largest variance carry no signal


@dataclass
class Clustering:
    assignments: np.ndarray  # N, int64 in [0, k)
    centroids: np.ndarray  # k x d'
    objective: float

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=len(self.centroids))


def cluster_features(features: np.ndarray, *, k: int, iterations: int = 20, pca_dim: int = 128,
                     whiten: bool = True, seed: int = 0, redo: int = 1, scratch: Path | None = None) -> Clustering:
    """k-means on preprocessed features (N x D, float32, possibly a memmap); no cluster is left empty.

    With `scratch`, the preprocessed rows are memory-mapped to that file instead of held in memory.
    """
    n = len(features)
    if n < k:
        raise ValueError(f"cannot make {k} clusters from {n} samples")
    data = preprocess(features, pca_dim=pca_dim, whiten=whiten, seed=seed, out_path=scratch)  # N x d'
    kmeans = faiss.Kmeans(data.shape[1], k, niter=iterations, seed=seed, nredo=redo, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1024)
    kmeans.train(data)
    centroids = kmeans.centroids.copy()
    assignments = _assign(data, centroids)
    centroids, assignments = split_empty_clusters(data, centroids, assignments, seed=seed)
    objective = float(kmeans.obj[-1]) if len(kmeans.obj) else 0.0
    return Clustering(assignments, centroids, objective)


def preprocess(features: np.ndarray, *, pca_dim: int, whiten: bool, seed: int = 0,
               out_path: Path | None = None) -> np.ndarray:
    """PCA to at most `pca_dim` dims (whitened when asked: each component scaled by 1/sqrt(its variance)), then
    L2-normalise rows. Directions without variance are dropped rather than divided by ~0, so a rank-deficient sample
    (fewer rows than dims, collapsed features early in training) never turns into NaN."""
    n, dim = features.shape
    projection = _fit_pca(_sample_rows(features, PCA_SAMPLE_ROWS, seed), pca_dim, whiten) if pca_dim else None
    out_dim = projection[1].shape[1] if projection else dim
    shape = (n, out_dim)
    out = (np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape) if out_path
           else np.empty(shape, dtype=np.float32))
    for begin in range(0, n, CHUNK_ROWS):
        chunk = np.asarray(features[begin:begin + CHUNK_ROWS], dtype=np.float32)
        if not np.isfinite(chunk).all():
            raise ValueError("features contain NaN or infinite values")
        if projection:
            mean, matrix = projection
            chunk = (chunk - mean) @ matrix
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        faiss.normalize_L2(chunk)
        out[begin:begin + len(chunk)] = chunk
    return out


def _fit_pca(sample: np.ndarray, pca_dim: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, D x d' projection) from the eigenvectors of the sample covariance with non-negligible variance."""
    sample = np.asarray(sample, dtype=np.float64)
    mean = sample.mean(axis=0)
    centered = sample - mean
    covariance = centered.T @ centered / max(1, len(sample) - 1)
    variances, vectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(variances)[::-1]
    variances, vectors = variances[order], vectors[:, order]
    keep = variances > max(variances[0], 0.0) * VARIANCE_FLOOR
    count = max(1, min(pca_dim, int(keep.sum())))
    matrix = vectors[:, :count]
    if whiten:
        matrix = matrix / np.sqrt(np.maximum(variances[:count], np.finfo(np.float64).tiny))
    return mean.astype(np.float32), matrix.astype(np.float32)


def split_empty_clusters(data: np.ndarray, centroids: np.ndarray, assignments: np.ndarray, *,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Give every empty cluster half of the largest one: its centroid becomes a perturbed copy of the largest
    cluster's centroid (and that centroid is perturbed the other way), then the members are re-split between the two.
    """
    rng = np.random.default_rng(seed)
    centroids = centroids.copy()
    assignments = assignments.copy()
    k = len(centroids)
    for _ in range(k):
        sizes = np.bincount(assignments, minlength=k)
        empty = np.flatnonzero(sizes == 0)
        if not len(empty) or sizes.max() < 2:
            break
        target, largest = int(empty[0]), int(np.argmax(sizes))
        members = np.flatnonzero(assignments == largest)
        noise = rng.normal(scale=1e-4, size=centroids.shape[1]).astype(np.float32)
        centroids[target] = centroids[largest] + noise
        centroids[largest] = centroids[largest] - noise
        pair = centroids[[largest, target]]
        nearest = np.argmax(data[members] @ pair.T, axis=1)
        if nearest.min() == nearest.max():  # identical points: split them by index instead
            nearest = np.arange(len(members)) % 2
        assignments[members] = np.where(nearest == 1, target, largest)
    return centroids, assignments


def uniform_weights(assignments: list[np.ndarray]) -> np.ndarray:
    """Per-sample probabilities that make every cluster of every clustering equally likely to be drawn.

    With several clusterings (e.g. XDC's audio and video ones) the per-clustering distributions are averaged.
    """
    total = np.zeros(len(assignments[0]), dtype=np.float64)
    for labels in assignments:
        valid = labels >= 0
        sizes = np.bincount(labels[valid])
        nonempty = np.count_nonzero(sizes)
        weights = np.zeros(len(labels), dtype=np.float64)
        weights[valid] = 1.0 / (nonempty * sizes[labels[valid]])
        total += weights
    return total / total.sum()


def diagnostics(assignments: dict[str, np.ndarray], *, previous: dict[str, np.ndarray] | None = None,
                labels: np.ndarray | None = None, factors: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per-round cluster quality: agreement between modalities, stability across rounds, balance, and (when the
    data has labels) NMI and purity against them; the same against each known nuisance factor (`factors`: name ->
    N codes), which tells whether a clustering follows the class or a nuisance. `assignments` maps a space to N
    labels; -1 marks missing rows (in assignments, labels and factors alike)."""
    metrics: dict[str, float] = {}
    spaces = list(assignments)
    for i, a in enumerate(spaces):
        for b in spaces[i + 1:]:
            metrics[f"nmi_{a}_{b}"] = _nmi(assignments[a], assignments[b])
    known = {"labels": labels} if labels is not None and (labels >= 0).any() else {}
    known.update({f"factor_{name}": codes for name, codes in (factors or {}).items() if (codes >= 0).any()})
    for space, labels_now in assignments.items():
        sizes = np.bincount(labels_now[labels_now >= 0])
        share = sizes / max(1, sizes.sum())
        nonzero = share[share > 0]
        metrics[f"entropy_{space}"] = float(-(nonzero * np.log(nonzero)).sum() / np.log(max(2, len(sizes))))
        metrics[f"largest_share_{space}"] = float(share.max()) if len(share) else 0.0
        metrics[f"nonempty_{space}"] = float(len(nonzero))
        if previous is not None and space in previous:
            metrics[f"stability_{space}"] = _nmi(labels_now, previous[space])
        for name, truth in known.items():
            metrics[f"nmi_{name}_{space}"] = _nmi(labels_now, truth)
            metrics[f"purity_{name}_{space}"] = purity(labels_now, truth)
    return metrics


def purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose cluster's majority label is their own label."""
    table = _contingency(assignments, labels)
    return float(table.max(axis=1).sum() / table.sum()) if table.size else 0.0


def class_ceiling(assignments: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The top-1 on these cluster targets of a perfect class recogniser: one that answers each class's most
    frequent cluster. A head that predicts the clusters from what the class looks or sounds like can reach this and
    no more; a head above it has learnt something else (a nuisance the clusters follow, or the clips themselves).
    `weights` (N, summing to anything) are the samples' training probabilities, so the ceiling compares with a
    head's fit on the clips it was trained on."""
    table = _contingency(assignments, labels, weights)
    return float(table.max(axis=0).sum() / table.sum()) if table.size and table.sum() > 0 else 0.0


def _contingency(assignments: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Clusters x labels table of (weighted) counts over the rows where both are known."""
    valid = (assignments >= 0) & (labels >= 0)
    a, y = assignments[valid], labels[valid]
    if not len(a):
        return np.zeros((0, 0))
    table = np.zeros((a.max() + 1, y.max() + 1), dtype=np.float64)
    np.add.at(table, (a, y), 1.0 if weights is None else weights[valid])
    return table


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    valid = (a >= 0) & (b >= 0)
    return float(normalized_mutual_info_score(a[valid], b[valid])) if valid.any() else 0.0


def _assign(data: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    out = np.empty(len(data), dtype=np.int64)
    for begin in range(0, len(data), CHUNK_ROWS):
        _, nearest = index.search(data[begin:begin + CHUNK_ROWS], 1)
        out[begin:begin + CHUNK_ROWS] = nearest[:, 0]
    return out


def _sample_rows(features: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(features) <= limit:
        return np.ascontiguousarray(features, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(features), size=limit, replace=False))
    return np.ascontiguousarray(features[rows], dtype=np.float32)

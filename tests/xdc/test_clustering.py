"""DeepCluster-style clustering: blobs are recovered, no cluster stays empty, sampling is uniform over clusters,
and the per-round diagnostics mean what they say."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from xdc.clustering import (class_ceiling, cluster_features, diagnostics, preprocess, purity, split_empty_clusters,
                            uniform_weights)


def blobs(*, seed: int = 0, classes: int = 5, per_class: int = 60, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs: N x dim float32 features and their N true labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3.0  # classes x dim
    truth = rng.permutation(np.repeat(np.arange(classes), per_class))  # N
    features = centers[truth] + rng.normal(size=(len(truth), dim)) * 0.5  # N x dim
    return features.astype(np.float32), truth


def with_duplicates(*, seed: int = 0) -> np.ndarray:
    """20 identical rows and 20 random ones: k-means leaves clusters empty when k nears N."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.ones((20, 8)), rng.normal(size=(20, 8))]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# cluster_features


def test_it_recovers_separable_blobs():
    features, truth = blobs()
    result = cluster_features(features, k=5, iterations=20, pca_dim=16, whiten=True, seed=0, redo=3)
    assert normalized_mutual_info_score(truth, result.assignments) > 0.9
    assert result.assignments.shape == (len(features),)
    assert result.centroids.shape == (5, 16)
    assert result.sizes.sum() == len(features)
    assert np.isfinite(result.objective)


def test_it_is_deterministic_for_a_seed():
    features, _ = blobs(seed=1)
    first = cluster_features(features, k=5, pca_dim=16, seed=3)
    second = cluster_features(features, k=5, pca_dim=16, seed=3)
    np.testing.assert_array_equal(first.assignments, second.assignments)


@pytest.mark.parametrize("k", [30, 38, 40])
def test_it_leaves_no_cluster_empty_even_when_k_nears_n(k):
    result = cluster_features(with_duplicates(), k=k, pca_dim=4, seed=0)
    assert result.sizes.min() >= 1
    assert set(result.assignments.tolist()) == set(range(k))
    assert result.centroids.shape[0] == k


def test_it_refuses_more_clusters_than_samples():
    with pytest.raises(ValueError, match="cannot make 41 clusters from 40 samples"):
        cluster_features(with_duplicates(), k=41)


def test_it_clusters_through_a_scratch_memmap_with_the_same_result(tmp_path):
    features, truth = blobs(seed=2)
    source = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float32,
                                       shape=features.shape)
    source[:] = features
    scratch = tmp_path / "preprocessed.npy"
    in_memory = cluster_features(features, k=5, pca_dim=16, seed=0, redo=3)
    mapped = cluster_features(source, k=5, pca_dim=16, seed=0, redo=3, scratch=scratch)
    assert scratch.is_file()
    assert np.load(scratch, mmap_mode="r").shape == (len(features), 16)
    np.testing.assert_array_equal(mapped.assignments, in_memory.assignments)
    assert normalized_mutual_info_score(truth, mapped.assignments) > 0.9


# ---------------------------------------------------------------------------------------------------------
# preprocess


@pytest.mark.parametrize("pca_dim, whiten, expected_dim", [(8, True, 8), (8, False, 8), (64, True, 32), (32, False, 32)])
def test_preprocess_gives_unit_rows_of_min_pca_dim_and_d(pca_dim, whiten, expected_dim):
    features, _ = blobs(dim=32)
    out = preprocess(features, pca_dim=pca_dim, whiten=whiten, seed=0)
    assert out.shape == (len(features), expected_dim)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_preprocess_without_pca_only_normalises():
    features, _ = blobs(dim=12)
    out = preprocess(features, pca_dim=0, whiten=False)
    np.testing.assert_allclose(out, features / np.linalg.norm(features, axis=1, keepdims=True), rtol=1e-5)


def test_preprocess_whitening_equalises_the_kept_components():
    rng = np.random.default_rng(4)
    features = (rng.normal(size=(2000, 6)) * [10.0, 5.0, 1.0, 0.5, 0.1, 0.05]).astype(np.float32)
    unit = preprocess(features, pca_dim=2, whiten=True)
    # Whitened top-2 components are equally spread, so after L2-normalisation the angle is uniform-ish, not axis-bound.
    assert abs(np.mean(unit[:, 0] ** 2) - 0.5) < 0.05


def test_preprocess_drops_directions_without_variance_instead_of_dividing_by_zero():
    # 12 rows in 64 dims (rank <= 11), as in an early round on a small dataset: whitening must stay finite
    features = np.random.default_rng(0).normal(size=(12, 64)).astype(np.float32)
    out = preprocess(features, pca_dim=32, whiten=True)
    assert np.isfinite(out).all()
    assert out.shape[1] <= 11
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_collapsed_features_still_cluster_without_nan():
    features = np.zeros((30, 16), dtype=np.float32)
    features[:, 0] = np.repeat([0.0, 1.0, 2.0], 10)  # one informative direction, the rest constant
    result = cluster_features(features, k=3, iterations=10, pca_dim=8, whiten=True, seed=0)
    assert np.isfinite(result.centroids).all()
    assert normalized_mutual_info_score(np.repeat([0, 1, 2], 10), result.assignments) > 0.99


def test_non_finite_features_are_refused():
    features, _ = blobs()
    features[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        cluster_features(features, k=5, pca_dim=16)


def test_preprocess_writes_to_a_memmap(tmp_path):
    features, _ = blobs()
    out = preprocess(features, pca_dim=8, whiten=True, out_path=tmp_path / "rows.npy")
    assert isinstance(out, np.memmap)
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), preprocess(features, pca_dim=8, whiten=True))


# ---------------------------------------------------------------------------------------------------------
# split_empty_clusters


def test_split_gives_an_empty_cluster_half_of_the_largest():
    rng = np.random.default_rng(0)
    # Cluster 0 holds two sub-groups (left and right of x=1); cluster 1 is far away; cluster 2 is empty.
    left = np.array([1.0, -1.0]) + rng.normal(scale=0.01, size=(3, 2))
    right = np.array([1.0, 1.0]) + rng.normal(scale=0.01, size=(3, 2))
    far = np.array([-5.0, 0.0]) + rng.normal(scale=0.01, size=(2, 2))
    data = np.concatenate([left, right, far]).astype(np.float32)  # 8 x 2
    centroids = np.array([[1.0, 0.0], [-5.0, 0.0], [9.0, 9.0]], dtype=np.float32)
    assignments = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    new_centroids, new_assignments = split_empty_clusters(data, centroids, assignments, seed=0)
    assert np.bincount(new_assignments, minlength=3).min() >= 1
    np.testing.assert_array_equal(new_assignments[6:], [1, 1])  # untouched clusters keep their members
    assert set(new_assignments[:6].tolist()) == {0, 2}
    assert np.abs(new_centroids[2] - centroids[0]).max() < 1e-3  # the empty centroid moved next to the largest
    np.testing.assert_array_equal(assignments, [0, 0, 0, 0, 0, 0, 1, 1])  # inputs are not modified


def test_split_separates_identical_points_by_index():
    data = np.ones((6, 3), dtype=np.float32)
    centroids = np.ones((3, 3), dtype=np.float32)
    _, assignments = split_empty_clusters(data, centroids, np.zeros(6, dtype=np.int64), seed=0)
    assert np.bincount(assignments, minlength=3).min() >= 1


def test_split_leaves_full_clusterings_alone():
    data = np.eye(3, dtype=np.float32)
    centroids = np.eye(3, dtype=np.float32)
    assignments = np.array([0, 1, 2])
    new_centroids, new_assignments = split_empty_clusters(data, centroids, assignments)
    np.testing.assert_array_equal(new_assignments, assignments)
    np.testing.assert_array_equal(new_centroids, centroids)


# ---------------------------------------------------------------------------------------------------------
# uniform_weights


def cluster_mass(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels[labels >= 0], weights=weights[labels >= 0])


def test_uniform_weights_give_every_cluster_the_same_mass():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    weights = uniform_weights([labels])
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(cluster_mass(weights, labels), [1 / 3] * 3)
    assert weights[8] == pytest.approx(6 * weights[0])  # a singleton is drawn as often as six crowded members


def test_uniform_weights_average_several_clusterings():
    video = np.array([0, 0, 0, 1])
    audio = np.array([0, 1, 1, 1])
    weights = uniform_weights([video, audio])
    np.testing.assert_allclose(weights, (uniform_weights([video]) + uniform_weights([audio])) / 2)
    np.testing.assert_allclose(weights, [1 / 3, 1 / 6, 1 / 6, 1 / 3])


def test_uniform_weights_ignore_missing_rows():
    labels = np.array([0, 0, -1, 1, -1])
    weights = uniform_weights([labels])
    np.testing.assert_allclose(weights, [0.25, 0.25, 0.0, 0.5, 0.0])


def test_uniform_weights_skip_cluster_ids_nobody_uses():
    labels = np.array([0, 0, 3])  # ids 1 and 2 are unused: two clusters share the mass, not four
    np.testing.assert_allclose(cluster_mass(uniform_weights([labels]), labels), [0.5, 0, 0, 0.5])


# ---------------------------------------------------------------------------------------------------------
# diagnostics and purity


def test_identical_assignments_agree_perfectly_and_are_stable():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=50)
    relabeled = (labels + 1) % 4  # cluster ids are arbitrary: a permutation is the same clustering
    metrics = diagnostics({"video": labels, "audio": relabeled}, previous={"video": labels.copy()})
    assert metrics["nmi_video_audio"] == pytest.approx(1.0)
    assert metrics["stability_video"] == pytest.approx(1.0)
    assert "stability_audio" not in metrics  # no previous round for this space


def test_balanced_clusters_have_entropy_one():
    balanced = np.tile(np.arange(4), 5)
    metrics = diagnostics({"video": balanced})
    assert metrics["entropy_video"] == pytest.approx(1.0)
    assert metrics["largest_share_video"] == pytest.approx(0.25)
    assert metrics["nonempty_video"] == 4


def test_collapsed_clusters_have_low_entropy():
    skewed = np.array([0] * 17 + [1, 2, 3])
    metrics = diagnostics({"audio": skewed})
    assert metrics["entropy_audio"] < 0.5
    assert metrics["largest_share_audio"] == pytest.approx(0.85)


def test_purity_on_a_hand_example():
    assignments = np.array([0, 0, 0, 1, 1, 1, 2])
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    # Cluster 0: majority 0 (2 of 3); cluster 1: majority 1 (2 of 3); cluster 2: 1 of 1.
    assert purity(assignments, labels) == pytest.approx(5 / 7)


def test_the_class_ceiling_maps_each_class_to_its_most_frequent_cluster():
    assignments = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, -1])
    # Class 0: clusters 0, 0, 1 (2 of 3 on cluster 0); class 1: clusters 1, 1, 2, 2 (2 of 4); the unlabelled row
    # does not count.
    assert class_ceiling(assignments, labels) == pytest.approx(4 / 7)
    # One cluster per class can be fitted perfectly; clusters that split a class cannot.
    assert class_ceiling(np.array([5, 5, 2, 2]), np.array([0, 0, 1, 1])) == 1.0
    assert class_ceiling(np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0])) == pytest.approx(0.25)
    assert class_ceiling(np.array([-1, -1]), np.array([0, 1])) == 0.0


def test_the_class_ceiling_weighs_each_sample_by_its_training_probability():
    assignments = np.array([0, 0, 1])
    labels = np.array([0, 0, 0])
    assert class_ceiling(assignments, labels) == pytest.approx(2 / 3)
    # Drawn uniformly over the two clusters, the lone clip of cluster 1 is drawn as often as both of cluster 0.
    weights = uniform_weights([assignments])
    assert class_ceiling(assignments, labels, weights) == pytest.approx(0.5)


def test_purity_and_nmi_ignore_unlabeled_rows():
    assignments = np.array([0, 0, 1, 1, 1, 0])
    labels = np.array([0, 0, 1, 1, -1, -1])
    assert purity(assignments, labels) == pytest.approx(1.0)
    metrics = diagnostics({"video": assignments}, labels=labels)
    assert metrics["nmi_labels_video"] == pytest.approx(1.0)
    assert metrics["purity_labels_video"] == pytest.approx(1.0)


def test_missing_assignments_are_ignored():
    video = np.array([0, 0, 1, 1, -1, -1])
    audio = np.array([1, 1, 0, 0, 0, 1])
    metrics = diagnostics({"video": video, "audio": audio})
    assert metrics["nmi_video_audio"] == pytest.approx(1.0)
    assert metrics["entropy_video"] == pytest.approx(1.0)


def test_no_label_metrics_without_labels():
    assignments = np.array([0, 1, 0, 1])
    assert not any("labels" in key for key in diagnostics({"joint": assignments}))
    unlabeled = diagnostics({"joint": assignments}, labels=np.full(4, -1))
    assert not any("labels" in key for key in unlabeled)


def test_factor_diagnostics_tell_which_nuisance_a_clustering_follows():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)  # 100 clips of 4 classes
    colour = rng.integers(0, 3, size=100)
    speaker = rng.integers(0, 5, size=100)
    speaker[:10] = -1  # unknown for some clips
    by_colour = colour.copy()  # a clustering that follows colour, not the class
    metrics = diagnostics({"video": by_colour, "audio": labels}, labels=labels,
                          factors={"colour": colour, "speaker": speaker})
    assert metrics["nmi_factor_colour_video"] == pytest.approx(1.0)
    assert metrics["purity_factor_colour_video"] == pytest.approx(1.0)
    assert metrics["nmi_labels_video"] < 0.1 and metrics["nmi_labels_audio"] == pytest.approx(1.0)
    assert metrics["nmi_factor_speaker_audio"] < 0.2
    assert metrics["nmi_factor_speaker_video"] == pytest.approx(
        normalized_mutual_info_score(by_colour[10:], speaker[10:]))  # unknown values are left out


def test_a_factor_nobody_knows_gives_no_metric():
    assignments = {"video": np.array([0, 1, 0, 1])}
    metrics = diagnostics(assignments, factors={"colour": np.full(4, -1)})
    assert not any("colour" in key for key in metrics)

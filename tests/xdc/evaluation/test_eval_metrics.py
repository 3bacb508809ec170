"""The evaluation metrics as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from xdc.evaluation.metrics import (average_by_owner, classification_metrics, confusion_matrix, per_class_accuracy,
                                    recall_at_k, topk_accuracy)


def test_it_averages_clip_scores_per_file():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 2.0]])
    assert average_by_owner(scores, np.array([0, 0, 2]), 3).tolist() == [[0.5, 0.5], [0.0, 0.0], [4.0, 2.0]]


def test_it_counts_top_k_hits():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    labels = np.array([0, 1, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(1.0)
    assert topk_accuracy(scores, labels, 5) == 1.0  # k beyond the classes is all of them


def test_it_builds_the_confusion_matrix_and_per_class_accuracy():
    confusion = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert per_class_accuracy(confusion, ["a", "b", "c"]) == {"a": 0.5, "b": 1.0}  # c has no test file


def test_classification_metrics_agree_with_each_other():
    rng = np.random.default_rng(0)
    scores, labels = rng.random((50, 4)), rng.integers(0, 4, 50)
    out = classification_metrics(scores, labels, list("abcd"))
    assert np.trace(np.array(out["confusion"])) / 50 == pytest.approx(out["metrics"]["top1"])


def test_recall_at_k_finds_same_class_neighbours():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    gallery_labels = np.array([0, 1, 1])
    queries = np.array([[1.0, 0.05], [0.1, 1.0]])
    recalls, hits = recall_at_k(queries, np.array([1, 1]), gallery, gallery_labels, (1, 2, 10))
    # query 0 is nearest to gallery 0 (class 0), then gallery 2 (class 1); query 1 hits gallery 1 at once
    assert recalls == {"recall@1": 0.5, "recall@2": 1.0, "recall@10": 1.0}
    assert hits.tolist() == [False, True]

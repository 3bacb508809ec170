"""The result schema and its validator (the small built-in one when jsonschema is not installed)."""

from __future__ import annotations

import copy

import pytest

from xdc.evaluation.schema import validate_record

RECORD = {
    "schema": "xdc-eval-result/1", "benchmark": "ucf101", "split": 1, "folds": None,
    "protocol": {"name": "linear", "version": 1, "params": {"C": 1.0}},
    "checkpoint": {"path": None, "sha256": None, "kind": "random", "variant": "random", "pretrain_run_id": None},
    "dataset": {"root": "/d", "fingerprint": "0" * 64, "train_files": 3, "test_files": 2, "classes": ["a", "b"]},
    "seed": 0, "metrics": {"top1": 0.5, "top5": 1.0}, "per_class": {"a": 1.0, "b": 0.0},
    "confusion": [[1, 0], [1, 0]], "started_at": "2025-01-01T00:00:00+00:00",
    "finished_at": "2025-01-01T00:00:01+00:00", "seconds": 1.0, "xdc_version": "0.1.0", "git_sha": "abc",
    "run_id": None, "config": {},
}


def test_it_accepts_a_complete_record():
    validate_record(RECORD)


@pytest.mark.parametrize("path,value,message", [
    (("metrics", "top1"), "high", "record.metrics.top1: must be number"),
    (("checkpoint", "kind"), "borrowed", "record.checkpoint.kind: must be one of"),
    (("dataset", "fingerprint"), "xyz", "does not match"),
    (("split",), -1, "below the minimum"),
    (("per_class", "a"), 1.5, "above the maximum"),
    (("confusion",), [[1, "x"]], "record.confusion[0][1]"),
    (("surprise",), 1, "unexpected key 'surprise'"),
])
def test_it_names_where_a_record_breaks_the_schema(path, value, message):
    record = copy.deepcopy(RECORD)
    node = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_record(record)

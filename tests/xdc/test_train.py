"""The trainer end to end on generated real media: rounds, checkpoints, stop and resume, failures, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xdc.checkpoint import list_checkpoints, load_latest
from xdc.config import load_config
from xdc.data.synthetic import write_bad_media
from xdc.errors import ConfigError, DataError, TrainingError
from xdc.tracking import MLflowTracker, NullTracker
from xdc.train import pretrain

pytestmark = pytest.mark.slow


def tiny(root: Path, *overrides: str, variant: str = "xdc"):
    return load_config(preset="tiny", overrides=[f"data.path={root}", f"variant={variant}", *overrides])


def videos_dir(root: Path) -> Path:
    return root / "videos"


def test_tiny_pretraining_writes_checkpoints_and_round_metrics(synthetic_root, tmp_path):
    tracker = NullTracker()
    result = pretrain(tiny(synthetic_root), tracker, out_dir=tmp_path / "run")

    assert not result.stopped and result.final_checkpoint.exists()
    final = torch.load(result.final_checkpoint, weights_only=False)
    assert final["variant"] == "xdc" and final["config"]["rounds"] == 2
    assert set(final) >= {"video", "audio", "config", "run_id"}
    state = load_latest(tmp_path / "run" / "checkpoints")
    assert state["position"]["round"] == 2
    assert set(state) >= {"model", "optimizer", "scheduler", "assignments", "rng", "config"}
    assert tracker.status == "FINISHED"
    assert [step for step, _ in tracker.metrics["cluster/nmi_video_audio"]] == [0, 1]
    assert [step for step, _ in tracker.metrics["cluster/stability_video"]] == [1]
    assert "cluster/nmi_labels_video" in tracker.metrics  # the generated set has labels.csv
    assert tracker.metrics["train/loss"] and tracker.params["cluster.k_video"] == "4"
    # Each head's fit of its targets: per log point while training, and per round over the round's last epoch,
    # in the round's summary too.
    fits = tracker.metrics["cluster/fit_video_from_audio"]
    assert [step for step, _ in fits] == [0, 1] and all(0 <= value <= 1 for _, value in fits)
    assert tracker.metrics["train/fit_audio_from_video"]
    summary = json.loads((tmp_path / "run" / "diagnostics" / "round_001.json").read_text())
    assert summary["fit_video_from_audio"] == fits[1][1] and "nmi_video_audio" in summary
    assert result.round_metrics["fit_audio_from_video"] == summary["fit_audio_from_video"]
    # Beside each fit, what a perfect class recogniser would fit on the same targets (the set is labelled).
    ceilings = tracker.metrics["cluster/ceiling_video_from_audio"]
    assert [step for step, _ in ceilings] == [0, 1] and all(0 < value <= 1 for _, value in ceilings)
    assert summary["ceiling_audio_from_video"] == tracker.metrics["cluster/ceiling_audio_from_video"][1][1]
    assert {"diagnostics/round_000.png", "assignments/round_001.csv", "data/skipped_files.tsv",
            "checkpoints/final.pt"} <= set(tracker.artifacts)


def test_rerunning_a_finished_run_does_nothing(synthetic_root, tmp_path):
    pretrain(tiny(synthetic_root), NullTracker(), out_dir=tmp_path / "run")
    again = NullTracker()
    result = pretrain(tiny(synthetic_root), again, out_dir=tmp_path / "run")
    assert result.final_checkpoint is not None and again.starts == 0


@pytest.mark.parametrize("variant", ["sdc", "mdc", "cdc", "supervised"])
def test_every_variant_trains_to_the_end(synthetic_root, tmp_path, variant):
    tracker = NullTracker()
    result = pretrain(tiny(synthetic_root, "rounds=1", variant=variant), tracker, out_dir=tmp_path / variant)
    assert result.final_checkpoint is not None and tracker.status == "FINISHED"
    heads = {"sdc": 2, "mdc": 4, "cdc": 2, "supervised": 2}[variant]
    assert len([k for k in tracker.metrics if k.startswith("train/loss_")]) == heads
    assert len([k for k in tracker.metrics if k.startswith("cluster/fit_")]) == heads


def test_stop_after_first_epoch_then_rerun_continues_in_the_same_mlflow_run(synthetic_root, tmp_path,
                                                                              mlflow_server):
    out = tmp_path / "run"
    stop_once_checkpointed = lambda: bool(list_checkpoints(out / "checkpoints"))  # noqa: E731
    first = pretrain(tiny(synthetic_root), MLflowTracker(mlflow_server), out_dir=out,
                     should_stop=stop_once_checkpointed)
    assert first.stopped and first.final_checkpoint is None
    state = load_latest(out / "checkpoints")
    assert state["position"] == {"round": 1, "epoch": 0, "step": 0, "global_step": state["position"]["global_step"]}

    second = pretrain(tiny(synthetic_root), MLflowTracker(mlflow_server), out_dir=out)
    assert second.run_id == first.run_id and second.final_checkpoint is not None

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    nmi_rounds = [m.step for m in client.get_metric_history(first.run_id, "cluster/nmi_video_audio")]
    assert sorted(nmi_rounds) == [0, 1]
    loss_steps = sorted(m.step for m in client.get_metric_history(first.run_id, "train/loss"))
    assert loss_steps[-1] == 2 * state["position"]["global_step"]  # two rounds of one epoch each, no step twice
    assert len(loss_steps) == len(set(loss_steps))
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "checkpoints")}
    assert "checkpoints/final.pt" in artifacts


def test_stop_mid_epoch_resumes_at_the_next_step(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny(synthetic_root, "batch_size=4")
    calls = {"n": 0}

    def stop_at_third_batch() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # call 1: round start; calls 2-3: two batches

    first = pretrain(cfg, NullTracker(), out_dir=out, should_stop=stop_at_third_batch)
    assert first.stopped
    assert load_latest(out / "checkpoints")["position"]["step"] == 2
    tracker = NullTracker()
    pretrain(cfg, tracker, out_dir=out)
    steps = [step for step, _ in tracker.metrics["train/loss"]]
    assert steps[0] == 4 and tracker.status == "FINISHED"  # log_every=2: steps 3-4 are the first logged


def test_a_stop_logs_the_steps_since_the_last_log_point(synthetic_root, tmp_path):
    calls = {"n": 0}

    def stop_at_third_batch() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    tracker = NullTracker()
    pretrain(tiny(synthetic_root, "batch_size=4", "log_every=100"), tracker, out_dir=tmp_path / "run",
             should_stop=stop_at_third_batch)
    assert [step for step, _ in tracker.metrics["train/loss"]] == [2] and tracker.status == "KILLED"


def test_a_non_finite_loss_fails_the_run_with_a_clear_reason(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDC_LIMITS", "optim.lr=1e30")  # past the lab's limit of 10, which a deployment may raise
    tracker = NullTracker()
    with pytest.raises(TrainingError, match="non-finite loss"):
        pretrain(tiny(synthetic_root, "optim.lr=1e30", "log_every=1"), tracker, out_dir=tmp_path / "run")
    assert tracker.status == "FAILED" and "non-finite loss" in tracker.tags["error"]


def test_bad_files_are_skipped_and_counted(synthetic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(videos_dir(synthetic_root), data)
    write_bad_media(data / "bad")
    tracker = NullTracker()
    result = pretrain(tiny(data), tracker, out_dir=tmp_path / "run")
    assert result.skipped == {"no_audio": 1, "silent": 1, "too_short": 1, "undecodable": 2}
    assert tracker.metrics["data/skipped_undecodable"] == [(0, 2.0)]
    report = (tmp_path / "run" / "skipped_files.tsv").read_text()
    assert "silent\t" in report and "usable\t24" in report


def test_a_dataset_without_usable_files_fails_before_writing_anything(tmp_path):
    write_bad_media(tmp_path / "data")
    with pytest.raises(DataError, match="no usable video"):
        pretrain(tiny(tmp_path / "data"), NullTracker(), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_different_config_in_the_same_output_directory_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "run"
    pretrain(tiny(synthetic_root, "rounds=1"), NullTracker(), out_dir=out)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="cluster.k_video"):
        pretrain(tiny(synthetic_root, "rounds=1", "cluster.k_video=3"), NullTracker(), out_dir=out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_more_clusters_than_videos_is_refused(synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match="exceeds the 24 usable videos"):
        pretrain(tiny(synthetic_root, "cluster.k_audio=100"), NullTracker(), out_dir=tmp_path / "run")


def test_supervised_variant_needs_labels(synthetic_root, tmp_path):
    data = tmp_path / "unlabeled"
    shutil.copytree(videos_dir(synthetic_root), data)
    with pytest.raises(DataError, match="needs labels"):
        pretrain(tiny(data, variant="supervised"), NullTracker(), out_dir=tmp_path / "run")


def test_round_assignments_follow_the_seed(synthetic_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        pretrain(tiny(synthetic_root, "rounds=1"), NullTracker(), out_dir=tmp_path / name)
        runs.append(load_latest(tmp_path / name / "checkpoints")["previous"])
    for space in ("video", "audio"):
        np.testing.assert_array_equal(runs[0][space], runs[1][space])


def test_on_data_with_known_factors_it_logs_what_each_clustering_follows(tmp_path):
    from xdc.data.material import make_material_set

    data = make_material_set("spoken-digits", tmp_path / "set", videos=20, seed=0, layouts=False).root
    tracker = NullTracker()
    pretrain(tiny(data, "rounds=1"), tracker, out_dir=tmp_path / "run")

    # XDC trains on the video and audio clusters; the joint space is clustered too, to diagnose, not to train.
    for space in ("video", "audio", "joint"):
        assert f"cluster/nmi_labels_{space}" in tracker.metrics
        for factor in ("ink", "background", "drift", "speaker", "loudness", "audio_class"):
            assert f"cluster/nmi_factor_{factor}_{space}" in tracker.metrics
            assert f"cluster/purity_factor_{factor}_{space}" in tracker.metrics
    table = (tmp_path / "run" / "assignments" / "round_000.csv").read_text().splitlines()
    assert table[0].split(",") == ["path", "cluster_video", "cluster_audio", "cluster_joint", "label", "ink",
                                   "background", "drift", "speaker", "loudness", "audio_class"]
    assert {"diagnostics/round_000.json", "diagnostics/round_000.png"} <= set(tracker.artifacts)
    final = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    assert set(final["config"]["model"]) >= {"video_input", "audio_norm"}


def test_the_input_layers_train_and_are_kept_in_the_checkpoint(synthetic_root, tmp_path):
    cfg = tiny(synthetic_root, "rounds=1", "model.video_input=sobel", "model.audio_norm=clip")
    result = pretrain(cfg, NullTracker(), out_dir=tmp_path / "run")
    final = torch.load(result.final_checkpoint, weights_only=True)
    assert final["config"]["model"]["video_input"] == "sobel" and final["config"]["model"]["audio_norm"] == "clip"


def test_a_space_clustered_only_to_diagnose_never_refuses_the_run(synthetic_root, tmp_path):
    # XDC trains on the video and audio clusters; K of the joint space (diagnosis only) may exceed the videos.
    result = pretrain(tiny(synthetic_root, "rounds=1", "cluster.k_joint=1000"), NullTracker(), out_dir=tmp_path / "r")
    assert result.final_checkpoint is not None


class WorkClock:
    """A clock that only the trainer's work moves: STEP seconds per training step, EXTRACT per round's feature
    extraction; loading the data, clustering and checkpoints take no time on it."""

    STEP, EXTRACT = 0.5, 4.0

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_the_work_left_at_the_measured_pace_of_steps_and_extractions(synthetic_root, tmp_path,
                                                                                 monkeypatch):
    import functools

    from xdc import train
    from xdc.progress import Pace

    clock = WorkClock()
    monkeypatch.setattr(train, "Pace", functools.partial(Pace, clock=clock))
    step, extract = train._Pretraining._train_step, train._Pretraining._extract_features

    def timed_step(self, *args):
        clock.now += WorkClock.STEP
        return step(self, *args)

    def timed_extract(self, *args):
        clock.now += WorkClock.EXTRACT
        return extract(self, *args)

    monkeypatch.setattr(train._Pretraining, "_train_step", timed_step)
    monkeypatch.setattr(train._Pretraining, "_extract_features", timed_extract)
    reports = []
    pretrain(tiny(synthetic_root, "rounds=3", "epochs_per_round=2"), NullTracker(), out_dir=tmp_path / "run",
             on_progress=lambda fraction, eta, stage: reports.append((clock.now, fraction, eta, stage)))

    end = clock.now
    assert end == 3 * WorkClock.EXTRACT + 3 * 2 * 3 * WorkClock.STEP  # 3 rounds of 2 epochs of 3 steps
    assert reports[0][2] is None and reports[0][3] == "round 1: clustering"  # nothing measured yet
    assert all(eta is not None and abs(eta - (end - now)) < 1e-6 for now, _, eta, _ in reports[1:])
    fractions = [fraction for _, fraction, _, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

"""Downstream evaluation end to end on generated real media: every protocol, the record and its schema, controls,
re-running from a record, tracking, stopping, and bad input refused before anything is written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xdc.cli import main
from xdc.config import load_config
from xdc.errors import ConfigError, DataError
from xdc.evaluation import EvalConfig, evaluate, rerun
from xdc.evaluation.schema import validate_record
from xdc.tracking import MLflowTracker, NullTracker


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def layouts(synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """The generated set in every benchmark layout: folder, ucf101, esc50 (generated), hmdb51 and dcase (built here
    from the UCF101 and ESC-50 copies with symlinks)."""
    hmdb = tmp_path_factory.mktemp("hmdb51")
    _hmdb_from_ucf(synthetic_root / "ucf101", hmdb)
    dcase = tmp_path_factory.mktemp("dcase")
    _dcase_from_esc(synthetic_root / "esc50", dcase)
    return {"folder": synthetic_root, "ucf101": synthetic_root / "ucf101", "esc50": synthetic_root / "esc50",
            "hmdb51": hmdb, "dcase": dcase}


@pytest.fixture(scope="module")
def pretrained(synthetic_root, tmp_path_factory) -> Path:
    """A real final.pt of a tiny XDC pretraining (2 rounds, width 8)."""
    out = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDC_CACHE", str(tmp_path_factory.getbasetemp() / "xdc-cache"))
        from xdc.train import pretrain

        cfg = load_config(preset="tiny", overrides=[f"data.path={synthetic_root}"])
        return pretrain(cfg, NullTracker(), out_dir=out).final_checkpoint


def tiny(layouts, benchmark: str, protocol: str, checkpoint: str = "random", **extra) -> EvalConfig:
    return EvalConfig.from_dict({"checkpoint": str(checkpoint), "benchmark": benchmark,
                                 "data": str(layouts[benchmark]), "protocol": protocol, "preset": "tiny", **extra})


# -- every protocol end to end -----------------------------------------------------------------------------------

CASES = [("folder", "linear", {}), ("ucf101", "retrieval", {}), ("hmdb51", "linear", {"split": 2}),
         ("esc50", "svm", {"split": 0}), ("dcase", "svm", {})]


@pytest.mark.parametrize("benchmark,protocol,extra", CASES, ids=[f"{b}-{p}" for b, p, _ in CASES])
def test_it_runs_every_protocol_and_records_the_schema(layouts, tmp_path, benchmark, protocol, extra):
    tracker = NullTracker()
    result = evaluate(tiny(layouts, benchmark, protocol, **extra), tracker, out_dir=tmp_path / "out")

    record = result.record
    validate_record(record)
    assert json.loads(result.path.read_text()) == record
    assert record["protocol"]["name"] == f"{protocol}-tiny" and record["protocol"]["version"] == 1
    assert record["dataset"]["test_files"] > 0 and len(record["dataset"]["fingerprint"]) == 64
    assert record["checkpoint"]["kind"] == "random" and record["config"]["version"] == 1
    if protocol != "retrieval":  # random video features do not retrieve by class; see the supervised test
        chance = 1 / len(record["dataset"]["classes"])
        assert record["metrics"]["top1"] >= chance + 0.25, record["metrics"]  # the generated set is separable
    assert tracker.status == "FINISHED" and tracker.params["protocol"] == f"{protocol}-tiny"
    assert "evaluation/result.json" in tracker.artifacts and "evaluation/per_class.csv" in tracker.artifacts
    if protocol != "retrieval":
        assert (tmp_path / "out" / "confusion.png").is_file()
        assert np.array(record["confusion"]).sum() == record["dataset"]["test_files"]


def test_it_evaluates_all_five_esc50_folds_with_mean_and_std(layouts, tmp_path):
    record = evaluate(tiny(layouts, "esc50", "svm", split=0), out_dir=tmp_path).record
    assert [fold["fold"] for fold in record["folds"]] == [1, 2, 3, 4, 5]
    top1 = [fold["metrics"]["top1"] for fold in record["folds"]]
    assert record["metrics"]["top1"] == pytest.approx(np.mean(top1))
    assert record["metrics"]["top1_std"] == pytest.approx(np.std(top1))
    assert all(fold["selection"]["C"] in (0.01, 0.1, 1.0, 10.0) for fold in record["folds"])


@pytest.mark.slow
def test_it_finetunes_a_pretrained_checkpoint_reproducibly(layouts, pretrained, tmp_path):
    record = evaluate(tiny(layouts, "ucf101", "finetune", pretrained), out_dir=tmp_path / "first").record
    validate_record(record)
    assert record["checkpoint"]["kind"] == "pretrained" and record["checkpoint"]["variant"] == "xdc"
    assert record["checkpoint"]["path"] == str(pretrained.resolve())
    assert record["protocol"]["params"]["epochs"] == 8 and set(record["metrics"]) == {"top1", "top5"}
    assert set(record["per_class"]) <= set(record["dataset"]["classes"])
    again = rerun(record, out_dir=tmp_path / "again").record  # finetuning too is reproducible on CPU
    assert (again["metrics"], again["per_class"], again["confusion"]) == \
        (record["metrics"], record["per_class"], record["confusion"])


# -- controls and reproducibility ----------------------------------------------------------------------------------

@pytest.mark.parametrize("benchmark,protocol,extra", [("esc50", "svm", {"split": 0}), ("folder", "linear", {})])
def test_shuffled_training_labels_fall_to_chance(layouts, tmp_path, benchmark, protocol, extra):
    clean = evaluate(tiny(layouts, benchmark, protocol, **extra), out_dir=tmp_path / "clean").record
    shuffled = evaluate(tiny(layouts, benchmark, protocol, shuffle_train_labels=True, **extra),
                        out_dir=tmp_path / "shuffled").record
    chance = 1 / len(clean["dataset"]["classes"])
    assert shuffled["dataset"]["train_labels_shuffled"] is True
    assert clean["metrics"]["top1"] >= chance + 0.3
    assert shuffled["metrics"]["top1"] <= chance + 0.2, shuffled["metrics"]


def test_a_result_rerun_from_its_record_gives_the_same_numbers(layouts, pretrained, tmp_path):
    first = evaluate(tiny(layouts, "ucf101", "linear", pretrained), out_dir=tmp_path / "a").record
    again = rerun(json.loads((tmp_path / "a" / "result.json").read_text()), out_dir=tmp_path / "b").record
    for key in ("metrics", "per_class", "confusion", "dataset", "checkpoint", "protocol", "config"):
        assert again[key] == first[key], key


def test_a_rerun_refuses_a_changed_checkpoint(layouts, pretrained, tmp_path):
    copy = tmp_path / "ckpt" / "final.pt"
    copy.parent.mkdir()
    shutil.copy(pretrained, copy)
    record = evaluate(tiny(layouts, "esc50", "svm", copy, split=1), out_dir=tmp_path / "a").record
    state = torch.load(copy, weights_only=False)
    state["audio"]["conv1.weight"] += 1
    torch.save(state, copy)
    with pytest.raises(ConfigError, match="changed since the record"):
        rerun(record, out_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()


# -- baselines --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_supervised_baseline_is_trained_once_and_cached(layouts, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDC_CACHE", str(cache))
    first = evaluate(tiny(layouts, "ucf101", "retrieval", "supervised"), out_dir=tmp_path / "a").record
    ckpt = first["checkpoint"]
    assert ckpt["kind"] == "supervised" and ckpt["variant"] == "supervised"
    assert ckpt["budget"] == "small" and ckpt["width"] == 16  # a budget that learns, not the tiny protocol's
    assert Path(ckpt["path"]).is_relative_to(cache / "supervised") and len(ckpt["sha256"]) == 64
    trained_on = torch.load(ckpt["path"], map_location="cpu", weights_only=False)["config"]["data"]
    assert (trained_on["resize_short"], trained_on["crop_size"]) == (40, 32)  # the frames the protocol measures
    assert trained_on["audio_seconds"] == 0  # no longer sound window than the clip, which would skip short videos
    trained = Path(ckpt["path"]).stat().st_mtime_ns
    second = evaluate(tiny(layouts, "ucf101", "linear", "supervised"), out_dir=tmp_path / "b").record
    assert second["checkpoint"]["path"] == ckpt["path"] and second["checkpoint"]["sha256"] == ckpt["sha256"]
    assert Path(ckpt["path"]).stat().st_mtime_ns == trained
    labels = (Path(ckpt["path"]).parent / "data" / "labels.csv").read_text().splitlines()
    assert len(labels) - 1 == first["dataset"]["train_files"]  # the benchmark's training split only
    chance = 1 / len(first["dataset"]["classes"])
    assert second["metrics"]["top1"] > chance, second["metrics"]  # labels shaped these features


def test_random_encoders_follow_the_seed(layouts, tmp_path):
    runs = [evaluate(tiny(layouts, "ucf101", "retrieval", seed=seed), out_dir=tmp_path / str(i)).record
            for i, seed in enumerate((0, 0))]
    assert runs[0]["metrics"] == runs[1]["metrics"]


# -- tracking, failure, stop -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_it_logs_an_mlflow_run_linked_to_the_pretraining_run(layouts, synthetic_root, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from xdc.train import pretrain

    cfg = load_config(preset="tiny", overrides=[f"data.path={synthetic_root}", "rounds=1"])
    trained = pretrain(cfg, MLflowTracker(mlflow_server), out_dir=tmp_path / "pre")
    result = evaluate(tiny(layouts, "esc50", "svm", trained.final_checkpoint, split=2),
                      MLflowTracker(mlflow_server), out_dir=tmp_path / "eval")

    run = MlflowClient(mlflow_server).get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.record["run_id"] == result.run_id
    assert run.data.tags["pretrain_run_id"] == trained.run_id == result.record["checkpoint"]["pretrain_run_id"]
    assert run.data.tags["checkpoint_sha256"] == result.record["checkpoint"]["sha256"]
    assert run.data.params["protocol"] == "svm-tiny" and run.data.params["version"] == "1"
    assert run.data.metrics["top1"] == pytest.approx(result.record["metrics"]["top1"])
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(result.run_id, "evaluation")}
    assert artifacts == {"evaluation/result.json", "evaluation/per_class.csv", "evaluation/confusion.png"}


def test_a_failure_during_the_work_marks_the_run_failed_and_writes_nothing(layouts, tmp_path):
    tracker = NullTracker()

    def broken(fraction, eta, stage):
        if fraction > 0.3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        evaluate(tiny(layouts, "ucf101", "linear"), tracker, out_dir=tmp_path / "out", on_progress=broken)
    assert tracker.status == "FAILED" and "disk on fire" in tracker.tags["error"]
    assert not (tmp_path / "out").exists()


def test_a_stop_request_ends_the_run_killed_without_a_result(layouts, tmp_path):
    tracker = NullTracker()
    result = evaluate(tiny(layouts, "ucf101", "linear"), tracker, out_dir=tmp_path / "out",
                      should_stop=lambda: True)
    assert result.stopped and result.record == {} and tracker.status == "KILLED"
    assert not (tmp_path / "out").exists()


def test_progress_is_reported_from_zero_to_one(layouts, tmp_path):
    seen = []
    evaluate(tiny(layouts, "esc50", "svm", split=3), out_dir=tmp_path, on_progress=lambda *a: seen.append(a))
    fractions = [fraction for fraction, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1][2] == "finished"


# -- bad input: exit code 2 before anything is written ------------------------------------------------------------

def _cli(args: list[str], out: Path, capsys) -> str:
    """Run `xdc evaluate` with tracking on; a refused input leaves neither the output folder nor an MLflow store."""
    store = out.parent / "mlruns-store"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        code = main(["evaluate", *args, "--preset", "tiny", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("xdc: error: ") and "\n" not in err, err
    assert not out.exists() and not store.exists()
    return err


def _copy(tree: Path, to: Path) -> Path:
    shutil.copytree(tree, to, symlinks=True)
    return to


def test_it_refuses_a_missing_split_file(layouts, tmp_path, capsys):
    ucf = _copy(layouts["ucf101"], tmp_path / "ucf")
    (ucf / "ucfTrainTestlist" / "testlist02.txt").unlink()
    err = _cli(["--checkpoint", "random", "--benchmark", "ucf101", "--data", str(ucf), "--split", "2"],
               tmp_path / "out", capsys)
    assert "testlist02.txt does not exist" in err


def test_it_refuses_a_test_entry_whose_class_is_not_in_classind(layouts, tmp_path, capsys):
    ucf = _copy(layouts["ucf101"], tmp_path / "ucf")
    with (ucf / "ucfTrainTestlist" / "testlist01.txt").open("a") as handle:
        handle.write("Unicycling/v_Unicycling_g01_c01.avi\n")
    err = _cli(["--checkpoint", "random", "--benchmark", "ucf101", "--data", str(ucf)], tmp_path / "out", capsys)
    assert "'Unicycling' is not in classInd.txt" in err


def test_it_refuses_an_empty_esc50_fold(layouts, tmp_path, capsys):
    esc = _copy(layouts["esc50"], tmp_path / "esc")
    meta = esc / "meta" / "esc50.csv"
    rows = list(csv.DictReader(meta.open()))
    for row in rows:
        row["fold"] = "2" if row["fold"] == "4" else row["fold"]
    with meta.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    err = _cli(["--checkpoint", "random", "--benchmark", "esc50", "--data", str(esc), "--split", "1"],
               tmp_path / "out", capsys)
    assert "fold 4" in err and "empty" in err


def test_it_refuses_a_file_that_is_not_a_pretrained_checkpoint(layouts, pretrained, tmp_path, capsys):
    training = tmp_path / "step.pt"
    torch.save({"model": {}, "optimizer": {}}, training)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path in (training, text, tmp_path / "absent.pt"):
        err = _cli(["--checkpoint", str(path), "--benchmark", "folder", "--data", str(layouts["folder"])],
                   tmp_path / "out", capsys)
        assert str(path) in err


def test_it_refuses_a_checkpoint_of_another_architecture(layouts, pretrained, tmp_path, capsys):
    state = torch.load(pretrained, weights_only=False)
    state["config"]["model"]["video_width"] = 16  # the weights are width 8
    wrong = tmp_path / "wrong" / "final.pt"
    wrong.parent.mkdir()
    torch.save(state, wrong)
    err = _cli(["--checkpoint", str(wrong), "--benchmark", "folder", "--data", str(layouts["folder"])],
               tmp_path / "out", capsys)
    assert "video encoder does not match" in err
    err = _cli(["--checkpoint", str(pretrained), "--benchmark", "folder", "--data", str(layouts["folder"]),
                "--set", "width=16"], tmp_path / "out", capsys)
    assert "width 8" in err and "width 16" in err


def test_it_refuses_a_checkpoint_without_the_measured_modality(layouts, pretrained, tmp_path, capsys):
    state = torch.load(pretrained, weights_only=False)
    del state["audio"]
    video_only = tmp_path / "video_only.pt"
    torch.save(state, video_only)
    err = _cli(["--checkpoint", str(video_only), "--benchmark", "esc50", "--data", str(layouts["esc50"])],
               tmp_path / "out", capsys)
    assert "no audio encoder" in err


def test_it_refuses_an_audio_front_end_other_than_the_protocols(layouts, pretrained, tmp_path, capsys):
    state = torch.load(pretrained, weights_only=False)
    state["config"]["data"]["n_mels"] = 40
    other = tmp_path / "mels40.pt"
    torch.save(state, other)
    err = _cli(["--checkpoint", str(other), "--benchmark", "esc50", "--data", str(layouts["esc50"])],
               tmp_path / "out", capsys)
    assert "n_mels=40" in err


@pytest.mark.parametrize("args,message", [
    (["--benchmark", "ucf101", "--protocol", "svm"], "does not apply to benchmark 'ucf101'"),
    (["--benchmark", "esc50", "--protocol", "finetune"], "does not apply to benchmark 'esc50'"),
    (["--benchmark", "ucf101", "--split", "4"], "split must be in 1..3"),
    (["--benchmark", "ucf101", "--version", "9"], "has no version 9"),
    (["--benchmark", "ucf101", "--set", "epochs=3"], "unknown config key 'epochs'"),
    (["--benchmark", "ucf101", "--set", "seed=x"], "seed must be an integer"),
    (["--benchmark", "esc50", "--checkpoint", "supervised"], "needs supervised_data"),
])
def test_it_refuses_bad_options(layouts, tmp_path, capsys, args, message):
    benchmark = args[args.index("--benchmark") + 1]
    base = [] if "--checkpoint" in args else ["--checkpoint", "random"]
    err = _cli([*base, *args, "--data", str(layouts[benchmark])], tmp_path / "out", capsys)
    assert message in err


def test_the_cli_prints_the_metrics_and_where_the_result_is(layouts, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", "--checkpoint", "random", "--benchmark", "dcase", "--data", str(layouts["dcase"]),
                 "--preset", "tiny", "--out", str(out), "--no-track", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "dcase split 1, svm-tiny v1, random: top1 " in printed
    assert f"result: {out / 'result.json'}" in printed and (out / "result.json").is_file()


def test_config_is_strict_and_round_trips():
    cfg = EvalConfig.from_dict({"benchmark": "esc50", "protocol": "svm", "data": "/d", "split": "0"})
    assert cfg.split == 0 and EvalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown config key 'protocl'"):
        EvalConfig.from_dict({"data": "/d", "protocl": "linear"})
    with pytest.raises(ConfigError, match="benchmark must be one of"):
        EvalConfig.from_dict({"data": "/d", "benchmark": "kinetics"})
    with pytest.raises(ConfigError, match="data"):
        EvalConfig.from_dict({})


def test_a_folder_without_labels_is_refused(tmp_path, synthetic_root):
    videos = tmp_path / "plain"
    shutil.copytree(synthetic_root / "videos", videos)
    with pytest.raises(DataError, match="no labels.csv"):
        evaluate(EvalConfig(benchmark="folder", data=str(videos), preset="tiny"), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- helpers ----------------------------------------------------------------------------------------------------

def _hmdb_from_ucf(ucf: Path, hmdb: Path) -> None:
    lists = ucf / "ucfTrainTestlist"
    for split in (1, 2, 3):
        tags: dict[str, dict[str, str]] = {}
        for name, tag in ((f"trainlist0{split}.txt", "1"), (f"testlist0{split}.txt", "2")):
            for line in (lists / name).read_text().split("\n"):
                if line.strip():
                    relative = line.split()[0]
                    cls, video = relative.split("/")
                    tags.setdefault(cls, {})[video] = tag
        (hmdb / "splits").mkdir(exist_ok=True)
        for cls, videos in tags.items():
            (hmdb / "splits" / f"{cls}_test_split{split}.txt").write_text(
                "".join(f"{video} {tag}\n" for video, tag in sorted(videos.items())))
            for video in videos:
                target = hmdb / "videos" / cls / video
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(ucf / "UCF-101" / cls / video)


def _dcase_from_esc(esc: Path, dcase: Path) -> None:
    for row in csv.DictReader((esc / "meta" / "esc50.csv").open()):
        part = "test" if row["fold"] in ("1", "2") else "train"
        target = dcase / part / row["category"] / row["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(esc / "audio" / row["filename"])


def test_an_encoder_with_a_fixed_input_layer_is_evaluated_through_it(synthetic_root, layouts, tmp_path):
    from xdc.evaluation.encoders import build_encoder, plan_encoder
    from xdc.train import pretrain

    cfg = load_config(preset="tiny", overrides=[f"data.path={synthetic_root}", "rounds=1",
                                                "model.video_input=grey", "model.audio_norm=clip"])
    final = pretrain(cfg, NullTracker(), out_dir=tmp_path / "run").final_checkpoint
    for modality, attribute, expected in (("video", "input_filter", "grey"), ("audio", "norm", "clip")):
        params = {"sample_rate": 16000, "n_mels": 32, "window_ms": 25.0, "hop_ms": 10.0}
        plan = plan_encoder(checkpoint=str(final), modality=modality, protocol_params=params, preset="tiny",
                            width=0, seed=0, device="cpu", workers=0)
        encoder, _ = build_encoder(plan, seed=0)
        layer = getattr(encoder, attribute)
        assert (layer.kind if modality == "video" else layer) == expected
    record = evaluate(tiny(layouts, "ucf101", "linear", final), out_dir=tmp_path / "eval").record
    validate_record(record)


@pytest.mark.parametrize("preset,width,layers", [("tiny", 8, ("rgb", "none")), ("small", 16, ("sobel", "clip")),
                                                 ("", 64, ("rgb", "none"))])
def test_a_random_init_has_the_architecture_its_protocol_presets_pretraining_has(preset, width, layers):
    from xdc.evaluation.encoders import _identity, build_encoder, plan_encoder

    for modality, attribute, expected in zip(("video", "audio"), ("input_filter", "norm"), layers):
        plan = plan_encoder(checkpoint="random", modality=modality, protocol_params={}, preset=preset, width=0,
                            seed=0, device="cpu", workers=0)
        encoder, _ = build_encoder(plan, seed=0)
        layer = getattr(encoder, attribute)
        assert (layer.kind if modality == "video" else layer) == expected
        assert _identity(plan)["width"] == width and _identity(plan)["input_layer"] == expected

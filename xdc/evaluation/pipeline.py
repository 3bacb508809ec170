"""One evaluation from config to record: checks everything first, then runs the protocol inside an MLflow run.

`Evaluation.prepare` does all input checking (protocol, dataset layout and files, checkpoint) and writes nothing;
`execute` opens the tracking run, builds the encoder, runs the protocol, and writes the record and its artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xdc import __version__
from xdc.config import flatten
from xdc.errors import ConfigError, DataError
from xdc.evaluation import SPLITS, EvalConfig, EvalResult
from xdc.evaluation.benchmarks import EvalData, load_benchmark
from xdc.evaluation.encoders import EncoderPlan, build_encoder, file_sha256, plan_encoder, video_files
from xdc.evaluation.protocols import Protocol, resolve
from xdc.evaluation.report import write_confusion_plot, write_per_class, write_result
from xdc.evaluation.runners import RUNNERS, Context, Labels, Stopped
from xdc.evaluation.schema import SCHEMA_ID, validate_record
from xdc.tracking import NullTracker, git_sha

ProgressFn = Callable[[float, float | None, str], None]


@dataclass
class Evaluation:
    cfg: EvalConfig
    protocol: Protocol
    data: EvalData
    labels: Labels
    plan: EncoderPlan
    device: torch.device

    @classmethod
    def prepare(cls, cfg: EvalConfig) -> Evaluation:
        """Resolve and check every input; raises ConfigError/DataError and writes nothing."""
        from xdc.train import resolve_device

        protocol = resolve(cfg.protocol, version=cfg.version, preset=cfg.preset, benchmark=cfg.benchmark)
        cfg = replace(cfg, version=protocol.version, data=_absolute(cfg.data),  # the record pins what ran
                      checkpoint=cfg.checkpoint if cfg.checkpoint in ("random", "supervised")
                      else _absolute(cfg.checkpoint),
                      supervised_data=_absolute(cfg.supervised_data) if cfg.supervised_data else "")
        device = resolve_device(cfg.device)
        params = dict(protocol.params)
        data = load_benchmark(cfg.benchmark, cfg.data, split=cfg.split, seed=cfg.seed, params=params,
                              workers=cfg.workers_resolved)
        labels = _labels(data, shuffle=cfg.shuffle_train_labels, seed=cfg.seed)
        _check_parts(data, labels)
        train = video_files(data.files, data.parts[0].train, data.classes) if protocol.modality == "video" else None
        plan = plan_encoder(checkpoint=cfg.checkpoint, modality=protocol.modality, protocol_params=params,
                            preset=cfg.preset, width=cfg.width, seed=cfg.seed, device=cfg.device,
                            workers=cfg.workers_resolved, pretrain_run_id=cfg.pretrain_run_id,
                            supervised_data=cfg.supervised_data, train_files=train)
        return cls(cfg, protocol, data, labels, plan, device)

    def expect(self, record: dict[str, Any]) -> None:
        """Refuse to re-run a record whose dataset or checkpoint has changed since."""
        fingerprint = record.get("dataset", {}).get("fingerprint")
        if fingerprint != self.data.fingerprint():
            raise DataError(f"the dataset at {self.cfg.data} changed since the record was made (fingerprint "
                            f"{str(fingerprint)[:12]} there, {self.data.fingerprint()[:12]} now)")
        recorded = record.get("checkpoint", {}).get("sha256")
        if self.plan.kind == "pretrained" and recorded != file_sha256(self.plan.path):
            raise ConfigError(f"checkpoint {self.plan.path} changed since the record was made (sha256 differs)")

    # -- the work ---------------------------------------------------------------------------------------------

    def execute(self, tracker, out_dir: Path, on_progress: ProgressFn | None,
                should_stop: Callable[[], bool] | None) -> EvalResult:
        tracker = tracker if tracker is not None else NullTracker()
        progress = _Progress(on_progress)
        started_at, started = _now(), time.monotonic()
        tracker.start(experiment=self.cfg.experiment, run_name=self.cfg.run_name or self.run_name, run_id=None,
                      tags=self._tags())
        run_id = None if isinstance(tracker, NullTracker) else tracker.run_id
        try:
            tracker.log_params(self._params())
            record = self._run(tracker, progress, should_stop or (lambda: False), run_id, started_at, started)
            artifacts = _write(out_dir, record)
            _log_outcome(tracker, record, artifacts)
            tracker.finish("FINISHED")
        except Stopped:
            tracker.finish("KILLED")
            return EvalResult({}, run_id, out_dir / "result.json", stopped=True)
        except BaseException as exc:
            tracker.finish("FAILED", error=_reason(exc))
            raise
        progress(1.0, "finished")
        return EvalResult(record, run_id, out_dir / "result.json", artifacts=artifacts)

    def _run(self, tracker, progress: _Progress, should_stop: Callable[[], bool], run_id: str | None,
             started_at: str, started: float) -> dict[str, Any]:
        training = self.plan.kind == "supervised"
        progress.span = (0.0, 0.5) if training else (0.0, 0.0)
        encoder, identity = build_encoder(self.plan, seed=self.cfg.seed, should_stop=should_stop,
                                          on_progress=lambda f, eta, stage: progress(f, stage))
        if encoder is None:
            raise Stopped
        tracker.set_tags({k: v for k, v in (("checkpoint_sha256", identity["sha256"]),
                                            ("pretrain_run_id", identity["pretrain_run_id"])) if v})
        progress.span = (0.5 if training else 0.0, 1.0)
        ctx = Context(dict(self.protocol.params), self.device, self.cfg.seed, self.cfg.workers_resolved,
                      progress=progress, should_stop=should_stop,
                      log=lambda metrics, step: tracker.log_metrics(metrics, step=step))
        outcome = RUNNERS[self.protocol.name](encoder.to(self.device), self.data, self.labels, ctx)
        record = self._record(outcome, identity, ctx, run_id, started_at, started)
        validate_record(record)
        return record

    # -- the record -------------------------------------------------------------------------------------------

    def _record(self, outcome: dict[str, Any], identity: dict[str, Any], ctx: Context, run_id: str | None,
                started_at: str, started: float) -> dict[str, Any]:
        details = {"device": str(self.device), "workers": ctx.workers, "failed_clips": ctx.failed_clips}
        if outcome.get("selection") is not None:
            details["selection"] = outcome["selection"]
        return {
            "schema": SCHEMA_ID,
            "benchmark": self.cfg.benchmark,
            "split": self.cfg.split if self.cfg.benchmark in SPLITS else 1,
            "folds": [_fold_entry(f) for f in outcome["folds"]] if outcome.get("folds") else None,
            "protocol": self.protocol.to_dict(),
            "checkpoint": identity,
            "dataset": self._dataset(),
            "seed": self.cfg.seed,
            "metrics": outcome["metrics"],
            "per_class": outcome["per_class"],
            "confusion": outcome["confusion"],
            "started_at": started_at,
            "finished_at": _now(),
            "seconds": round(time.monotonic() - started, 3),
            "xdc_version": __version__,
            "git_sha": git_sha(),
            "run_id": run_id,
            "config": self.cfg.to_dict(),
            "details": details,
        }

    def _dataset(self) -> dict[str, Any]:
        return {
            "root": str(self.data.root),
            "fingerprint": self.data.fingerprint(),
            "train_files": int(sum(len(p.train) for p in self.data.parts)),
            "test_files": int(sum(len(p.test) for p in self.data.parts)),
            "classes": list(self.data.classes),
            "skipped": dict(self.data.skipped),
            "train_labels_shuffled": self.cfg.shuffle_train_labels,
        }

    @property
    def run_name(self) -> str:
        return f"{self.cfg.benchmark}-{self.protocol.label}-split{self.cfg.split}-{self.plan.short}"

    def _tags(self) -> dict[str, str]:
        tags = {"kind": "evaluate", "benchmark": self.cfg.benchmark, "split": str(self.cfg.split),
                "protocol": self.protocol.label, "protocol_version": str(self.protocol.version),
                "checkpoint_kind": self.plan.kind, "checkpoint": str(self.plan.path or self.plan.kind),
                "dataset_fingerprint": self.data.fingerprint(), "git_sha": git_sha(), "xdc_version": __version__}
        if self.plan.pretrain_run_id:
            tags["pretrain_run_id"] = self.plan.pretrain_run_id
        if self.plan.variant:
            tags["variant"] = self.plan.variant
        return tags

    def _params(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "protocol": self.protocol.label, "version": self.protocol.version,
                **flatten(self.protocol.to_dict()["params"], prefix="protocol."),
                "dataset.fingerprint": self.data.fingerprint()}


class _Progress:
    """Maps a stage's own 0..1 progress into `span` of the whole, with an ETA from the elapsed time."""

    def __init__(self, callback: ProgressFn | None):
        self.callback = callback
        self.span = (0.0, 1.0)
        self.started = time.monotonic()

    def __call__(self, fraction: float, stage: str) -> None:
        if self.callback is None:
            return
        low, high = self.span
        overall = min(1.0, max(0.0, low + (high - low) * fraction))
        elapsed = time.monotonic() - self.started
        eta = elapsed / overall * (1 - overall) if overall > 0.01 else None
        self.callback(overall, eta, stage)


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _labels(data: EvalData, *, shuffle: bool, seed: int) -> Labels:
    true = np.array([f.label for f in data.files], dtype=np.int64)
    if not shuffle:
        return Labels(true, true)
    return Labels(np.random.default_rng([seed, 7]).permutation(true), true)


def _check_parts(data: EvalData, labels: Labels) -> None:
    for part in data.parts:
        where = f"{data.benchmark} split {part.split}"
        if not len(part.test):
            raise DataError(f"{where}: the test set has no usable file")
        if len(np.unique(labels.train[part.train])) < 2:
            raise DataError(f"{where}: the training set holds fewer than two classes, so nothing can be learnt")


def _fold_entry(fold: dict[str, Any]) -> dict[str, Any]:
    keys = ("fold", "metrics", "per_class", "confusion", "train_files", "test_files", "selection", "seconds")
    return {key: fold[key] for key in keys if key in fold}


def _write(out_dir: Path, record: dict[str, Any]) -> list[Path]:
    """Artifacts first, result.json last: its presence marks a complete evaluation."""
    artifacts = [write_per_class(out_dir / "per_class.csv", record)]
    plot = write_confusion_plot(out_dir / "confusion.png", record)
    if plot is not None:
        artifacts.append(plot)
    artifacts.append(write_result(out_dir / "result.json", record))
    return artifacts


def _log_outcome(tracker, record: dict[str, Any], artifacts: list[Path]) -> None:
    tracker.log_metrics({_metric_name(k): v for k, v in record["metrics"].items()} | {"seconds": record["seconds"]},
                        step=0)
    for fold in record["folds"] or []:
        tracker.log_metrics({f"fold/{_metric_name(k)}": v for k, v in fold["metrics"].items()}, step=fold["fold"])
    for path in artifacts:
        tracker.log_artifact(path, "evaluation")


def _metric_name(name: str) -> str:
    return name.replace("@", "_at_")  # MLflow metric names allow no '@'


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"

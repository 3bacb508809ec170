"""Downstream evaluation of pretrained encoders: `evaluate(cfg, tracker, out_dir=...)` and its typed config.

An evaluation runs one versioned protocol (protocols.py) on one benchmark split (benchmarks.py) with the encoder
under test (encoders.py) through the protocol's procedure (runners.py), and writes one result document (schema
xdc/schemas/eval_result.schema.json) to `out_dir/result.json`, with a per-class table and a confusion plot beside
it, and logs the same to one MLflow run tagged with the pretraining run it measures.

Input problems (config, dataset layout, checkpoint) raise ConfigError/DataError before anything is written: no
out_dir, no MLflow run. A failure during the work ends the run FAILED with an `error` tag and propagates. A stop
request (`should_stop()` returning True) ends the run KILLED and returns `EvalResult(stopped=True, record={})`
without writing result.json; evaluations are short, so a stopped one is simply run again.

Reproducible: the record holds the config (protocol version resolved) and `rerun(record)` evaluates it again,
refusing if the checkpoint's content or the dataset's fingerprint changed; on CPU the numbers are identical.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xdc.config import SEED_MAX, _build, check_fields, setting
from xdc.errors import ConfigError

BENCHMARKS = ("ucf101", "hmdb51", "esc50", "dcase", "folder")
SPLITS = {"ucf101": range(1, 4), "hmdb51": range(1, 4), "esc50": range(0, 6)}
# Protocol presets: name -> what it is for (the site's choices read this).
PRESETS = {"": "full", "small": "small: the 2-core CPU budget", "tiny": "tiny (smoke test)"}

ProgressFn = Callable[[float, float | None, str], None]


@dataclass
class EvalConfig:
    """Everything an evaluation depends on. Stored in its result record as `config`, logged as MLflow params."""

    checkpoint: str = setting("random", longest=4096,
                              help="a final.pt of `xdc pretrain`, 'random' or 'supervised'")
    benchmark: str = setting("ucf101", choices=BENCHMARKS)
    data: str = setting("", longest=4096, help="dataset root in the benchmark's layout")
    split: int = setting(1, low=0, high=5,
                         help="UCF101/HMDB51 split 1-3; ESC-50 fold 1-5 or 0 = all five; ignored for dcase/folder")
    protocol: str = setting("linear", longest=40, help="finetune | linear | retrieval (video); svm (audio)")
    version: int = setting(0, low=0, high=1000, help="protocol version; 0 = the latest")
    preset: str = setting("", choices=tuple(PRESETS), help="recorded as '<protocol>-<preset>'")
    seed: int = setting(0, low=0, high=SEED_MAX)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), runtime=True)
    experiment: str = setting("xdc-eval", runtime=True)
    run_name: str = setting("", runtime=True)
    pretrain_run_id: str = setting("", longest=64, runtime=True, help="defaults to the run id in the checkpoint")
    supervised_data: str = setting("", longest=4096, help="labelled video folder for checkpoint=supervised "
                                                          "(default: the benchmark's train set)")
    width: int = setting(0, low=0, limit=512,
                         help="random/supervised width (0: the preset's); checked against a checkpoint")
    workers: int = setting(-1, low=-1, limit=128, runtime=True,
                           help="DataLoader workers; -1: 0 for tiny, else min(8, CPUs)")
    shuffle_train_labels: bool = setting(False, help="control: permute the training labels (the score should fall "
                                                     "to chance)")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvalConfig:
        return _build(cls, raw, prefix="").validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> EvalConfig:
        from xdc.evaluation.protocols import resolve

        check_fields(self)
        _require(bool(self.checkpoint), "checkpoint must be a final.pt path, 'random' or 'supervised'", "checkpoint")
        _require(bool(self.data), "data (the dataset root) must be given", "data")
        allowed = SPLITS.get(self.benchmark)
        if allowed is not None:
            _require(self.split in allowed, f"split must be in {allowed.start}..{allowed.stop - 1} for "
                                            f"{self.benchmark}, got {self.split}", "split")
        try:
            resolve(self.protocol, version=self.version, preset=self.preset, benchmark=self.benchmark)
        except ConfigError as exc:
            raise ConfigError(str(exc), key=exc.key or "protocol") from None
        return self

    @property
    def workers_resolved(self) -> int:
        if self.workers >= 0:
            return self.workers
        return 0 if self.preset == "tiny" else min(8, os.cpu_count() or 1)


@dataclass
class EvalResult:
    record: dict[str, Any]  # exactly what out_dir/result.json holds ({} when stopped)
    run_id: str | None
    path: Path  # out_dir/result.json
    stopped: bool = False
    artifacts: list[Path] = field(default_factory=list)


def evaluate(cfg: EvalConfig, tracker=None, *, out_dir: str | Path, on_progress: ProgressFn | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """Evaluate `cfg.checkpoint` under `cfg.protocol` on `cfg.benchmark`; see the module docstring."""
    from xdc.checkpoint import writable_dir

    prepared = _prepare(cfg)
    return prepared.execute(tracker, writable_dir(out_dir), on_progress, should_stop)


def rerun(record: dict[str, Any], tracker=None, *, out_dir: str | Path, **kwargs) -> EvalResult:
    """Evaluate again from a result record: the same config, refused (DataError/ConfigError) if the dataset
    fingerprint or the checkpoint's content differ from what the record says."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ConfigError("the record holds no evaluation config ('config')")
    prepared = _prepare(EvalConfig.from_dict(record["config"]))
    prepared.expect(record)
    return prepared.execute(tracker, Path(out_dir), kwargs.get("on_progress"), kwargs.get("should_stop"))


def default_out_dir(cfg: EvalConfig) -> Path:
    """runs/eval/<benchmark>-<protocol>-split<N>-<checkpoint short name>, e.g. runs/eval/ucf101-linear-split1-xdc."""
    protocol = f"{cfg.protocol}-{cfg.preset}" if cfg.preset else cfg.protocol
    if cfg.checkpoint in ("random", "supervised"):
        short = cfg.checkpoint
    else:
        path = Path(cfg.checkpoint)
        short = path.parent.name if path.name == "final.pt" and path.parent.name else path.stem
    return Path("runs") / "eval" / f"{cfg.benchmark}-{protocol}-split{cfg.split}-{short}"


def _require(ok: bool, message: str, key: str) -> None:
    if not ok:
        raise ConfigError(message, key=key)


def _prepare(cfg: EvalConfig):
    from xdc.evaluation.pipeline import Evaluation

    return Evaluation.prepare(cfg.validate())


__all__ = ["EvalConfig", "EvalResult", "evaluate", "rerun", "default_out_dir"]

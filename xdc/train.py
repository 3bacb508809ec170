"""XDC pretraining: rounds of {extract features -> cluster -> reset heads -> train E epochs}.

Resumable by construction: a checkpoint after every epoch (and on a stop request) holds the model, optimizer,
scheduler, position (round, epoch, step), the round's cluster assignments, RNG states and the config; running the
same config into the same output directory continues from it, in the same tracking run. Under torchrun the ranks
shard feature extraction and training; rank 0 clusters, logs and writes checkpoints.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from xdc import __version__
from xdc.checkpoint import ensure_free_space, load_latest, save_checkpoint, writable_dir, write_atomic
from xdc.clustering import class_ceiling, cluster_features, diagnostics, uniform_weights
from xdc.config import PretrainConfig, runtime_keys
from xdc.data import VideoSet, load_video_set
from xdc.data.clips import ClipDataset, clip_loader, even_requests, random_requests, stretch_requests
from xdc.data.transforms import normalize_video
from xdc.distributed import Dist, init_distributed, shutdown
from xdc.errors import ConfigError, DataError, TrainingError
from xdc.gallery import gallery_folder, log_gallery, write_gallery
from xdc.models import AVModel
from xdc.progress import Pace
from xdc.report import write_assignments, write_round_plot
from xdc.tracking import NullTracker, Tracker, TrackingError, git_sha
from xdc.variants import VARIANTS, variant_loss

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, float | None, str], None]
RUNTIME_KEYS = runtime_keys(PretrainConfig)  # may differ between a checkpoint and its resume


@dataclass
class PretrainResult:
    out_dir: Path
    run_id: str | None
    stopped: bool
    final_checkpoint: Path | None
    skipped: dict[str, int]
    round_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: dict[str, int] | None = None  # the checkpoint position this call started at, None on a fresh run


class StopRequested(Exception):
    """Raised inside the loop when the caller asked to stop; the trainer checkpoints and returns."""


def pretrain(cfg: PretrainConfig, tracker: Tracker | None = None, *, out_dir: str | Path,
             on_progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> PretrainResult:
    """Pretrain the video and audio encoders with `cfg.variant`, resuming from `out_dir` if it holds a checkpoint.

    Input problems (config, paths, unusable data, a checkpoint of another config) raise XDCError subclasses before
    anything is written. A stop request checkpoints and returns with `stopped=True`; the run can be resumed.
    """
    cfg.validate()
    out_dir = writable_dir(out_dir)
    device = resolve_device(cfg.device)
    group = init_distributed(device.type)
    run = None
    try:
        run = _Pretraining(cfg, tracker if (tracker is not None and group.main) else NullTracker(),
                           Path(out_dir), group, device, on_progress, should_stop)
        return run.execute()
    finally:
        # The DDP reducer must go while the process group is still registered: were it the group's last owner, its
        # destructor would join gloo's threads while holding the GIL those threads need to free their tensors.
        del run
        gc.collect()
        shutdown(group)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast on CUDA unless fp32 is asked for; CPUs train in fp32."""
    return device.type == "cuda" and precision in ("auto", "bf16")


class _Pretraining:
    def __init__(self, cfg: PretrainConfig, tracker: Tracker, out_dir: Path, group: Dist, device: torch.device,
                 on_progress: ProgressFn | None, should_stop: Callable[[], bool] | None):
        self.cfg, self.tracker, self.out_dir, self.group, self.device = cfg, tracker, out_dir, group, device
        self.on_progress = on_progress or (lambda fraction, eta, stage: None)
        self.should_stop = should_stop or (lambda: False)
        self.variant = VARIANTS[cfg.variant]
        self.bf16 = uses_bf16(device, cfg.precision)
        self.position = {"round": 0, "epoch": 0, "step": 0, "global_step": 0}
        self.assignments: dict[str, np.ndarray] = {}
        self.previous: dict[str, np.ndarray] = {}
        self.round_metrics: dict[str, float] = {}
        self.failed_clips = 0
        self.run_id: str | None = None
        self.resumed_from: dict[str, int] | None = None

    # -- setup -------------------------------------------------------------------------------------------------

    def execute(self) -> PretrainResult:
        self.data = self._load_data()
        self._check_data()
        state = load_latest(self.checkpoint_dir)
        if state is not None:
            self._check_resumable(state)
        self._build(state)
        if self._finished():
            self._send_spooled(state)
            return self._result(stopped=False)
        self._start_tracking(state)
        try:
            self._loop()
        except StopRequested:
            self._save_checkpoint()
            self.tracker.finish("KILLED")
            return self._result(stopped=True)
        except BaseException as exc:
            try:
                self.tracker.finish("FAILED", error=_reason(exc))
            except TrackingError as tracking:  # the run's own failure is the news; the spool keeps the rest
                log.warning("%s", tracking)
            raise
        self._finalize()
        return self._result(stopped=False)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def final_path(self) -> Path:
        return self.out_dir / "final.pt"

    def _load_data(self) -> VideoSet:
        # Rank 0 probes and caches the index first, so the other ranks read the cache instead of probing again.
        data = load_video_set(self.cfg.data) if self.group.main else None
        self.group.barrier()
        return data if data is not None else load_video_set(self.cfg.data)

    def _check_data(self) -> None:
        n = len(self.data.videos)
        if self.variant.needs_labels and not self.data.labeled:
            raise DataError(f"variant {self.variant.name!r} needs labels; layout {self.cfg.data.layout!r} at "
                            f"{self.cfg.data.path} has none")
        for space in self.variant.spaces:
            k = self._k(space)
            if k > n:
                raise ConfigError(f"cluster.k_{space}={k} exceeds the {n} usable videos")

    def _clustered_spaces(self) -> tuple[str, ...]:
        """The variant's target spaces and, on data with labels or known factors, the other spaces too: clustered
        only to diagnose what each modality's (and the joint) features follow, never trained on."""
        if not self.variant.spaces or not (self.data.labeled or self.data.factors):
            return self.variant.spaces
        return self.variant.spaces + tuple(s for s in ("video", "audio", "joint") if s not in self.variant.spaces)

    def _k(self, target: str) -> int:
        if target == "label":
            return len(self.data.classes)
        return getattr(self.cfg.cluster, f"k_{target}")

    def _check_resumable(self, state: dict[str, Any]) -> None:
        saved = PretrainConfig.from_dict(state["config"]).flat()
        wanted = self.cfg.flat()
        changed = sorted(k for k in wanted if k not in RUNTIME_KEYS and saved.get(k) != wanted[k])
        if changed:
            first = changed[0]
            raise ConfigError(f"{self.out_dir} holds a run with a different config ({first}: {saved.get(first)!r} "
                              f"there, {wanted[first]!r} now); use another output directory")
        if state["videos"] != [v.path for v in self.data.videos]:
            raise DataError(f"the usable files of {self.cfg.data.path} changed since the checkpoint in "
                            f"{self.out_dir}; use another output directory")

    def _build(self, state: dict[str, Any] | None) -> None:
        _seed_everything(self.cfg.seed)
        heads = {h.name: (h.encoder, self._k(h.target)) for h in self.variant.heads}
        model = AVModel(video_width=self.cfg.model.video_width, audio_width=self.cfg.model.audio_width, heads=heads,
                        video_input=self.cfg.model.video_input, audio_norm=self.cfg.model.audio_norm)
        self.model = model.to(self.device)
        if self.cfg.channels_last and self.device.type == "cuda":
            self.model.video.to(memory_format=torch.channels_last_3d)
            self.model.audio.to(memory_format=torch.channels_last)
        if self.cfg.compile:  # Module.compile keeps the parameters' names, so checkpoints read either way
            self.model.video.compile()
            self.model.audio.compile()
        self.optimizer = _optimizer(self.model, self.cfg)
        self.steps_per_epoch = max(1, round(len(self.data.videos) * self.cfg.data.clips_per_video
                                            / (self.cfg.batch_size * self.group.world)))
        self.total_steps = self.steps_per_epoch * self.cfg.total_epochs
        self.scheduler = _scheduler(self.optimizer, self.cfg, self.steps_per_epoch)
        if state is not None:
            self._restore(state)
            self.resumed_from = dict(self.position)
        self.pace = self._pace()
        self.net = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.group.active else self.model)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.position = dict(state["position"])
        self.assignments = {k: np.asarray(v) for k, v in state["assignments"].items()}
        self.previous = {k: np.asarray(v) for k, v in state.get("previous", {}).items()}
        self.run_id = state.get("run_id")
        _set_rng_state(state["rng"])

    def _finished(self) -> bool:
        return self.position["round"] >= self.cfg.rounds and self.final_path.exists()

    def _send_spooled(self, state: dict[str, Any] | None) -> None:
        """A finished run whose last attempt could not reach MLflow: send what waits in the spool and end the run."""
        spool = self.out_dir / "tracking"
        if state and state.get("run_id") and hasattr(self.tracker, "open_spool") and (spool / "ops.jsonl").exists():
            self.tracker.open_spool(spool)
            if self.tracker.spool.unsent():
                self.tracker.start(experiment=self.cfg.experiment, run_name=self.cfg.run_name,
                                   run_id=state["run_id"], tags={})
                self.tracker.finish("FINISHED")

    def _start_tracking(self, state: dict[str, Any] | None) -> None:
        if hasattr(self.tracker, "open_spool"):  # MLflow: through a durable spool next to the checkpoints
            self.tracker.open_spool(self.out_dir / "tracking")
        run_id = state.get("run_id") if state else None
        tags = {"variant": self.cfg.variant, "git_sha": git_sha(), "xdc_version": __version__, "kind": "pretrain"}
        self.run_id = self.tracker.start(experiment=self.cfg.experiment, run_name=self.cfg.run_name,
                                         run_id=run_id, tags=tags)
        if run_id is None:
            self.tracker.log_params(self.cfg.flat())
            self._log_data_report()

    def _log_data_report(self) -> None:
        counts = self.data.screened.skipped_counts
        self.tracker.log_metrics({"data/usable": len(self.data.videos),
                                  **{f"data/skipped_{k}": v for k, v in counts.items()}}, step=0)
        report = self.out_dir / "skipped_files.tsv"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(self.data.screened.report())
        self.tracker.log_artifact(report, "data")

    # -- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        self.pace.start(self.position["global_step"])
        while self.position["round"] < self.cfg.rounds:
            if not self.assignments:
                with self.pace.round_beginning():
                    self._begin_round()
            self._train_epoch()
            self.position.update(epoch=self.position["epoch"] + 1, step=0)
            if self.position["epoch"] == self.cfg.epochs_per_round:
                self.previous, self.assignments = self.assignments, {}
                self.position.update(round=self.position["round"] + 1, epoch=0)
            self._save_checkpoint()  # holds the next position, so a resume starts exactly there

    def _begin_round(self) -> None:
        """Extract features, cluster them, share the assignments and give the heads fresh weights."""
        round_index = self.position["round"]
        if self.group.all_min(-1 if self.should_stop() else 0) < 0:  # agreed: one rank alone stopping here would
            raise StopRequested  # leave the others in the extraction's barrier with a peer gone
        # Where the round begins on the step axis, so charts of the loss can mark round boundaries.
        self.tracker.log_metrics({"train/round": round_index}, step=self.position["global_step"])
        self.on_progress(self._fraction(), self._eta(), f"round {round_index + 1}: clustering")
        assignments = None
        if self.variant.spaces:
            features = self._extract_features(round_index)
            assignments = self._cluster(features, round_index) if self.group.main else None
        assignments = self.group.broadcast(assignments) or {}
        assignments["label"] = np.array([v.label for v in self.data.videos], dtype=np.int64)
        self.assignments = assignments
        torch.manual_seed(self.cfg.seed + round_index)  # identical fresh heads on every rank
        self.model.reset_heads()
        _reset_optimizer_state(self.optimizer, self.model.heads.parameters())

    def _extract_features(self, round_index: int) -> dict[str, np.ndarray]:
        """Per-video features (mean over evenly spaced clips) of this rank's share of the videos, gathered on rank 0
        through memory-mapped files so host memory stays bounded."""
        workdir = self.out_dir / "features"
        workdir.mkdir(parents=True, exist_ok=True)
        ensure_free_space(workdir, self._feature_bytes(), "the round's feature files")
        mine = np.arange(len(self.data.videos))[self.group.rank::self.group.world]
        extract_features(self.model, [self.data.videos[i] for i in mine], self.cfg, self.device,
                         workdir / f"rank{self.group.rank}", bf16=self.bf16)
        self.group.barrier()
        if not self.group.main:
            return {}
        return _gather_shards(workdir, len(self.data.videos), self.group.world)

    def _feature_bytes(self) -> int:
        """What a round writes under features/ (memory maps that die with SIGBUS on a full disk, so it is checked
        before): per video the video and audio features in the rank shards, gathered, concatenated for the joint
        space, and each space's PCA-reduced copy for k-means; float32."""
        widths = self.model.video.feature_dim + self.model.audio.feature_dim
        pca = self.cfg.cluster.pca_dim or max(self.model.video.feature_dim, self.model.audio.feature_dim)
        return len(self.data.videos) * 4 * (3 * widths + 3 * pca + 2)

    def _cluster(self, features: dict[str, np.ndarray], round_index: int) -> dict[str, np.ndarray]:
        valid = features.pop("count") > 0
        spaces = self._clustered_spaces()
        if "joint" in spaces:
            features["joint"] = _joint_features(features["video"], features["audio"],
                                                self.out_dir / "features" / "joint.npy")
        assignments, ks = {}, {}
        for offset, space in enumerate(spaces):
            labels = np.full(len(valid), -1, dtype=np.int64)
            rows = features[space] if valid.all() else features[space][valid]
            try:
                # A space clustered only to diagnose never refuses a run: its K shrinks to the usable rows.
                k = self._k(space) if space in self.variant.spaces else min(self._k(space), len(rows))
                clustering = cluster_features(
                    rows, k=k, iterations=self.cfg.cluster.iterations,
                    pca_dim=self.cfg.cluster.pca_dim, whiten=self.cfg.cluster.whiten, redo=self.cfg.cluster.redo,
                    seed=self.cfg.seed * 1000 + round_index * 10 + offset,
                    scratch=self.out_dir / "features" / f"{space}.pre.npy")
            except ValueError as exc:
                raise TrainingError(f"round {round_index}: clustering the {space} features failed: {exc}") from exc
            labels[valid] = clustering.assignments
            assignments[space], ks[space] = labels, k
        self._report_round(assignments, valid, round_index, features=features, ks=ks)
        return assignments

    def _report_round(self, assignments: dict[str, np.ndarray], valid: np.ndarray, round_index: int, *,
                      features: dict[str, np.ndarray], ks: dict[str, int]) -> None:
        labels = np.array([v.label for v in self.data.videos]) if self.data.labeled else None
        metrics = diagnostics(assignments, previous=self.previous or None, labels=labels,
                              factors=self.data.factors.codes)
        metrics["extract_failed"] = float((~valid).sum())
        self.round_metrics = metrics
        self.tracker.log_metrics({f"cluster/{k}": v for k, v in metrics.items()}, step=round_index)
        table = write_assignments(self.out_dir / "assignments" / f"round_{round_index:03d}.csv",
                                  self.data.videos, assignments, self.data.classes, self.data.factors)
        plot = write_round_plot(self.out_dir / "diagnostics" / f"round_{round_index:03d}.png",
                                assignments, round_index, metrics)
        summary = self.out_dir / "diagnostics" / f"round_{round_index:03d}.json"
        summary.write_text(json.dumps(metrics, indent=1, sort_keys=True))
        self.tracker.log_artifact(table, "assignments")
        self.tracker.log_artifact(plot, "diagnostics")
        self.tracker.log_artifact(summary, "diagnostics")
        if self.cfg.gallery_members:
            folder = gallery_folder(self.out_dir, round_index)
            write_gallery(folder, data=self.data, cfg=self.cfg, round_index=round_index, features=features,
                          assignments=assignments, ks=ks)
            log_gallery(self.tracker, folder, f"gallery/{folder.name}")

    def _epoch_requests(self) -> np.ndarray:
        """This rank's clips for the current epoch, from a generator seeded by (seed, round, epoch)."""
        rng = np.random.default_rng([self.cfg.seed, self.position["round"], self.position["epoch"]])
        weights = self._sample_weights()
        per_step = self.cfg.batch_size * self.group.world
        per_visit = self.cfg.data.clips_per_decode
        ids = rng.choice(len(weights), size=self.steps_per_epoch * per_step // per_visit, p=weights)
        if per_visit == 1:
            requests = random_requests(self.data.videos, ids, self.cfg.data.clip_seconds, rng)
        else:
            requests = stretch_requests(self.data.videos, ids, self.cfg.data.clip_seconds, per_visit, rng)
        mine = requests.reshape(self.steps_per_epoch, self.group.world, self.cfg.batch_size, 3)[:, self.group.rank]
        return mine.reshape(-1, 3)[self.position["step"] * self.cfg.batch_size:]

    def _sample_weights(self) -> np.ndarray:
        """Each video's probability of being drawn for training this round: every cluster of every target
        clustering equally likely (DeepCluster's uniform sampling), or every usable video alike."""
        targets = [self.assignments[h.target] for h in self.variant.heads]
        usable = np.all([t >= 0 for t in targets], axis=0)
        if self.cfg.cluster.uniform_sampling:
            return uniform_weights([np.where(usable, t, -1) for t in targets])
        return usable / usable.sum()

    def _train_epoch(self) -> None:
        self.net.train()
        dataset = ClipDataset(self.data.videos, self._epoch_requests(), self.cfg.data, train=True,
                              clips_per_item=self.cfg.data.clips_per_decode)
        loader = clip_loader(dataset, batch_size=self.cfg.batch_size, workers=self.cfg.data.num_workers,
                             pin_memory=self.device.type == "cuda")
        targets = {name: torch.as_tensor(values, device=self.device) for name, values in self.assignments.items()}
        meter, epoch_meter = _LossMeter(self.device), _LossMeter(self.device)
        tick = began = time.monotonic()  # the epoch's own rate counts the loader's start-up, as every epoch pays it
        clips = 0
        for batch in loader:
            stop = self.should_stop()
            self.failed_clips += len(batch["failed"])
            agreed = self.group.all_min(-1 if stop else batch["size"])
            if agreed < 0:
                self._log_steps(meter, tick)  # the steps since the last log point are not lost to a stop
                raise StopRequested
            if agreed >= 2:  # BatchNorm needs two samples; a batch emptied by bad files is skipped on all ranks
                loss, values = self._train_step(batch, targets)
                meter.add(loss, values, batch["size"])
                epoch_meter.add(loss, values, batch["size"])
                clips += batch["size"]
            self.position["step"] += 1
            self.position["global_step"] += 1
            if self.position["global_step"] % self.cfg.log_every == 0:
                self._log_steps(meter, tick)
                meter, tick = _LossMeter(self.device), time.monotonic()
        self._log_steps(meter, tick)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.tracker.log_metrics({"train/epoch_clips_per_s": clips * self.group.world / (time.monotonic() - began)},
                                 step=self.position["global_step"])
        if self.position["epoch"] + 1 == self.cfg.epochs_per_round:
            self._report_fit(epoch_meter)

    def _report_fit(self, meter: _LossMeter) -> None:
        """Each head's top-1 on its targets over the round's last epoch (training clips, augmented), beside the
        round's cluster diagnostics: `fit_video_from_audio` says whether the video encoder could follow the
        audio clusters at all. Every rank takes part in the mean; rank 0 writes it."""
        fits = {name: value for name, value in meter.means(self.group).items() if name.startswith("fit_")} \
            if meter.count else {}
        if not fits or not self.group.main:
            return
        round_index = self.position["round"]
        if self.data.labeled:  # what a perfect class recogniser would fit, on the same draw of clips
            labels, weights = self.assignments["label"], self._sample_weights()
            fits |= {f"ceiling_{head.name}": class_ceiling(self.assignments[head.target], labels, weights)
                     for head in self.variant.heads if head.target != "label"}
        self.round_metrics.update(fits)
        self.tracker.log_metrics({f"cluster/{name}": value for name, value in fits.items()}, step=round_index)
        summary = self.out_dir / "diagnostics" / f"round_{round_index:03d}.json"
        if summary.is_file():  # a variant that clusters nothing (supervised) has no round summary to add to
            summary.write_text(json.dumps(json.loads(summary.read_text()) | fits, indent=1, sort_keys=True))
            self.tracker.log_artifact(summary, "diagnostics")

    def _train_step(self, batch: dict, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        video = normalize_video(batch["video"].to(self.device, non_blocking=True))  # B x 3 x T x S x S
        audio = batch["audio"].to(self.device, non_blocking=True)  # B x 1 x n_mels x frames
        if self.cfg.channels_last and self.device.type == "cuda":
            video = video.contiguous(memory_format=torch.channels_last_3d)
            audio = audio.contiguous(memory_format=torch.channels_last)
        index = batch["video_index"].to(self.device)
        batch_targets = {name: values[index] for name, values in targets.items()}  # each B
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(video, audio)  # head -> B x K
        loss, parts = variant_loss(logits, batch_targets, self.variant)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        values = {f"loss_{name}": value.detach() for name, value in parts.items()}
        with torch.no_grad():  # how well each encoder fits its targets: a teacher it cannot follow teaches nothing
            for head in self.variant.heads:
                hits = logits[head.name].argmax(dim=1) == batch_targets[head.target]
                values[f"fit_{head.name}"] = hits.float().mean()
        return loss.detach(), values

    def _log_steps(self, meter: _LossMeter, tick: float) -> None:
        if not meter.count:
            return
        values = meter.means(self.group)
        where = (f"round {self.position['round'] + 1}, epoch {self.position['epoch'] + 1}, "
                 f"step {self.position['global_step']}")
        if not all(math.isfinite(v) for v in values.values()):
            raise TrainingError(f"non-finite loss at {where}; lower optim.lr or set optim.grad_clip")
        seconds = max(time.monotonic() - tick, 1e-9)
        metrics = {f"train/{k}": v for k, v in values.items()}
        metrics["train/lr"] = self.scheduler.get_last_lr()[0]
        metrics["train/clips_per_s"] = meter.clips * self.group.world / seconds
        metrics["data/failed_clips"] = self.failed_clips
        self.tracker.log_metrics(metrics, step=self.position["global_step"])
        self.on_progress(self._fraction(), self._eta(), f"{where}, loss {values['loss']:.3f}")

    # -- checkpoints and the end -------------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        if not self.group.main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "position": dict(self.position),
            "assignments": _tensors(self.assignments),
            "previous": _tensors(self.previous),
            "rng": _rng_state(),
            "config": self.cfg.to_dict(),
            "run_id": self.run_id,
            "videos": [v.path for v in self.data.videos],
            "xdc_version": __version__,
        }
        save_checkpoint(self.checkpoint_dir, state, global_step=self.position["global_step"])

    def _finalize(self) -> None:
        if self.group.main:
            write_atomic(self.final_path, {
                "kind": "xdc-pretrained",
                "config": self.cfg.to_dict(),
                "variant": self.cfg.variant,
                "video": self.model.video.state_dict(),
                "audio": self.model.audio.state_dict(),
                "run_id": self.run_id,
                "xdc_version": __version__,
            })
            self.tracker.log_artifact(self.final_path, "checkpoints")
        self.on_progress(1.0, 0.0, "finished")
        self.tracker.finish("FINISHED")

    def _result(self, *, stopped: bool) -> PretrainResult:
        return PretrainResult(self.out_dir, getattr(self, "run_id", None), stopped,
                              self.final_path if self.final_path.exists() else None,
                              self.data.screened.skipped_counts, self.round_metrics, self.resumed_from)

    def _pace(self) -> Pace:
        """Measures this attempt's steps and round beginnings, each of which extracts its share of the videos."""
        share = math.ceil(len(self.data.videos) / self.group.world) if self.variant.spaces else 0
        return Pace(rounds=self.cfg.rounds, total_steps=self.total_steps, window_steps=self.steps_per_epoch,
                    begin_batches=share * self.cfg.data.extract_clips / self.cfg.batch_size)

    def _fraction(self) -> float:
        self.pace.reached(self.position["global_step"])
        return self.pace.fraction(begun=self._rounds_begun(), step=self.position["global_step"])

    def _eta(self) -> float | None:
        self.pace.reached(self.position["global_step"])
        return self.pace.seconds_left(begun=self._rounds_begun(), step=self.position["global_step"])

    def _rounds_begun(self) -> int:
        """Rounds whose features were extracted and clustered: the finished ones, and the current one once it has
        its assignments (a resume inside a round restores them)."""
        return self.position["round"] + bool(self.assignments)


class _LossMeter:
    """Sums the step's loss, each head's loss and fit on the device (no host sync per step); read at log points
    and at the end of an epoch only."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.clips = 0

    def add(self, loss: torch.Tensor, values: dict[str, torch.Tensor], clips: int) -> None:
        for name, value in {"loss": loss, **values}.items():
            self.sums[name] = self.sums.get(name, torch.zeros((), device=self.device)) + value.float()
        self.count += 1
        self.clips += clips

    def means(self, group: Dist) -> dict[str, float]:
        names = sorted(self.sums)
        totals = group.all_sum(torch.stack([self.sums[n] for n in names] +
                                           [torch.tensor(float(self.count), device=self.device)]))
        return {name: float(totals[i] / totals[-1]) for i, name in enumerate(names)}


def extract_features(model: AVModel, videos: list, cfg: PretrainConfig, device: torch.device, workdir: Path, *,
                     bf16: bool = False) -> dict[str, np.ndarray]:
    """Mean video and audio features over `cfg.data.extract_clips` evenly spaced clips per video, written to
    memory-mapped .npy files in `workdir`; 'count' holds the clips that decoded (0: the video failed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    requests = even_requests(videos, cfg.data.extract_clips, cfg.data.clip_seconds)
    dataset = ClipDataset(videos, requests, cfg.data, train=False)
    loader = clip_loader(dataset, batch_size=cfg.batch_size, workers=cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    out = {
        "video": np.lib.format.open_memmap(workdir / "video.npy", "w+", np.float32,
                                           (len(videos), model.video.feature_dim)),
        "audio": np.lib.format.open_memmap(workdir / "audio.npy", "w+", np.float32,
                                           (len(videos), model.audio.feature_dim)),
        "count": np.lib.format.open_memmap(workdir / "count.npy", "w+", np.int32, (len(videos),)),
    }
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            if not batch["size"]:
                continue
            video = normalize_video(batch["video"].to(device, non_blocking=True))
            features = model.embed(video, batch["audio"].to(device, non_blocking=True))  # each B x D
            rows = batch["video_index"].numpy()
            for space in ("video", "audio"):
                np.add.at(out[space], rows, features[space].float().cpu().numpy())
            np.add.at(out["count"], rows, 1)
    seen = np.maximum(out["count"], 1)[:, None]
    for space in ("video", "audio"):
        out[space] /= seen
        out[space].flush()
    out["count"].flush()
    return out


def _gather_shards(workdir: Path, total: int, world: int) -> dict[str, np.ndarray]:
    if world == 1:
        return {name: np.load(workdir / "rank0" / f"{name}.npy", mmap_mode="r")
                for name in ("video", "audio", "count")}
    gathered = {}
    for name in ("video", "audio", "count"):
        shards = [np.load(workdir / f"rank{r}" / f"{name}.npy", mmap_mode="r") for r in range(world)]
        full = np.lib.format.open_memmap(workdir / f"{name}.npy", "w+", shards[0].dtype,
                                         (total, *shards[0].shape[1:]))
        for rank, shard in enumerate(shards):
            full[rank::world] = shard  # rank r extracted videos r, r + world, ...
        full.flush()
        gathered[name] = full
    return gathered


def _joint_features(video: np.ndarray, audio: np.ndarray, path: Path) -> np.ndarray:
    """Concatenation of the L2-normalised video and audio features (CDC), so neither modality dominates."""
    joint = np.lib.format.open_memmap(path, "w+", np.float32, (len(video), video.shape[1] + audio.shape[1]))
    for begin in range(0, len(video), 65536):
        parts = [np.asarray(x[begin:begin + 65536], dtype=np.float32) for x in (video, audio)]
        parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
        joint[begin:begin + len(parts[0])] = np.concatenate(parts, axis=1)
    return joint


def _optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: PretrainConfig, steps_per_epoch: int):
    o = cfg.optim
    total = steps_per_epoch * cfg.total_epochs
    warmup = steps_per_epoch * o.warmup_epochs

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if o.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if o.schedule == "step":
            return o.gamma ** (step // (steps_per_epoch * o.step_epochs))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _reset_optimizer_state(optimizer: torch.optim.Optimizer, params) -> None:
    for param in params:
        optimizer.state.pop(param, None)  # stale momentum would push fresh heads toward last round's clusters


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Cluster assignments as tensors, which a `weights_only` load reads back (numpy arrays it refuses)."""
    return {name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in arrays.items()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(item if not isinstance(item, list) else tuple(item) for item in state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"

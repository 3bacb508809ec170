"""The protocols' procedures: finetune, linear and retrieval on video benchmarks, svm on audio benchmarks.

Each runner takes the encoder, the benchmark data, labels (possibly shuffled as a control) and a `Context`, and
returns the parts of the result record it owns: metrics, per-class accuracy, confusion, and per-fold details.
Features for linear/retrieval/svm are extracted once per file (evenly spaced clips, DataLoader workers, inference
mode, bf16 autocast on CUDA); finetuning reads random clips through DataLoader workers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xdc.config import DataConfig
from xdc.data.clips import AudioClipDataset, ClipDataset, clip_loader, even_requests, random_requests
from xdc.data.transforms import normalize_video
from xdc.evaluation.benchmarks import EvalData, Part
from xdc.evaluation.metrics import average_by_owner, classification_metrics, recall_at_k
from xdc.errors import TrainingError


class Stopped(Exception):
    """The caller asked to stop; the evaluation ends without a result."""


@dataclass
class Labels:
    """Label of every file of EvalData.files: `train` is what classifiers are fitted to (permuted in the
    shuffled-labels control), `test` what they are scored against (always the true labels)."""

    train: np.ndarray
    test: np.ndarray


@dataclass
class Context:
    params: dict[str, Any]
    device: torch.device
    seed: int
    workers: int
    progress: Callable[[float, str], None] = lambda fraction, stage: None
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    failed_clips: int = 0

    @property
    def bf16(self) -> bool:
        return self.device.type == "cuda"

    def check_stop(self) -> None:
        if self.should_stop():
            raise Stopped


# -- features ---------------------------------------------------------------------------------------------------

def video_data_config(params: dict[str, Any]) -> DataConfig:
    return DataConfig(clip_frames=params["clip_frames"], fps=params["fps"], resize_short=params["resize_short"],
                      crop_size=params["crop_size"])


def audio_data_config(params: dict[str, Any]) -> DataConfig:
    return DataConfig(sample_rate=params["sample_rate"], n_mels=params["n_mels"], window_ms=params["window_ms"],
                      hop_ms=params["hop_ms"])


def even_clips(data: EvalData, indices: np.ndarray, clips: int, seconds: float) -> np.ndarray:
    """Evenly spaced requests for the files at `indices` of data.files (request rows carry global indices)."""
    requests = even_requests([data.files[i] for i in indices], clips, seconds)  # R x 3
    requests[:, 0] = np.asarray(indices)[requests[:, 0].astype(np.int64)]
    return requests


def extract(encoder: nn.Module, dataset, ctx: Context, *, modality: str,
            span: tuple[float, float] = (0.0, 1.0), stage: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Features of every request of `dataset`: (clips x D float32, owning file index per clip). Clips that fail to
    decode are dropped and counted in ctx.failed_clips."""
    loader = clip_loader(dataset, batch_size=ctx.params["batch_size"], workers=ctx.workers,
                         pin_memory=ctx.device.type == "cuda")
    encoder.eval()
    features, owners, done = [], [], 0
    with torch.inference_mode(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.bf16):
        for batch in loader:
            ctx.check_stop()
            ctx.failed_clips += len(batch["failed"])
            done += batch["size"] + len(batch["failed"])
            if batch["size"]:
                features.append(encoder(_inputs(batch, modality, ctx.device)).float().cpu().numpy())  # B x D
                owners.append(batch["video_index"].numpy())
            ctx.progress(span[0] + (span[1] - span[0]) * done / max(1, len(dataset)), stage)
    if not features:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features), np.concatenate(owners)


def _inputs(batch: dict, modality: str, device: torch.device) -> torch.Tensor:
    if modality == "video":
        return normalize_video(batch["video"].to(device, non_blocking=True))  # B x 3 x T x S x S
    return batch["audio"].to(device, non_blocking=True)  # B x 1 x n_mels x frames


def _video_features(encoder, data: EvalData, indices: np.ndarray, clips: int, ctx: Context,
                    span: tuple[float, float], stage: str) -> tuple[np.ndarray, np.ndarray]:
    dcfg = video_data_config(ctx.params)
    requests = even_clips(data, indices, clips, dcfg.clip_seconds)
    dataset = ClipDataset(data.files, requests, dcfg, train=False, with_audio=False)
    return extract(encoder, dataset, ctx, modality="video", span=span, stage=stage)


# -- linear -----------------------------------------------------------------------------------------------------

def run_linear(encoder: nn.Module, data: EvalData, labels: Labels, ctx: Context) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    part, p = data.parts[0], ctx.params
    x_train, train_owner = _video_features(encoder, data, part.train, p["train_clips"], ctx, (0.0, 0.6),
                                           "features of the training videos")
    x_test, test_owner = _video_features(encoder, data, part.test, p["test_clips"], ctx, (0.6, 0.9),
                                         "features of the test videos")
    _need_two_classes(labels.train[train_owner])
    ctx.progress(0.9, "fitting the linear classifier")
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(C=p["C"], max_iter=p["max_iter"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a capped L-BFGS is part of the protocol, not a problem to report
        classifier.fit(scaler.transform(x_train), labels.train[train_owner])
    clip_scores = _full_columns(classifier.predict_proba(scaler.transform(x_test)), classifier.classes_,
                                len(data.classes), fill=0.0)
    return _file_level(clip_scores, test_owner, part, data, labels)


# -- retrieval --------------------------------------------------------------------------------------------------

def run_retrieval(encoder: nn.Module, data: EvalData, labels: Labels, ctx: Context) -> dict[str, Any]:
    part, p = data.parts[0], ctx.params
    everything = np.concatenate([part.train, part.test])
    x, owner = _video_features(encoder, data, everything, p["clips"], ctx, (0.0, 0.95), "features of the videos")
    per_file = average_by_owner(x, owner, len(data.files))  # files x D
    if p["center"]:
        per_file = per_file - per_file[part.train].mean(axis=0, keepdims=True)
    ks = tuple(p["ks"])
    recalls, hits = recall_at_k(per_file[part.test], labels.test[part.test], per_file[part.train],
                                labels.train[part.train], ks)
    test_labels = labels.test[part.test]
    per_class = {data.classes[c]: float(hits[test_labels == c].mean()) for c in sorted(set(test_labels.tolist()))}
    return {"metrics": recalls, "per_class": per_class, "confusion": None}


# -- finetune ---------------------------------------------------------------------------------------------------

class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(video))  # B x classes


def run_finetune(encoder: nn.Module, data: EvalData, labels: Labels, ctx: Context) -> dict[str, Any]:
    part, p = data.parts[0], ctx.params
    _need_two_classes(labels.train[part.train])
    torch.manual_seed(ctx.seed)
    model = _Classifier(encoder, len(data.classes)).to(ctx.device)
    steps = max(1, math.ceil(len(part.train) * p["train_clips_per_video"] / p["batch_size"]))
    optimizer = torch.optim.SGD([
        {"params": model.encoder.parameters(), "lr": p["lr"]},
        {"params": model.head.parameters(), "lr": p["lr"] * p["head_lr_scale"]},
    ], momentum=p["momentum"], weight_decay=p["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(p, steps))
    targets = torch.as_tensor(labels.train, device=ctx.device)
    for epoch in range(p["epochs"]):
        loss = _finetune_epoch(model, optimizer, scheduler, data, part, targets, epoch, ctx)
        ctx.log({"finetune/loss": loss, "finetune/lr": scheduler.get_last_lr()[0]}, epoch)
        ctx.progress(0.85 * (epoch + 1) / p["epochs"], f"finetuning: epoch {epoch + 1}/{p['epochs']}, loss {loss:.3f}")
    x, owner = _video_features(model, data, part.test, p["test_clips"], ctx, (0.85, 1.0), "testing")
    clip_scores = torch.softmax(torch.from_numpy(x), dim=1).numpy()  # the model's outputs are logits
    return _file_level(clip_scores, owner, part, data, labels)


def _finetune_epoch(model: _Classifier, optimizer, scheduler, data: EvalData, part: Part, targets: torch.Tensor,
                    epoch: int, ctx: Context) -> float:
    p = ctx.params
    rng = np.random.default_rng([ctx.seed, epoch])
    dcfg = video_data_config(p)
    ids = rng.permutation(np.repeat(part.train, p["train_clips_per_video"]))
    requests = random_requests(data.files, ids, dcfg.clip_seconds, rng)
    loader = clip_loader(ClipDataset(data.files, requests, dcfg, train=True, with_audio=False),
                         batch_size=p["batch_size"], workers=ctx.workers, pin_memory=ctx.device.type == "cuda")
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        ctx.check_stop()
        ctx.failed_clips += len(batch["failed"])
        if batch["size"] < 2:  # BatchNorm needs two samples; a batch emptied by bad files is skipped
            continue
        video = normalize_video(batch["video"].to(ctx.device, non_blocking=True))  # B x 3 x T x S x S
        target = targets[batch["video_index"].to(ctx.device)]  # B
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.bf16):
            logits = model(video)  # B x classes
        loss = F.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total, count = total + float(loss.detach()), count + 1
    if count and not math.isfinite(total):
        raise TrainingError(f"non-finite finetuning loss in epoch {epoch + 1}")
    return total / max(count, 1)


def _schedule(p: dict[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
    warmup = steps_per_epoch * p["warmup_epochs"]
    total = steps_per_epoch * p["epochs"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if p["schedule"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return 1.0

    return factor


# -- svm (audio) ------------------------------------------------------------------------------------------------

def run_svm(encoder: nn.Module, data: EvalData, labels: Labels, ctx: Context) -> dict[str, Any]:
    """Features of every file once, then per part (ESC-50 fold): C by cross-validation, fit, test."""
    p = ctx.params
    dcfg = audio_data_config(p)
    requests = even_clips(data, np.arange(len(data.files)), p["clips_per_file"], p["clip_seconds"])
    dataset = AudioClipDataset(data.files, requests, dcfg, seconds=p["clip_seconds"])
    x, owner = extract(encoder, dataset, ctx, modality="audio", span=(0.0, 0.7), stage="audio features")
    folds = []
    for number, part in enumerate(data.parts):
        where = f"fold {part.split}" if data.groups is not None else "fitting"
        ctx.progress(0.7 + 0.3 * number / len(data.parts), f"svm: {where}")
        folds.append(_svm_part(x, owner, part, data, labels, ctx))
    return _combine_folds(folds, data)


def _svm_part(x: np.ndarray, owner: np.ndarray, part: Part, data: EvalData, labels: Labels,
              ctx: Context) -> dict[str, Any]:
    started = time.monotonic()
    in_train, in_test = np.isin(owner, part.train), np.isin(owner, part.test)
    _need_two_classes(labels.train[owner[in_train]])
    chosen, scores = _choose_c(x[in_train], owner[in_train], labels.train, data, ctx)
    model = _fit_svm(x[in_train], labels.train[owner[in_train]], chosen, ctx)
    clip_scores = _svm_scores(model, x[in_test], len(data.classes))
    result = _file_level(clip_scores, owner[in_test], part, data, labels)
    result.update(fold=part.split, train_files=len(part.train), test_files=len(part.test),
                  selection={"C": chosen, "cv_top1": scores}, seconds=round(time.monotonic() - started, 3))
    return result


def _choose_c(x: np.ndarray, owner: np.ndarray, labels: np.ndarray, data: EvalData,
              ctx: Context) -> tuple[float, dict[str, float]]:
    """C of the grid with the best mean file-level CV accuracy (the smaller C on ties)."""
    grid = [float(c) for c in ctx.params["C_grid"]]
    splits = _cv_splits(owner, labels, data, ctx)
    if not splits:
        return grid[len(grid) // 2], {}  # too few files per class to cross-validate: the grid's middle
    scores = {}
    for c in grid:
        ctx.check_stop()
        accuracies = []
        for fit_rows, val_rows in splits:
            model = _fit_svm(x[fit_rows], labels[owner[fit_rows]], c, ctx)
            clip_scores = _svm_scores(model, x[val_rows], len(data.classes))
            files = np.unique(owner[val_rows])
            per_file = average_by_owner(clip_scores, owner[val_rows], len(data.files))[files]
            accuracies.append(float((per_file.argmax(axis=1) == labels[files]).mean()))
        scores[repr(c)] = float(np.mean(accuracies))
    best = max(grid, key=lambda c: (scores[repr(c)], -c))
    return best, scores


def _cv_splits(owner: np.ndarray, labels: np.ndarray, data: EvalData, ctx: Context) -> list:
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

    y = labels[owner]
    if data.groups is not None:  # ESC-50: leave one training fold out
        groups = data.groups[owner]
        if len(np.unique(groups)) < 2:
            return []
        return list(LeaveOneGroupOut().split(_placeholder_rows(owner), y, groups))
    per_class = np.bincount(labels[np.unique(owner)])
    folds = min(ctx.params["cv_folds"], int(per_class[per_class > 0].min()))
    if folds < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=ctx.seed)
    return list(splitter.split(_placeholder_rows(owner), y, owner))


def _placeholder_rows(owner: np.ndarray) -> np.ndarray:  # splitters need an X; only y and groups matter
    return np.zeros((len(owner), 1))


def _fit_svm(x: np.ndarray, y: np.ndarray, c: float, ctx: Context):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    model = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=ctx.params["max_iter"], random_state=ctx.seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the iteration cap is part of the protocol
        model.fit(x, y)
    return model


def _svm_scores(model, x: np.ndarray, classes: int) -> np.ndarray:
    scores = model.decision_function(x)
    known = model.classes_
    if scores.ndim == 1:  # two classes: one signed margin for known[1]
        scores = np.stack([-scores, scores], axis=1)
    return _full_columns(scores, known, classes, fill=-1e6)


def _combine_folds(folds: list[dict[str, Any]], data: EvalData) -> dict[str, Any]:
    """One part: its result. Several (ESC-50 split 0): mean and std of each metric over folds; per-class accuracy
    and confusion pooled over the folds' test files (each file is tested once)."""
    if len(folds) == 1:
        return {**folds[0], "folds": None}
    metrics = {}
    for name in folds[0]["metrics"]:
        values = np.array([f["metrics"][name] for f in folds])
        metrics[name], metrics[f"{name}_std"] = float(values.mean()), float(values.std())
    confusion = np.sum([np.array(f["confusion"]) for f in folds], axis=0)
    totals = confusion.sum(axis=1)
    per_class = {data.classes[c]: float(confusion[c, c] / totals[c]) for c in range(len(data.classes)) if totals[c]}
    return {"metrics": metrics, "per_class": per_class, "confusion": confusion.tolist(), "folds": folds}


# -- shared -----------------------------------------------------------------------------------------------------

def _file_level(clip_scores: np.ndarray, owner: np.ndarray, part: Part, data: EvalData,
                labels: Labels) -> dict[str, Any]:
    """Clip scores averaged per test file, then top-1/top-5, per-class accuracy and the confusion matrix."""
    scores = average_by_owner(clip_scores, owner, len(data.files))[part.test]  # test files x classes
    return classification_metrics(scores, labels.test[part.test], data.classes)


def _full_columns(scores: np.ndarray, known: np.ndarray, classes: int, *, fill: float) -> np.ndarray:
    """A classifier's columns (its training classes) placed among all benchmark classes."""
    full = np.full((len(scores), classes), fill, dtype=np.float64)
    full[:, np.asarray(known, dtype=np.int64)] = scores
    return full


def _need_two_classes(train_labels: np.ndarray) -> None:
    from xdc.errors import DataError

    if len(np.unique(train_labels)) < 2:
        raise DataError("the training data holds fewer than two classes (or no decodable clip), so no classifier "
                        "can be trained")


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "finetune": run_finetune,
    "linear": run_linear,
    "retrieval": run_retrieval,
    "svm": run_svm,
}

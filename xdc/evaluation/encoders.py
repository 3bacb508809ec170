"""The encoder under evaluation: a pretrained checkpoint, a random initialisation, or the supervised baseline.

`plan_encoder` runs before any work and refuses what cannot be evaluated (not an xdc checkpoint, a state dict that
does not fit its declared architecture, a missing modality, an audio front end other than the protocol's) with
ConfigError. `build_encoder` then loads or trains it. A random init takes the architecture (width, fixed input
layers) of the pretraining preset named like the protocol's preset: tiny's, small's, or the full defaults.

The supervised baseline has no downloadable weights offline, so it is a `variant=supervised` pretraining
(xdc.train.pretrain, ground-truth labels supervise both encoders), trained once per (config, training files) and
cached under `$XDC_CACHE/supervised/<key>/final.pt`. Its budget is a pretraining preset that learns, whatever the
protocol's preset: the small and tiny protocols get the `small` pretraining (a wider network than tiny's, trained
for twelve epochs), the full protocols the full defaults, each on the protocol's own video input (frames, short
side, crop); the record's `checkpoint.budget` says which.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xdc.config import PretrainConfig, load_config, runtime_keys
from xdc.data import load_video_set
from xdc.data.clips import Video
from xdc.data.index import default_cache_dir
from xdc.errors import ConfigError, XDCError
from xdc.models import AudioResNet18, R2Plus1D18

# Protocol preset -> the pretraining preset the supervised baseline trains with ("" = the full defaults).
SUPERVISED_BUDGET = {"": "", "small": "small", "tiny": "small"}
AUDIO_FRONT_END = ("sample_rate", "n_mels", "window_ms", "hop_ms")
VIDEO_INPUT = ("clip_frames", "fps", "resize_short", "crop_size")


@dataclass
class EncoderPlan:
    kind: str  # pretrained | random | supervised
    modality: str  # video | audio
    width: int
    path: Path | None = None
    state: dict[str, Any] | None = None  # the loaded pretrained checkpoint
    variant: str = ""
    pretrain_run_id: str | None = None
    supervised: PretrainConfig | None = None
    supervised_files: list[tuple[str, str]] | None = None  # (absolute path, class name)
    budget: str | None = None  # the supervised baseline's pretraining preset ("full" for the defaults)
    input_layer: str = ""  # a random init's fixed input layer (a checkpoint's comes from its config)

    @property
    def short(self) -> str:
        if self.kind != "pretrained":
            return self.kind
        return self.path.parent.name or self.path.stem


def plan_encoder(*, checkpoint: str, modality: str, protocol_params: dict, preset: str, width: int, seed: int,
                 device: str, workers: int, pretrain_run_id: str = "", supervised_data: str = "",
                 train_files: list[tuple[str, str]] | None = None) -> EncoderPlan:
    """Check what `checkpoint` names without training anything. `train_files` (absolute path, class) is the
    benchmark's labelled training data, the supervised baseline's default when `supervised_data` is empty."""
    if checkpoint == "random":
        model = load_config(preset=preset or None).model  # the pretraining preset of the protocol preset's name
        return EncoderPlan("random", modality, width or getattr(model, f"{modality}_width"), variant="random",
                           input_layer=model.video_input if modality == "video" else model.audio_norm)
    if checkpoint == "supervised":
        return _plan_supervised(modality=modality, preset=preset, width=width, seed=seed, device=device,
                                workers=workers, supervised_data=supervised_data, train_files=train_files,
                                protocol_params=protocol_params)
    return _plan_pretrained(Path(checkpoint), modality, protocol_params, width, pretrain_run_id)


def build_encoder(plan: EncoderPlan, *, seed: int, on_progress: Callable | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The encoder module (on CPU) and the record's `checkpoint` section. Trains the supervised baseline if it is
    not cached yet; returns (None, section) when a stop was requested during that training."""
    if plan.kind == "supervised":
        final = _train_supervised(plan, on_progress, should_stop)
        if final is None:
            return None, {}
        plan.path, plan.state = final, _read_checkpoint(final)
        plan.pretrain_run_id = tracked_run_id(plan.state.get("run_id"))
    torch.manual_seed(seed)
    encoder = _architecture(plan.modality, plan.width, _input_layer(plan))
    if plan.state is not None:
        encoder.load_state_dict(plan.state[plan.modality])
    return encoder, _identity(plan)


def _identity(plan: EncoderPlan) -> dict[str, Any]:
    return {
        "path": str(plan.path) if plan.path else None,
        "sha256": file_sha256(plan.path) if plan.path else None,
        "kind": plan.kind,
        "variant": plan.variant,
        "pretrain_run_id": plan.pretrain_run_id or None,
        "modality": plan.modality,
        "width": plan.width,
        "input_layer": _input_layer(plan),
        "budget": plan.budget,
    }


def tracked_run_id(run_id: str | None) -> str | None:
    """The MLflow run id a checkpoint names; None for a run trained without tracking (NullTracker's ids)."""
    return None if not run_id or str(run_id).startswith("memory-") else str(run_id)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _architecture(modality: str, width: int, input_layer: str = "") -> nn.Module:
    if modality == "video":
        return R2Plus1D18(width=width, input=input_layer or "rgb")
    return AudioResNet18(width=width, norm=input_layer or "none")


def _input_layer(plan: EncoderPlan) -> str:
    """The encoder's fixed input layer (model.video_input / model.audio_norm) as its pretraining configured it, or
    for a random init as its protocol preset's pretraining preset has it."""
    if plan.state is None:
        return plan.input_layer
    model = PretrainConfig.from_dict(plan.state["config"]).model
    return model.video_input if plan.modality == "video" else model.audio_norm


# -- pretrained checkpoints -------------------------------------------------------------------------------------

def _plan_pretrained(path: Path, modality: str, params: dict, width: int, run_id: str) -> EncoderPlan:
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (give a final.pt of `xdc pretrain`, 'random' or "
                          f"'supervised')")
    state = _read_checkpoint(path)
    try:
        config = PretrainConfig.from_dict(state["config"])
    except (XDCError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {path} is not an xdc pretrained checkpoint (its config is unreadable: "
                          f"{exc})") from None
    if not isinstance(state.get(modality), dict):
        raise ConfigError(f"checkpoint {path} holds no {modality} encoder, which the protocol measures")
    declared = getattr(config.model, f"{modality}_width")
    if width and width != declared:
        raise ConfigError(f"checkpoint {path}: its {modality} encoder has width {declared}, the evaluation asks "
                          f"for width {width}")
    _check_state(path, modality, declared, state[modality])
    if modality == "audio":
        _check_front_end(path, config, params)
    return EncoderPlan("pretrained", modality, declared, path=path.resolve(), state=state, variant=config.variant,
                       pretrain_run_id=run_id or tracked_run_id(state.get("run_id")))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {path} is not an xdc pretrained checkpoint (unreadable: {reason})") from None
    if not isinstance(state, dict) or state.get("kind") != "xdc-pretrained":
        hint = " (a training checkpoint: use the run's final.pt)" if isinstance(state, dict) and "model" in state \
            else ""
        raise ConfigError(f"checkpoint {path} is not an xdc pretrained checkpoint{hint}")
    return state


def _check_state(path: Path, modality: str, width: int, state: dict) -> None:
    try:
        _architecture(modality, width).load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        name = "R(2+1)D-18" if modality == "video" else "audio ResNet-18"
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
        raise ConfigError(f"checkpoint {path}: its {modality} encoder does not match the {name} of width {width} "
                          f"its config declares ({detail[:200]})") from None


def _check_front_end(path: Path, config: PretrainConfig, params: dict) -> None:
    for key in AUDIO_FRONT_END:
        have, want = getattr(config.data, key), params[key]
        if float(have) != float(want):
            raise ConfigError(f"checkpoint {path}: its audio encoder was trained on {key}={have}, the protocol "
                              f"feeds {key}={want}; evaluate it under a protocol with the same audio front end")


# -- the supervised baseline ------------------------------------------------------------------------------------

def _plan_supervised(*, modality: str, preset: str, width: int, seed: int, device: str, workers: int,
                     supervised_data: str, train_files: list[tuple[str, str]] | None,
                     protocol_params: dict) -> EncoderPlan:
    budget = SUPERVISED_BUDGET[preset]
    width = width or getattr(load_config(preset=budget or None).model, f"{modality}_width")
    if supervised_data:
        files = _labelled_videos(supervised_data, workers)
    elif modality == "video" and train_files:
        files = sorted(train_files)
    else:
        raise ConfigError("checkpoint=supervised on an audio benchmark needs supervised_data (--supervised-data): "
                          "a labelled folder of videos with sound (labels.csv) to train the baseline on")
    overrides = ["variant=supervised", f"seed={seed}", f"device={device}", f"model.video_width={width}",
                 f"model.audio_width={width}", "data.layout=folder", f"data.num_workers={max(workers, 0)}"]
    # It trains on the frames the protocol measures it on; for a video benchmark the sound window is the clip's
    # own, so a benchmark's short videos are not skipped for a longer sound context that the measure never sees.
    overrides += [f"data.{key}={protocol_params[key]}" for key in VIDEO_INPUT if key in protocol_params]
    if modality == "video":
        overrides.append("data.audio_seconds=0")
    cfg = load_config(preset=budget or None, overrides=overrides)
    key = _supervised_key(cfg, files)
    folder = default_cache_dir() / "supervised" / key
    cfg.data.path = str(folder / "data")
    return EncoderPlan("supervised", modality, width, variant="supervised", supervised=cfg, supervised_files=files,
                       budget=budget or "full")


def _labelled_videos(root: str, workers: int) -> list[tuple[str, str]]:
    from xdc.config import DataConfig
    from xdc.errors import DataError

    data = load_video_set(DataConfig(path=root, layout="folder", split="all", num_workers=max(workers, 0)))
    if not data.labeled:
        raise DataError(f"supervised_data {root} has no labels.csv; the supervised baseline needs labels")
    return sorted((v.path, data.classes[v.label]) for v in data.videos)


def _supervised_key(cfg: PretrainConfig, files: list[tuple[str, str]]) -> str:
    flat = {k: v for k, v in cfg.flat().items() if k not in runtime_keys(PretrainConfig) and k != "data.path"}
    payload = json.dumps({"config": flat, "files": files}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _train_supervised(plan: EncoderPlan, on_progress: Callable | None,
                      should_stop: Callable[[], bool] | None) -> Path | None:
    from xdc.tracking import NullTracker
    from xdc.train import pretrain

    folder = Path(plan.supervised.data.path).parent
    if (folder / "final.pt").is_file():
        return folder / "final.pt"
    _write_labels(Path(plan.supervised.data.path), plan.supervised_files)

    def progress(fraction: float, eta: float | None, stage: str) -> None:
        if on_progress:
            on_progress(fraction, eta, f"supervised baseline: {stage}")

    result = pretrain(plan.supervised, NullTracker(), out_dir=folder, on_progress=progress, should_stop=should_stop)
    return None if result.stopped else result.final_checkpoint


def _write_labels(folder: Path, files: list[tuple[str, str]]) -> None:
    """A folder-layout dataset of exactly these files: a link to each under `folder/videos` (a folder dataset lists
    only files under its own root) and a labels.csv naming the links."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (path, label) in enumerate(files):
        link = videos / f"{index:06d}{Path(path).suffix}"
        if link.is_symlink() and os.readlink(link) != path:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(path)
        rows.append((link.relative_to(folder).as_posix(), label))
    tmp = folder / "labels.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    tmp.replace(folder / "labels.csv")


def video_files(files: list[Video], indices, classes: list[str]) -> list[tuple[str, str]]:
    return [(str(Path(files[i].path).resolve()), classes[files[i].label]) for i in indices]

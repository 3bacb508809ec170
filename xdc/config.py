"""The typed pretraining config: one dataclass tree that flows from a form or CLI to the trainer, MLflow and checkpoints.

`PretrainConfig.from_dict` is strict: an unknown key, a value of the wrong type or out of range raises ConfigError
naming the key. `to_dict()` is the JSON form stored on job rows and in checkpoints; `flat()` is the MLflow params form.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from xdc.errors import ConfigError


@dataclass
class DataConfig:
    """Clip sampling and audio/video preprocessing.

    Defaults follow common practice for R(2+1)D on Kinetics-style data: 8 frames at 8 fps (1 s windows) at 112 px
    crops from a 128 px short side. Audio is 16 kHz mono (holds the speech/event band up to 8 kHz at a quarter of
    the cost of 44.1 kHz), 40 log-mel bands over 25 ms Hann windows with a 10 ms hop (the standard framing of
    audio-event models), computed for the same 1 s window as the frames.
    """

    path: str = ""
    layout: str = "folder"
    split: str = "train"
    fold: int = 1
    clip_frames: int = 8
    fps: float = 8.0
    resize_short: int = 128
    crop_size: int = 112
    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    clips_per_video: int = 1
    extract_clips: int = 1
    num_workers: int = 2
    max_videos: int = 0

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    def validate(self) -> None:
        _positive(self, "clip_frames", "fps", "resize_short", "crop_size", "sample_rate", "n_mels", "window_ms",
                  "hop_ms", "clips_per_video", "extract_clips", "fold")
        _at_least(self, 0, "num_workers", "max_videos")
        if self.crop_size > self.resize_short:
            raise ConfigError(f"data.crop_size ({self.crop_size}) must not exceed data.resize_short ({self.resize_short})")
        if self.hop_ms > self.window_ms:
            raise ConfigError("data.hop_ms must not exceed data.window_ms")


@dataclass
class ModelConfig:
    """Encoder widths: 64 gives the published R(2+1)D-18 and ResNet-18 (512-d features); smaller widths keep CPU
    tests fast. Features are 8 x width wide."""

    video_width: int = 64
    audio_width: int = 64
    video_input: str = "rgb"  # rgb | grey | sobel: a fixed first layer against colour clusters (DeepCluster)
    audio_norm: str = "none"  # none | clip: standardise each log-mel clip, so loudness is not a feature

    def validate(self) -> None:
        _positive(self, "video_width", "audio_width")
        _choice(self, "video_input", ("rgb", "grey", "sobel"))
        _choice(self, "audio_norm", ("none", "clip"))


@dataclass
class ClusterConfig:
    """k-means per feature space (DeepCluster recipe: PCA-whitening, L2 normalisation, k-means)."""

    k_video: int = 64
    k_audio: int = 64
    k_joint: int = 64
    iterations: int = 20
    pca_dim: int = 128
    whiten: bool = True
    redo: int = 1
    uniform_sampling: bool = True

    def validate(self) -> None:
        for name in ("k_video", "k_audio", "k_joint"):
            if getattr(self, name) < 2:
                raise ConfigError(f"cluster.{name} must be at least 2, got {getattr(self, name)}")
        _positive(self, "iterations", "redo")
        _at_least(self, 0, "pca_dim")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    step_epochs: int = 10
    gamma: float = 0.1
    grad_clip: float = 0.0

    def validate(self) -> None:
        _choice(self, "name", ("sgd", "adamw"))
        _choice(self, "schedule", ("cosine", "constant", "step"))
        _positive(self, "lr", "step_epochs", "gamma")
        _at_least(self, 0, "momentum", "weight_decay", "warmup_epochs", "grad_clip")


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on. Saved in every checkpoint and logged flat to MLflow."""

    variant: str = "xdc"
    rounds: int = 10
    epochs_per_round: int = 1
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    log_every: int = 10
    experiment: str = "xdc-pretrain"
    run_name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.epochs_per_round

    def validate(self) -> PretrainConfig:
        from xdc.variants import VARIANTS

        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; known: {', '.join(sorted(VARIANTS))}")
        _positive(self, "rounds", "epochs_per_round", "batch_size", "log_every")
        _choice(self, "device", ("auto", "cpu", "cuda"))
        _choice(self, "precision", ("auto", "fp32", "bf16"))
        for section in (self.data, self.model, self.cluster, self.optim):
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PretrainConfig:
        return _build(cls, raw, prefix="").validate()


PRESETS: dict[str, dict[str, Any]] = {
    # A complete 2-round run on CPU in seconds: for smoke tests and CI.
    "tiny": {
        "rounds": 2, "epochs_per_round": 1, "batch_size": 8, "log_every": 2,
        "data": {"clip_frames": 4, "fps": 8.0, "resize_short": 40, "crop_size": 32, "n_mels": 32,
                 "num_workers": 0, "clips_per_video": 1},
        "model": {"video_width": 8, "audio_width": 8},
        "cluster": {"k_video": 4, "k_audio": 4, "k_joint": 4, "iterations": 10, "pca_dim": 16},
        "optim": {"lr": 0.05},
    },
    # The 2-core CPU budget (the demo's): about 5 minutes for a few hundred videos. The small evaluation protocols
    # share its inputs: 56 px crops of a 64 px short side (at 32 px not even a supervised encoder learns a
    # handwritten digit), 4 frames, 32 mel bands. Sobel input and per-clip log-mel standardisation keep the clusters
    # off ink colour and loudness; K over-clusters a handful of classes (README, `make compare`, for the numbers).
    "small": {
        "rounds": 4, "epochs_per_round": 3, "batch_size": 16, "log_every": 10,
        "data": {"clip_frames": 4, "fps": 8.0, "resize_short": 64, "crop_size": 56, "n_mels": 32,
                 "num_workers": 2, "clips_per_video": 4, "extract_clips": 2},
        "model": {"video_width": 16, "audio_width": 16, "video_input": "sobel", "audio_norm": "clip"},
        "cluster": {"k_video": 16, "k_audio": 16, "k_joint": 16, "iterations": 10, "pca_dim": 32},
        "optim": {"lr": 0.03, "warmup_epochs": 1},
    },
}


def load_config(*, preset: str | None = None, file: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None) -> PretrainConfig:
    """Defaults, then a preset, then a YAML/JSON file, then `key=value` overrides (dotted keys), validated once."""
    raw: dict[str, Any] = dict(base or {})
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        raw = deep_merge(raw, PRESETS[preset])
    if file:
        raw = deep_merge(raw, read_config_file(file))
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    return PretrainConfig.from_dict(raw)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return loaded


def parse_override(item: str) -> dict[str, Any]:
    """'cluster.k_video=128' -> {'cluster': {'k_video': '128'}}; the string is typed later against the dataclass."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def config_digest(cfg: PretrainConfig) -> str:
    """A stable text form used to check that a resumed run asks for the same config."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known in this section: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=f"{key}.")
        else:
            values[name] = _coerce(key, value, hint)
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        raise ConfigError(f"config key {key} has an unsupported type")  # pragma: no cover - no such fields today
    if hint is bool:
        return _to_bool(key, value)
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key {key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key {key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key} must be a string, got {value!r}")
    raise ConfigError(f"config key {key} has an unsupported type")  # pragma: no cover


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return value.strip().lower() in {"true", "1", "yes", "on"}
    raise ConfigError(f"config key {key} must be true or false, got {value!r}")


def _section(obj: Any) -> str:
    names = {DataConfig: "data.", ModelConfig: "model.", ClusterConfig: "cluster.", OptimConfig: "optim."}
    return names.get(type(obj), "")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(f"{_section(obj)}{name} must be positive, got {getattr(obj, name)!r}")


def _at_least(obj: Any, low: float, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < low:
            raise ConfigError(f"{_section(obj)}{name} must be at least {low}, got {getattr(obj, name)!r}")


def _choice(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(obj, name) not in allowed:
        raise ConfigError(f"{_section(obj)}{name} must be one of {', '.join(allowed)}, got {getattr(obj, name)!r}")

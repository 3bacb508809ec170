"""The typed pretraining config: one dataclass tree that flows from a form or CLI to the trainer, MLflow and checkpoints.

Each field declares its own bounds and allowed values (`setting`), so forms, the API and the CLI never re-declare
them. `PretrainConfig.from_dict` is strict: an unknown key, a value of the wrong type, not finite or out of range
raises ConfigError naming the key (`exc.key`). `to_dict()` is the JSON form stored on job rows and in checkpoints;
`flat()` is the MLflow params form.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from xdc.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider
CONFIG_FILE_BYTES = 1 << 20


def setting(default: Any, *, low: float | None = None, high: float | None = None, limit: float | None = None,
            above: float | None = None, below: float | None = None,
            choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
            longest: int = 200, runtime: bool = False, help: str = "") -> Any:
    """A config field that declares its own bounds, so no form, API or CLI re-declares them.

    `low`/`high` are inclusive, `above`/`below` exclusive; `limit` is an inclusive upper bound that is the lab's
    documented limit rather than a law (a deployment that needs more raises it with
    XDC_LIMITS="rounds=5000,cluster.k_video=200000"); `choices` the allowed strings (or a function returning them,
    for registries such as the variants or layouts); `longest` the longest string; `runtime` marks a key that does
    not change what is learnt (device, worker counts, names), so it may differ on resume and does not split a
    leaderboard row; `help` is what a form shows beside the field.
    """
    metadata = {"low": low, "high": high, "limit": limit, "above": above, "below": below, "choices": choices,
                "longest": longest, "runtime": runtime, "help": help}
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass
class DataConfig:
    """Clip sampling and audio/video preprocessing.

    Defaults follow common practice for R(2+1)D on Kinetics-style data: 8 frames at 8 fps (1 s windows) at 112 px
    crops from a 128 px short side. Audio is 16 kHz mono (holds the speech/event band up to 8 kHz at a quarter of
    the cost of 44.1 kHz), 40 log-mel bands over 25 ms Hann windows with a 10 ms hop (the standard framing of
    audio-event models), computed for the same 1 s window as the frames.
    """

    path: str = setting("", longest=4096, help="dataset root")
    layout: str = setting("folder", choices=lambda: _layouts(), help="how the dataset's files and splits are laid out")
    split: str = setting("train", longest=40)
    fold: int = setting(1, low=1, high=10)
    clip_frames: int = setting(8, low=1, limit=256, help="frames per clip")
    fps: float = setting(8.0, above=0, limit=120, help="frames per second sampled")
    resize_short: int = setting(128, low=8, limit=1024, help="pixels of the short side before cropping")
    crop_size: int = setting(112, low=8, limit=1024, help="pixels")
    sample_rate: int = setting(16000, low=1000, limit=192000, help="Hz")
    n_mels: int = setting(40, low=1, limit=512)
    window_ms: float = setting(25.0, above=0, limit=1000)
    hop_ms: float = setting(10.0, above=0, limit=1000)
    audio_seconds: float = setting(0.0, low=0, limit=60,
                                   help="audio window centred on the clip's, in seconds; 0 = the clip's own length")
    clips_per_video: int = setting(1, low=1, limit=1000, help="training clips per video and epoch")
    clips_per_decode: int = setting(1, low=1, limit=64,
                                    help="training clips cut from one decoded stretch of a video, together in a "
                                         "batch (must divide batch_size); fewer opens and seeks per clip")
    extract_clips: int = setting(1, low=1, limit=100, help="clips averaged per video for clustering")
    num_workers: int = setting(2, low=0, limit=128, runtime=True)
    max_videos: int = setting(0, low=0, limit=100_000_000, help="0 = all")

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    @property
    def audio_window(self) -> float:
        """Seconds of sound per clip: a longer context than the frames' (AVID's 2 s of audio around 0.5 s of video)
        when `audio_seconds` asks for one, else the clip's own window."""
        return self.audio_seconds or self.clip_seconds

    @property
    def span_seconds(self) -> float:
        """The shortest usable video: one clip, and its sound window."""
        return max(self.clip_seconds, self.audio_window)

    def validate(self) -> None:
        if self.crop_size > self.resize_short:
            raise ConfigError(f"data.crop_size ({self.crop_size}) must not exceed data.resize_short "
                              f"({self.resize_short})", key="data.crop_size")
        if self.hop_ms > self.window_ms:
            raise ConfigError("data.hop_ms must not exceed data.window_ms", key="data.hop_ms")
        from xdc.data.layouts import LAYOUTS

        reader = LAYOUTS[self.layout]
        if self.split not in reader.splits:
            raise ConfigError(f"data.split must be one of {', '.join(reader.splits)} for the {self.layout} layout, "
                              f"got {self.split!r}", key="data.split")
        if self.fold > reader.folds:
            raise ConfigError(f"data.fold must be in 1..{reader.folds} for the {self.layout} layout, got {self.fold}",
                              key="data.fold")


@dataclass
class StoreSettings:
    """How a prepared clip store (`xdc prepare`, xdc.data.store) holds frames and sound."""

    short_side: int = setting(128, low=8, limit=1024,
                              help="pixels of the frames' short side; jobs reading the store need "
                                   "data.resize_short at most this")
    fps: float = setting(0.0, low=0, limit=120, help="frames per second kept; 0 = each video's own rate")
    quality: int = setting(90, low=1, high=100, help="JPEG quality of the frames")
    sample_rate: int = setting(16000, low=1000, limit=192000, help="Hz of the mono sound")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StoreSettings:
        settings = _build(cls, raw, prefix="")
        check_fields(settings)
        return settings


class TypedConfig:
    """The JSON and MLflow forms of a top-level config dataclass, and its strict construction from JSON."""

    def validate(self):
        check_fields(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        return _build(cls, raw, prefix="").validate()


@dataclass
class PrepareConfig(TypedConfig):
    """A prepared clip store of a video dataset (`xdc prepare`, a lab prepare job): what it reads, how it stores it."""

    path: str = setting("", longest=4096, help="dataset root")
    layout: str = setting("folder", choices=lambda: _layouts(), help="how the dataset's files and splits are laid out")
    store: StoreSettings = section(StoreSettings)
    workers: int = setting(0, low=0, limit=256, runtime=True, help="processes; 0 = every core")
    experiment: str = setting("xdc-prepare", runtime=True)
    run_name: str = setting("", runtime=True)

    def validate(self) -> PrepareConfig:
        check_fields(self)
        if not self.path:
            raise ConfigError("path must name the dataset to prepare", key="path")
        return self


@dataclass
class ModelConfig:
    """Encoder widths: 64 gives the published R(2+1)D-18 and ResNet-18 (512-d features); smaller widths keep CPU
    tests fast. Features are 8 x width wide."""

    video_width: int = setting(64, low=1, limit=512)
    audio_width: int = setting(64, low=1, limit=512)
    video_input: str = setting("rgb", choices=("rgb", "grey", "sobel", "residual"),
                               help="a fixed first layer against colour clusters (DeepCluster)")
    audio_norm: str = setting("none", choices=("none", "clip"),
                              help="clip: standardise each log-mel clip, so loudness is not a feature")


@dataclass
class ClusterConfig:
    """k-means per feature space (DeepCluster recipe: PCA-whitening, L2 normalisation, k-means)."""

    k_video: int = setting(64, low=2, limit=100_000)
    k_audio: int = setting(64, low=2, limit=100_000)
    k_joint: int = setting(64, low=2, limit=100_000)
    iterations: int = setting(20, low=1, limit=1000)
    pca_dim: int = setting(128, low=0, limit=4096, help="0 = no PCA")
    whiten: bool = setting(True)
    redo: int = setting(1, low=1, limit=100)
    uniform_sampling: bool = setting(True)


@dataclass
class OptimConfig:
    name: str = setting("sgd", choices=("sgd", "adamw"))
    lr: float = setting(0.01, above=0, limit=10, help="learning rate")
    momentum: float = setting(0.9, low=0, below=1)
    weight_decay: float = setting(1e-4, low=0, high=1)
    schedule: str = setting("cosine", choices=("cosine", "constant", "step"))
    warmup_epochs: int = setting(0, low=0, limit=10_000)
    step_epochs: int = setting(10, low=1, limit=10_000)
    gamma: float = setting(0.1, above=0, high=1)
    grad_clip: float = setting(0.0, low=0, limit=1e6, help="0 = no clipping")


@dataclass
class PretrainConfig(TypedConfig):
    """Everything a pretraining run depends on. Saved in every checkpoint and logged flat to MLflow."""

    variant: str = setting("xdc", choices=lambda: _variants(), help="one job per variant (grid)")
    rounds: int = setting(10, low=1, limit=1000)
    epochs_per_round: int = setting(1, low=1, limit=1000)
    batch_size: int = setting(32, low=1, limit=8192)
    seed: int = setting(0, low=0, high=SEED_MAX)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), runtime=True)
    precision: str = setting("auto", choices=("auto", "fp32", "bf16"), runtime=True)
    channels_last: bool = setting(True, runtime=True)
    compile: bool = setting(False, runtime=True,
                            help="torch.compile the encoders (in place; checkpoints unchanged): the first steps "
                                 "compile for minutes, `make bench-gpu` measures what it gains")
    log_every: int = setting(10, low=1, limit=1_000_000, runtime=True)
    experiment: str = setting("xdc-pretrain", runtime=True)
    run_name: str = setting("", runtime=True)
    gallery_members: int = setting(4, low=0, limit=16, runtime=True,
                                   help="member videos shown per cluster and view in the round's gallery (0: no "
                                        "gallery)")
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    cluster: ClusterConfig = section(ClusterConfig)
    optim: OptimConfig = section(OptimConfig)

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.epochs_per_round

    def validate(self) -> PretrainConfig:
        check_fields(self)
        self.data.validate()  # what depends on more than one field
        if self.batch_size % self.data.clips_per_decode:
            raise ConfigError(f"data.clips_per_decode ({self.data.clips_per_decode}) must divide batch_size "
                              f"({self.batch_size})", key="data.clips_per_decode")
        return self


def _variants() -> Iterable[str]:
    from xdc.variants import VARIANTS

    return VARIANTS


def _layouts() -> Iterable[str]:
    from xdc.data.layouts import LAYOUTS

    return LAYOUTS


@dataclass(frozen=True)
class FieldSpec:
    """What a config key accepts, as declared on its field: for forms (bounds, choices, help) and error messages."""

    key: str
    type: type
    default: Any
    low: float | None
    high: float | None  # the tighter of the field's bound and its (raised) limit
    raisable: bool  # `high` is a lab limit that XDC_LIMITS raises
    above: float | None
    below: float | None
    choices: tuple[str, ...] | None
    longest: int
    runtime: bool
    help: str


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """Every leaf key of a config dataclass ('optim.lr', ...) with its declared bounds, limits from XDC_LIMITS
    applied. Built once per class and XDC_LIMITS value (every validation asks); read it, do not change it."""
    return _field_specs(cls, "", os.environ.get("XDC_LIMITS", "").strip())


@functools.lru_cache(maxsize=None)
def _field_specs(cls: type, prefix: str, limits_text: str) -> dict[str, FieldSpec]:
    hints = get_type_hints(cls)
    limits = _raised_limits(limits_text)
    specs: dict[str, FieldSpec] = {}
    for f in dataclasses.fields(cls):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(hint):
            specs |= _field_specs(hint, f"{key}.", limits_text)
            continue
        meta = f.metadata
        choices, limit = meta.get("choices"), meta.get("limit")
        if limit is not None and key in limits:
            limit = max(limit, limits[key])
        specs[key] = FieldSpec(
            key=key, type=hint, default=f.default, low=meta.get("low"),
            high=meta.get("high") if limit is None else limit, raisable=limit is not None, above=meta.get("above"),
            below=meta.get("below"), choices=tuple(choices() if callable(choices) else choices) if choices else None,
            longest=meta.get("longest", 200), runtime=meta.get("runtime", False), help=meta.get("help", ""))
    return specs


def runtime_keys(cls: type) -> frozenset[str]:
    """The dotted keys that do not change what is learnt or measured (declared `runtime` on their fields)."""
    return frozenset(key for key, spec in field_specs(cls).items() if spec.runtime)


def check_fields(cfg: Any) -> None:
    """Refuse any value outside what its field declares: non-finite numbers, bounds, choices, string length and
    characters a database or file name cannot hold. ConfigError names the dotted key."""
    for key, spec in field_specs(type(cfg)).items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        _check_value(spec, value)


def _check_value(spec: FieldSpec, value: Any) -> None:
    key = spec.key
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}", key=key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for bound, ok, words in ((spec.low, lambda b: value >= b, "at least"), (spec.high, lambda b: value <= b,
                                 "at most"), (spec.above, lambda b: value > b, "above"),
                                 (spec.below, lambda b: value < b, "below")):
            if bound is not None and not ok(bound):
                hint = " (the lab's limit; XDC_LIMITS raises it)" if bound is spec.high and spec.raisable else ""
                raise ConfigError(f"{key} must be {words} {_number(bound)}, got {value!r}{hint}", key=key)
    if isinstance(value, str):
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{key} must be one of {', '.join(spec.choices)}, got {value!r}", key=key)
        if len(value) > spec.longest:
            raise ConfigError(f"{key} must be at most {spec.longest} characters, got {len(value)}", key=key)
        check_text(key, value)


def check_text(key: str, value: str) -> None:
    """Text that PostgreSQL, JSON files and file systems all hold: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise ConfigError(f"{key} must not contain a NUL character", key=key)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{key} holds a lone surrogate, which is not text", key=key) from None


def _number(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _raised_limits(text: str) -> dict[str, float]:
    """XDC_LIMITS='rounds=5000,cluster.k_video=200000': upper bounds a deployment raises (never lowers)."""
    limits: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            limits[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"XDC_LIMITS item {item!r} must look like key=number", key="XDC_LIMITS") from None
    return limits


PRESETS: dict[str, dict[str, Any]] = {
    # A complete 2-round run on CPU in seconds, for smoke tests and CI: on 2 cores 6 s for 8 short videos, 20 s for
    # the demo's 480 (2026-12-05).
    "tiny": {
        "rounds": 2, "epochs_per_round": 1, "batch_size": 8, "log_every": 2,
        "data": {"clip_frames": 4, "fps": 8.0, "resize_short": 40, "crop_size": 32, "n_mels": 32,
                 "num_workers": 0, "clips_per_video": 1},
        "model": {"video_width": 8, "audio_width": 8},
        "cluster": {"k_video": 4, "k_audio": 4, "k_joint": 4, "iterations": 10, "pca_dim": 16},
        "optim": {"lr": 0.05},
    },
    # The 2-core CPU budget (the demo's): 6½ minutes for the demo's 360 training videos (2026-12-05). The small
    # evaluation protocols share its inputs: 56 px crops of a 64 px short side (at 32 px not even a supervised encoder
    # learns a handwritten digit), 4 frames, 32 mel bands. Sobel input and per-clip log-mel standardisation keep the
    # clusters off ink colour and loudness; K over-clusters a handful of classes; 2 s of sound around the 0.5 s clip
    # (AVID's audio context) hold a whole word or phrase, which the audio clusters follow far better than half a
    # second's fragment (README, `make compare`, for the numbers).
    "small": {
        "rounds": 4, "epochs_per_round": 3, "batch_size": 16, "log_every": 10,
        "data": {"clip_frames": 4, "fps": 8.0, "resize_short": 64, "crop_size": 56, "n_mels": 32,
                 "audio_seconds": 2.0, "num_workers": 2, "clips_per_video": 4, "extract_clips": 2},
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
        if path.stat().st_size > CONFIG_FILE_BYTES:
            raise ConfigError(f"config file {path} is larger than {CONFIG_FILE_BYTES // 1024} KiB; a config is a "
                              "few keys")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a config") from None
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
    where = prefix.rstrip(".") or None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}", key=where)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known in this section: {', '.join(fields)}",
                          key=prefix + unknown[0])
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
        raise ConfigError(f"config key {key} has an unsupported type", key=key)  # pragma: no cover - none today
    if hint is bool:
        return _to_bool(key, value)
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key} must be an integer, got {value!r}", key=key)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isascii():
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key {key} must be an integer, got {_shown(value)}", key=key)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().isascii():
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key {key} must be a number, got {_shown(value)}", key=key)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key} must be a string, got {_shown(value)}", key=key)
    raise ConfigError(f"config key {key} has an unsupported type", key=key)  # pragma: no cover


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return value.strip().lower() in {"true", "1", "yes", "on"}
    raise ConfigError(f"config key {key} must be true or false, got {_shown(value)}", key=key)

"""Evaluation protocols as data: a named, versioned definition holds every hyperparameter of a protocol.

A result names its protocol and version, so two numbers are comparable exactly when both match. Changing any
value below means adding a new version (never editing one in place); `tiny` definitions are separate entries whose
recorded name carries a "-tiny" suffix, so smoke-test numbers never mix with real ones; `small` definitions (the
2-core CPU budget that matches the `small` pretraining preset, recorded as "-small") likewise.

Protocols follow the usual downstream evaluation of self-supervised audio-video encoders (XDC, Alwassel et al.,
NeurIPS 2020, section 5): video-level accuracy from softmax averaged over evenly spaced clips for UCF101/HMDB51,
and a linear SVM on pooled conv features of the audio encoder, clip scores averaged per file, for ESC-50/DCASE.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from xdc.errors import ConfigError

VIDEO_BENCHMARKS = ("ucf101", "hmdb51", "folder")
AUDIO_BENCHMARKS = ("esc50", "dcase")

# Clip input. Video: 8 frames at 8 fps (1 s), 112 px centre/random crops of a 128 px short side, as in pretraining.
# Audio: 1 s windows of 16 kHz mono as 40 log-mel bands (25 ms / 10 ms), the pretraining front end.
_VIDEO_INPUT = {"clip_frames": 8, "fps": 8.0, "resize_short": 128, "crop_size": 112}
_VIDEO_INPUT_TINY = {"clip_frames": 4, "fps": 8.0, "resize_short": 40, "crop_size": 32}
# The CPU budget's video input, the small pretraining preset's: 56 px crops of a 64 px short side (at 32 px a
# handwritten digit or a letter is a few pixels of stroke and not even a supervised encoder learns it).
_VIDEO_INPUT_SMALL = {"clip_frames": 4, "fps": 8.0, "resize_short": 64, "crop_size": 56}
_AUDIO_INPUT = {"clip_seconds": 1.0, "sample_rate": 16000, "n_mels": 40, "window_ms": 25.0, "hop_ms": 10.0}
_AUDIO_INPUT_TINY = {"clip_seconds": 0.5, "sample_rate": 16000, "n_mels": 32, "window_ms": 25.0, "hop_ms": 10.0}


@dataclass(frozen=True)
class Protocol:
    name: str  # finetune | linear | retrieval | svm
    version: int
    preset: str  # "" (full), "small" (2-core CPU budget) or "tiny" (smoke test)
    modality: str  # whose encoder is measured: video | audio
    params: MappingProxyType
    description: str

    @property
    def label(self) -> str:
        """The name recorded in results: 'linear', or 'linear-tiny' / 'linear-small' for the CPU definitions."""
        return f"{self.name}-{self.preset}" if self.preset else self.name

    @property
    def benchmarks(self) -> tuple[str, ...]:
        return VIDEO_BENCHMARKS if self.modality == "video" else AUDIO_BENCHMARKS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.label, "version": self.version, "params": _plain(dict(self.params))}


PROTOCOLS: dict[tuple[str, str], dict[int, Protocol]] = {}


def register(name: str, version: int, *, modality: str, description: str, full: dict[str, Any],
             tiny: dict[str, Any]) -> None:
    """`full` and `tiny` as given; `small` is `tiny` on the small video input (the audio input is tiny's)."""
    small = {**tiny, **(_VIDEO_INPUT_SMALL if modality == "video" else {})}
    for preset, params in (("", full), ("tiny", tiny), ("small", small)):
        versions = PROTOCOLS.setdefault((name, preset), {})
        if version in versions:
            raise ValueError(f"protocol {name} v{version} ({preset or 'full'}) is registered twice")
        versions[version] = Protocol(name, version, preset, modality, MappingProxyType(dict(params)), description)


def resolve(name: str, *, version: int = 0, preset: str = "", benchmark: str | None = None) -> Protocol:
    """The protocol `name` at `version` (0 = the latest) for `preset`, checked against `benchmark`."""
    versions = PROTOCOLS.get((name, preset))
    if versions is None:
        known = ", ".join(sorted({n for n, _ in PROTOCOLS}))
        raise ConfigError(f"unknown protocol {name!r}; known: {known}")
    if version and version not in versions:
        raise ConfigError(f"protocol {name!r} has no version {version}; known: "
                          f"{', '.join(map(str, sorted(versions)))}")
    protocol = versions[version or max(versions)]
    if benchmark is not None and benchmark not in protocol.benchmarks:
        fitting = ", ".join(sorted(n for (n, p), v in PROTOCOLS.items()
                                   if p == preset and benchmark in next(iter(v.values())).benchmarks))
        raise ConfigError(f"protocol {name!r} does not apply to benchmark {benchmark!r} (it measures the "
                          f"{protocol.modality} encoder); protocols for {benchmark}: {fitting}")
    return protocol


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


register(
    "finetune", 1, modality="video",
    description="pretrained video encoder + new linear head, trained end to end on random clips with random crops "
                "and flips (SGD, momentum, cosine schedule after a linear warm-up); test: softmax averaged over "
                "`test_clips` evenly spaced centre-cropped clips per video",
    full={**_VIDEO_INPUT, "epochs": 12, "batch_size": 32, "train_clips_per_video": 1, "lr": 0.01,
          "head_lr_scale": 10.0, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 1,
          "test_clips": 10},
    tiny={**_VIDEO_INPUT_TINY, "epochs": 8, "batch_size": 8, "train_clips_per_video": 2, "lr": 0.005,
          "head_lr_scale": 20.0, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 0,
          "test_clips": 3},
)

register(
    "linear", 1, modality="video",
    description="frozen video encoder; features of `train_clips` evenly spaced centre-cropped clips per training "
                "video, standardised, train a multinomial logistic regression (L-BFGS, inverse regularisation C); "
                "test: probabilities averaged over `test_clips` clips per video",
    full={**_VIDEO_INPUT, "batch_size": 32, "train_clips": 10, "test_clips": 10, "C": 1.0, "max_iter": 1000},
    tiny={**_VIDEO_INPUT_TINY, "batch_size": 16, "train_clips": 3, "test_clips": 3, "C": 1.0, "max_iter": 500},
)

register(
    "retrieval", 1, modality="video",
    description="frozen video encoder; a video's feature is the mean over `clips` evenly spaced clips, centred "
                "on the training videos' mean (ReLU features share a large common component that would dominate "
                "cosine similarity) and L2-normalised; each test video queries the training videos by cosine similarity (exact faiss "
                "inner-product search); recall@k = share of queries with a same-class video among the top k",
    full={**_VIDEO_INPUT, "batch_size": 32, "clips": 10, "center": True, "ks": (1, 5, 10)},
    tiny={**_VIDEO_INPUT_TINY, "batch_size": 16, "clips": 3, "center": True, "ks": (1, 5, 10)},
)

register(
    "svm", 1, modality="audio",
    description="frozen audio encoder; pooled conv features (global average of the last stage) of `clips_per_file` "
                "evenly spaced windows per file, standardised; a linear SVM (scikit-learn LinearSVC) with C picked "
                "from `C_grid` by file-level cross-validation on the training data (ESC-50: leave one training "
                "fold out; DCASE: `cv_folds` stratified folds grouped by file); test: SVM scores averaged per file",
    full={**_AUDIO_INPUT, "batch_size": 32, "clips_per_file": 10, "C_grid": (0.001, 0.01, 0.1, 1.0, 10.0),
          "cv_folds": 3, "max_iter": 5000},
    tiny={**_AUDIO_INPUT_TINY, "batch_size": 16, "clips_per_file": 3, "C_grid": (0.01, 0.1, 1.0, 10.0),
          "cv_folds": 3, "max_iter": 2000},
)

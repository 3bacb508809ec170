"""A small synthetic audio-visual dataset written as real encoded media files.

Each class pairs a visual pattern (drifting stripes whose orientation, spatial frequency and drift velocity
identify the class) with a sound pattern (a harmonic tone whose pitch and amplitude-modulation rate identify the
class). Colour, brightness, phase, loudness, jitter and noise vary per video so that they are nuisances a model
must learn to ignore, and a `mismatch` fraction of clips carry the sound of another class so audio and video
share semantics only imperfectly, as in real footage.

The same material is also laid out as UCF101 (videos with split lists) and ESC-50 (sound tracks with a metadata
CSV) so the dataset readers for those formats can be exercised without the real corpora.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from xdc.data.factors import FACTORS_CSV
from xdc.errors import DataError

VIDEO_ENCODERS = {"h264": "libx264", "mpeg4": "mpeg4", "vp8": "libvpx", "vp9": "libvpx-vp9"}
AUDIO_ENCODERS = {"aac": "aac", "pcm_s16le": "pcm_s16le", "opus": "libopus"}
# Which codecs each container accepts; the muxer would fail later with a far less readable message.
CONTAINER_CODECS = {
    ".mp4": ({"h264", "mpeg4", "vp9"}, {"aac", "opus"}),
    ".avi": ({"h264", "mpeg4"}, {"aac", "pcm_s16le"}),
    ".mkv": ({"h264", "mpeg4", "vp8", "vp9"}, {"aac", "pcm_s16le", "opus"}),
    ".webm": ({"vp8", "vp9"}, {"opus"}),
    ".wav": (set(), {"pcm_s16le"}),
}

CLASS_WORDS = (
    "DrumRoll", "Siren", "Birdsong", "Engine", "Doorbell", "Rainfall", "Applause", "Whistle",
    "Thunder", "Chainsaw", "Clocktick", "Footsteps", "Keyboard", "Rooster", "SeaWaves", "Helicopter",
)

UCF_GROUPS = 25
# Official UCF101 splits: split k tests on groups SPLIT_TEST_GROUPS[k - 1]; the rest train.
SPLIT_TEST_GROUPS = (range(1, 8), range(8, 15), range(15, 22))
# A class's videos cycle through these group blocks so each split's test set sees the class early on.
GROUP_BLOCKS = (*SPLIT_TEST_GROUPS, range(22, UCF_GROUPS + 1))
ESC_FOLDS = 5
ESC_FIRST_SOURCE_ID = 100000

LOWEST_PITCH_HZ = 200.0
PITCH_SPAN = 8.0  # the highest class pitch is this many times the lowest
HARMONIC_WEIGHTS = (1.0, 0.5, 0.25)
AM_RATES_HZ = (2.0, 5.0, 9.0)
KEYFRAME_SECONDS = 1.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as yuv420p stores brightness
MIN_LUMA_CONTRAST = 60.0


@dataclass(frozen=True)
class SyntheticSummary:
    root: Path
    videos: int
    classes: list[str]
    mismatched: int  # clips whose audio comes from another class


@dataclass(frozen=True)
class VisualPattern:
    orientation: float  # radians, the direction across the stripes
    cycles: float  # stripe periods across the frame width
    speed: float  # signed drift, stripe periods per second


@dataclass(frozen=True)
class SoundPattern:
    pitch_hz: float
    am_rate_hz: float


@dataclass(frozen=True)
class ClipPlan:
    index: int
    label: int  # visual class
    audio_label: int  # class of the sound track
    seed: np.random.SeedSequence

    @property
    def mismatched(self) -> bool:
        return self.label != self.audio_label


@dataclass(frozen=True)
class UcfName:
    group: int
    clip: int


# --------------------------------------------------------------------------------------------------- encoding


def write_media(path: Path, *, frames: np.ndarray | None, fps: float, audio: np.ndarray | None, sample_rate: int,
                video_codec: str = "h264", audio_codec: str = "aac") -> None:
    """Encode frames (uint8 T x H x W x 3, H and W even) and/or mono audio (float32 in [-1, 1]) into one file.

    The container comes from the suffix (.mp4, .avi, .mkv, .webm, or .wav for audio only). Video codecs: 'h264'
    (libx264, yuv420p, a keyframe every second so seeking is cheap) or 'mpeg4' ('vp8'/'vp9' for webm). Audio
    codecs: 'aac' or 'pcm_s16le' ('opus' for webm). Missing parent folders are created.
    """
    path = Path(path)
    _check_media_arguments(path, frames, fps, audio, sample_rate, video_codec, audio_codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video_stream = _add_video_stream(container, frames, fps, video_codec) if frames is not None else None
        audio_stream = _add_audio_stream(container, sample_rate, audio_codec) if audio is not None else None
        if video_stream is not None:
            _encode_video(container, video_stream, frames)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)


def _check_media_arguments(path, frames, fps, audio, sample_rate, video_codec, audio_codec) -> None:
    suffix = path.suffix.lower()
    if suffix not in CONTAINER_CODECS:
        raise DataError(f"cannot write {path.name}: the suffix must be one of {', '.join(CONTAINER_CODECS)}")
    video_codecs, audio_codecs = CONTAINER_CODECS[suffix]
    if frames is None and audio is None:
        raise DataError(f"cannot write {path.name}: give frames, audio or both")
    if frames is not None:
        _check_frames(path, frames, fps)
        if video_codec not in video_codecs:
            raise DataError(f"cannot write {path.name}: {suffix} takes video codecs {sorted(video_codecs)}, "
                            f"not {video_codec!r}")
    if audio is not None:
        _check_audio(path, audio, sample_rate)
        if audio_codec not in audio_codecs:
            raise DataError(f"cannot write {path.name}: {suffix} takes audio codecs {sorted(audio_codecs)}, "
                            f"not {audio_codec!r}")


def _check_frames(path: Path, frames: np.ndarray, fps: float) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise DataError(f"cannot write {path.name}: frames must be a non-empty uint8 array T x H x W x 3, "
                        f"got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise DataError(f"cannot write {path.name}: frame height and width must be even, got {frames.shape[1:3]}")
    if not fps > 0:
        raise DataError(f"cannot write {path.name}: fps must be positive, got {fps}")


def _check_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    if audio.ndim != 1 or len(audio) == 0:
        raise DataError(f"cannot write {path.name}: audio must be a non-empty mono 1-D array, got {audio.shape}")
    if sample_rate <= 0:
        raise DataError(f"cannot write {path.name}: sample_rate must be positive, got {sample_rate}")


def _add_video_stream(container, frames: np.ndarray, fps: float, codec: str):
    rate = Fraction(fps).limit_denominator(1001)
    options = {"preset": "ultrafast", "threads": "1"} if codec == "h264" else {}
    if codec in ("vp8", "vp9"):
        options = {"deadline": "realtime", "cpu-used": "8"}
    stream = container.add_stream(VIDEO_ENCODERS[codec], rate=rate, options=options)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = max(1, round(fps * KEYFRAME_SECONDS))
    stream.codec_context.max_b_frames = 0
    return stream


def _add_audio_stream(container, sample_rate: int, codec: str):
    # The fast AAC coder encodes about three times quicker than the default at a quality tests cannot tell apart.
    options = {"aac_coder": "fast"} if codec == "aac" else {}
    stream = container.add_stream(AUDIO_ENCODERS[codec], rate=sample_rate, options=options)
    stream.layout = "mono"
    return stream


def _encode_video(container, stream, frames: np.ndarray) -> None:
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    # One frame for the whole track: PyAV re-chunks it to the encoder's frame size.
    samples = np.clip(audio, -1.0, 1.0).astype(np.float32)[None, :]  # samples: 1 x N
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# --------------------------------------------------------------------------------------------------- the dataset


def make_synthetic(out: Path, *, videos: int, seed: int = 0, classes: int = 6, duration: float = 3.0,
                   fps: float = 12.0, size: tuple[int, int] = (96, 72), sample_rate: int = 16000,
                   mismatch: float = 0.15, layouts: bool = True) -> SyntheticSummary:
    """Write `videos` synthetic clips of `classes` audio-visual classes under `out`, deterministically from `seed`.

    Always writes out/videos/vid_NNNNN.mp4 (H.264 + AAC, `size` = width x height) and out/labels.csv
    (path,label,audio_label,mismatched). With `layouts`, also writes the same material as a UCF101 tree
    (out/ucf101: AVI with H.264 + PCM, classInd and three train/test splits) and an ESC-50 tree (out/esc50: the
    sound tracks as WAV plus meta/esc50.csv). `mismatch` is the fraction of clips given another class's sound.
    """
    _check_synthetic_arguments(videos=videos, classes=classes, duration=duration, fps=fps, size=size,
                               sample_rate=sample_rate, mismatch=mismatch)

    def render(plan: ClipPlan) -> RenderedClip:
        frames, audio = _render_clip(plan, classes=classes, duration=duration, fps=fps, size=size,
                                     sample_rate=sample_rate)
        return RenderedClip(frames, audio)

    plans = plan_clips(videos=videos, classes=classes, mismatch=mismatch, seed=seed)
    return write_av_dataset(Path(out), plans, _class_names(classes), render, fps=fps, sample_rate=sample_rate,
                            layouts=layouts)


@dataclass
class RenderedClip:
    frames: np.ndarray  # T x H x W x 3, uint8
    audio: np.ndarray  # N, float32 in [-1, 1]
    factors: dict[str, str] = field(default_factory=dict)  # known nuisances of this clip: name -> value



def write_av_dataset(out: Path, plans: list[ClipPlan], names: list[str], render: Callable[[ClipPlan], RenderedClip],
                     *, fps: float, sample_rate: int, layouts: bool = True) -> SyntheticSummary:
    """Render every planned clip and write it as out/videos (with labels.csv) and, with `layouts`, as the UCF101
    and ESC-50 trees. Each tree's root also gets factors.csv: per file, the clip's known nuisance factors and the
    class of its sound (`audio_class`), which pretraining reads to tell what its clusters follow."""
    if (out / "labels.csv").exists():
        raise DataError(f"{out} already holds a dataset (labels.csv exists); choose an empty folder")
    ucf_names = _assign_ucf_names(plans)
    esc_folds = _assign_esc_folds(plans)
    factors: dict[str, list[tuple[str, dict[str, str]]]] = {"": [], "ucf101": [], "esc50": []}
    for plan in plans:
        clip = render(plan)
        clip_factors = {**clip.factors, "audio_class": names[plan.audio_label]}
        files = {"": _video_path(plan)}
        write_media(out / files[""], frames=clip.frames, fps=fps, audio=clip.audio, sample_rate=sample_rate)
        if layouts:
            files["ucf101"] = "UCF-101/" + _ucf_path(names[plan.label], ucf_names[plan.index])
            files["esc50"] = "audio/" + _esc_filename(plan, esc_folds[plan.index])
            write_media(out / "ucf101" / files["ucf101"], frames=clip.frames, fps=fps, audio=clip.audio,
                        sample_rate=sample_rate, audio_codec="pcm_s16le")
            write_media(out / "esc50" / files["esc50"], frames=None, fps=fps, audio=clip.audio,
                        sample_rate=sample_rate, audio_codec="pcm_s16le")
        for tree, relative in files.items():
            factors[tree].append((relative, clip_factors))
    for tree, rows in factors.items():
        if rows:
            _write_factors(out / tree / FACTORS_CSV, rows)
    if layouts:
        _write_ucf_lists(out / "ucf101" / "ucfTrainTestlist", plans, names, ucf_names)
        _write_esc_meta(out / "esc50" / "meta" / "esc50.csv", plans, names, esc_folds)
    # labels.csv goes last: its presence marks a finished dataset.
    _write_labels(out / "labels.csv", plans, names)
    return SyntheticSummary(root=out, videos=len(plans), classes=names,
                            mismatched=sum(plan.mismatched for plan in plans))


def _write_factors(path: Path, rows: list[tuple[str, dict[str, str]]]) -> None:
    columns = list(dict.fromkeys(name for _, values in rows for name in values))
    _write_csv(path, ["path", *columns], [[relative, *(values.get(c, "") for c in columns)]
                                          for relative, values in rows])


def _check_synthetic_arguments(*, videos, classes, duration, fps, size, sample_rate, mismatch) -> None:
    if not classes >= 2:
        raise DataError(f"classes must be at least 2, got {classes}")
    if not videos >= classes:
        raise DataError(f"videos must be at least classes ({classes}) so every class appears, got {videos}")
    if not duration > 0:
        raise DataError(f"duration must be positive, got {duration}")
    if not fps >= 8:
        # Below this the fastest class drift aliases and classes stop being distinguishable.
        raise DataError(f"fps must be at least 8, got {fps}")
    if len(size) != 2 or min(size) < 16 or size[0] % 2 or size[1] % 2:
        raise DataError(f"size must be (width, height), both even and at least 16, got {size}")
    if not sample_rate >= 8000:
        raise DataError(f"sample_rate must be at least 8000 so the class pitches fit, got {sample_rate}")
    if not 0 <= mismatch < 1:
        raise DataError(f"mismatch must be in [0, 1), got {mismatch}")


def _class_names(count: int) -> list[str]:
    # Past the word list, names repeat with a round number so they stay unique and CamelCase.
    return [CLASS_WORDS[i % len(CLASS_WORDS)] + (str(i // len(CLASS_WORDS) + 1) if i >= len(CLASS_WORDS) else "")
            for i in range(count)]


def plan_clips(*, videos: int, classes: int, mismatch: float, seed: int) -> list[ClipPlan]:
    plan_seed, *clip_seeds = np.random.SeedSequence(seed).spawn(videos + 1)
    rng = np.random.default_rng(plan_seed)
    labels = rng.permutation(np.arange(videos) % classes)
    audio_labels = _mismatched_sounds(labels, count=round(mismatch * videos), classes=classes, rng=rng)
    return [ClipPlan(index=i, label=int(labels[i]), audio_label=int(audio_labels[i]), seed=clip_seeds[i])
            for i in range(videos)]


def _mismatched_sounds(labels: np.ndarray, *, count: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sound classes: `labels`, except `count` random clips that get another class's sound.

    Where possible the chosen clips trade sounds among themselves, so every class keeps as many sound tracks as
    it has videos and audio-only layouts (ESC-50 folds) stay balanced.
    """
    audio_labels = labels.copy()
    chosen = rng.choice(len(labels), size=count, replace=False)
    chosen = chosen[np.argsort(labels[chosen], kind="stable")]
    largest_run = int(np.bincount(labels[chosen], minlength=classes).max()) if count else 0
    if count and 2 * largest_run <= count:
        # Sorted by class, a rotation by the longest same-class run never maps a clip onto its own class.
        audio_labels[chosen] = labels[np.roll(chosen, largest_run)]
        return audio_labels
    for clip in chosen:
        others = [c for c in range(classes) if c != labels[clip]]
        audio_labels[clip] = others[rng.integers(len(others))]
    return audio_labels


def _video_path(plan: ClipPlan) -> str:
    return f"videos/vid_{plan.index:05d}.mp4"


# --------------------------------------------------------------------------------------------------- rendering


def _visual_pattern(label: int, classes: int) -> VisualPattern:
    direction = 1.0 if (label // 2) % 2 == 0 else -1.0
    return VisualPattern(orientation=math.pi * label / classes, cycles=(2.5, 5.0)[label % 2],
                         speed=direction * (0.6, 1.2, 1.8)[label % 3])


def _sound_pattern(label: int, classes: int) -> SoundPattern:
    return SoundPattern(pitch_hz=LOWEST_PITCH_HZ * PITCH_SPAN ** (label / (classes - 1)),
                        am_rate_hz=AM_RATES_HZ[label % len(AM_RATES_HZ)])


def _render_clip(plan: ClipPlan, *, classes: int, duration: float, fps: float, size: tuple[int, int],
                 sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(plan.seed)
    frames = _render_frames(_visual_pattern(plan.label, classes), classes=classes,
                            frame_count=_frame_count(duration, fps), fps=fps, size=size, rng=rng)
    audio = _render_audio(_sound_pattern(plan.audio_label, classes), sample_count=round(duration * sample_rate),
                          sample_rate=sample_rate, rng=rng)
    return frames, audio


def _frame_count(duration: float, fps: float) -> int:
    return max(1, round(duration * fps))


def _render_frames(pattern: VisualPattern, *, classes: int, frame_count: int, fps: float, size: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """Drifting sinusoidal stripes in two random colours, with random phase, brightness and pixel noise."""
    width, height = size
    # Orientation jitter stays well inside the gap between neighbouring classes.
    tilt = rng.uniform(-1, 1) * min(math.radians(5), 0.2 * math.pi / classes)
    angle = pattern.orientation + tilt
    cycles = pattern.cycles * rng.uniform(0.95, 1.05)
    speed = pattern.speed * rng.uniform(0.9, 1.1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / width  # y, x: H x W, in frame widths
    across = x * math.cos(angle) + y * math.sin(angle)  # across: H x W
    times = np.arange(frame_count, dtype=np.float32) / fps  # times: T
    phase = 2 * math.pi * (cycles * across[None] - speed * times[:, None, None]) + rng.uniform(0, 2 * math.pi)
    profile = 0.5 + 0.5 * np.sin(phase, dtype=np.float32)  # profile: T x H x W
    background, foreground = _contrasting_colours(rng)
    frames = background + (foreground - background) * profile[..., None]  # frames: T x H x W x 3
    frames *= rng.uniform(0.7, 1.1)
    # Uniform rather than Gaussian noise: several times cheaper to draw, and just as much a nuisance.
    noise_std = rng.uniform(2, 12)
    frames += (rng.random(frames.shape, dtype=np.float32) - 0.5) * np.float32(noise_std * math.sqrt(12))
    return np.clip(frames, 0, 255).astype(np.uint8)


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Colour is a nuisance, but two colours of similar brightness would hide the pattern from grey-level models.
    while True:
        background, foreground = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        if abs(float((foreground - background) @ LUMA_WEIGHTS)) >= MIN_LUMA_CONTRAST:
            return background, foreground


def _render_audio(pattern: SoundPattern, *, sample_count: int, sample_rate: int,
                  rng: np.random.Generator) -> np.ndarray:
    """An amplitude-modulated harmonic tone with pitch jitter, random loudness and noise at a random SNR."""
    times = np.arange(sample_count, dtype=np.float64) / sample_rate  # times: N
    pitch = pattern.pitch_hz * rng.uniform(0.97, 1.03)
    tone = np.zeros(sample_count)
    for harmonic, weight in enumerate(HARMONIC_WEIGHTS, start=1):
        if harmonic * pitch < 0.45 * sample_rate:
            tone += weight * np.sin(2 * math.pi * harmonic * pitch * times + rng.uniform(0, 2 * math.pi))
    depth = rng.uniform(0.5, 0.9)
    rate = pattern.am_rate_hz * rng.uniform(0.95, 1.05)
    tone *= 1 - depth * (0.5 - 0.5 * np.cos(2 * math.pi * rate * times + rng.uniform(0, 2 * math.pi)))
    tone *= rng.uniform(0.1, 0.6) / np.abs(tone).max()
    snr_db = rng.uniform(5, 20)
    noise_std = np.sqrt(np.mean(tone**2)) / 10 ** (snr_db / 20)
    return np.clip(tone + rng.normal(0, noise_std, sample_count), -1, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------- layouts


def _assign_ucf_names(plans: list[ClipPlan]) -> dict[int, UcfName]:
    """UCF101 group and clip numbers per clip index.

    A class's videos cycle through the three test-group blocks and the train-only block, so from four videos a
    class on, every official split has that class in both its train and its test set.
    """
    names: dict[int, UcfName] = {}
    clips_in_group: dict[tuple[int, int], int] = {}
    seen_in_class: dict[int, int] = {}
    for plan in plans:
        order = seen_in_class.get(plan.label, 0)
        seen_in_class[plan.label] = order + 1
        block = GROUP_BLOCKS[order % len(GROUP_BLOCKS)]
        group = block[(order // len(GROUP_BLOCKS)) % len(block)]
        clip = clips_in_group.get((plan.label, group), 0) + 1
        clips_in_group[(plan.label, group)] = clip
        names[plan.index] = UcfName(group=group, clip=clip)
    return names


def _ucf_path(class_name: str, name: UcfName) -> str:
    return f"{class_name}/v_{class_name}_g{name.group:02d}_c{name.clip:02d}.avi"


def _write_ucf_lists(folder: Path, plans: list[ClipPlan], names: list[str], ucf_names: dict[int, UcfName]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_lines(folder / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(names)])
    ordered = sorted(plans, key=lambda p: (p.label, ucf_names[p.index].group, ucf_names[p.index].clip))
    for split, test_groups in enumerate(SPLIT_TEST_GROUPS, start=1):
        train = [p for p in ordered if ucf_names[p.index].group not in test_groups]
        test = [p for p in ordered if ucf_names[p.index].group in test_groups]
        _write_lines(folder / f"trainlist0{split}.txt",
                     [f"{_ucf_path(names[p.label], ucf_names[p.index])} {p.label + 1}" for p in train])
        _write_lines(folder / f"testlist0{split}.txt", [_ucf_path(names[p.label], ucf_names[p.index]) for p in test])


def _assign_esc_folds(plans: list[ClipPlan]) -> dict[int, int]:
    """ESC-50 fold (1..5) per clip index, round-robin within each sound class so every fold holds every class."""
    folds: dict[int, int] = {}
    seen_in_class: dict[int, int] = {}
    for plan in plans:
        order = seen_in_class.get(plan.audio_label, 0)
        seen_in_class[plan.audio_label] = order + 1
        folds[plan.index] = order % ESC_FOLDS + 1
    return folds


def _esc_filename(plan: ClipPlan, fold: int) -> str:
    # Real ESC-50 names are {fold}-{source clip id}-{take}-{target}.wav.
    return f"{fold}-{ESC_FIRST_SOURCE_ID + plan.index}-A-{plan.audio_label}.wav"


def _write_esc_meta(path: Path, plans: list[ClipPlan], names: list[str], folds: dict[int, int]) -> None:
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = [[_esc_filename(p, folds[p.index]), folds[p.index], p.audio_label, names[p.audio_label], False,
             ESC_FIRST_SOURCE_ID + p.index, "A"] for p in sorted(plans, key=lambda p: (folds[p.index], p.index))]
    _write_csv(path, header, rows)


def _write_labels(path: Path, plans: list[ClipPlan], names: list[str]) -> None:
    rows = [[_video_path(p), names[p.label], names[p.audio_label], int(p.mismatched)] for p in plans]
    _write_csv(path, ["path", "label", "audio_label", "mismatched"], rows)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------------------------------- bad media


def write_bad_media(out: Path, *, seed: int = 0) -> dict[str, Path]:
    """Write one file of each broken kind under `out` and return kind -> path.

    'corrupt' (random bytes with an .mp4 suffix), 'truncated' (a valid mp4 cut to ~40% of its bytes), 'silent'
    (valid video + an AAC track of digital silence), 'no_audio' (valid video, no audio stream), 'short' (valid
    audio and video, 0.25 s long).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fps, sample_rate = 12.0, 16000
    plan = ClipPlan(index=0, label=0, audio_label=0, seed=np.random.SeedSequence(seed))
    frames, audio = _render_clip(plan, classes=2, duration=1.0, fps=fps, size=(64, 48), sample_rate=sample_rate)
    paths = {kind: out / f"{kind}.mp4" for kind in ("corrupt", "truncated", "silent", "no_audio", "short")}
    paths["corrupt"].write_bytes(rng.bytes(8192))
    write_media(paths["truncated"], frames=frames, fps=fps, audio=audio, sample_rate=sample_rate)
    whole = paths["truncated"].read_bytes()
    paths["truncated"].write_bytes(whole[: int(len(whole) * 0.4)])
    write_media(paths["silent"], frames=frames, fps=fps, audio=np.zeros_like(audio), sample_rate=sample_rate)
    write_media(paths["no_audio"], frames=frames, fps=fps, audio=None, sample_rate=sample_rate)
    short_frames, short_samples = _frame_count(0.25, fps), round(0.25 * sample_rate)
    write_media(paths["short"], frames=frames[:short_frames], fps=fps, audio=audio[:short_samples],
                sample_rate=sample_rate)
    return paths

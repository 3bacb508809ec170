"""Decoding of real media files with PyAV: probing, and reading the frames and samples of one clip window."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from xdc.errors import MediaError

# Digital silence after AAC encoding is not exactly zero; anything below this peak carries no usable signal.
SILENCE_PEAK = 1e-4
# Sound is decoded from this many seconds before a window: the first frame a decoder gives after a seek lacks the
# overlap of the frame before it (AAC's MDCT), so its samples are wrong (up to 0.7 off on a full-scale tone, over the
# first ~20 ms); 0.2 s covers two frames of 1024 samples down to 11 kHz.
AUDIO_PREROLL = 0.2


@dataclass(frozen=True)
class MediaInfo:
    """What the index knows about a file after probing it once."""

    duration: float
    fps: float
    width: int
    height: int
    has_audio: bool
    audio_peak: float


def probe(path: str, *, check_audio: bool = True) -> MediaInfo:
    """Open a file, read its stream headers, decode its first video frame and (optionally) its whole audio track.

    Decoding the first frame catches files whose headers parse but whose payload is broken; decoding the audio
    measures its peak so silent tracks can be skipped before training.
    """
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = _single_threaded(container.streams.video[0])
            duration = _duration(container, stream)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            next(container.decode(stream))
            has_audio = bool(container.streams.audio)
            peak = _audio_peak(container) if (has_audio and check_audio) else 0.0
    except MediaError:
        raise
    except StopIteration:
        raise MediaError("video stream has no decodable frame") from None
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaError(f"cannot decode: {exc}") from None
    if duration <= 0 or fps <= 0:
        raise MediaError("unknown duration or frame rate")
    return MediaInfo(duration, fps, stream.codec_context.width, stream.codec_context.height, has_audio, peak)


def read_clip(path: str, *, start: float, num_frames: int, fps: float, short_side: int,
              sample_rate: int, with_audio: bool = True,
              audio_span: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames (uint8 T x H x W x 3, short side resized) sampled at `fps` from `start`, and the mono audio
    (float32, `sample_rate`) of the same window [start, start + num_frames / fps), or of `audio_span`
    (start, seconds) when given."""
    return read_clips(path, starts=[start], num_frames=num_frames, fps=fps, short_side=short_side,
                      sample_rate=sample_rate, with_audio=with_audio,
                      audio_spans=None if audio_span is None else [audio_span])[0]


def read_clips(path: str, *, starts: list[float], num_frames: int, fps: float, short_side: int,
               sample_rate: int, with_audio: bool = True,
               audio_spans: list[tuple[float, float]] | None = None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """`read_clip` for several windows of one file from one open, one seek and one forward decode of the stretch
    they span (frames that serve several clips are converted once); the sound of the stretch is decoded once too."""
    audio_spans = audio_spans or [(start, num_frames / fps) for start in starts]
    first = min(starts)
    try:
        with av.open(path) as container:
            targets = np.concatenate([start + np.arange(num_frames) / fps for start in starts])
            frames = _read_frames(container, targets, num_frames, fps, short_side)
            sounds = _read_sounds(container, audio_spans, sample_rate) if with_audio else [None] * len(starts)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode clip at {first:.2f}s: {exc}") from None
    return [(frames[i * num_frames:(i + 1) * num_frames], sounds[i]) for i in range(len(starts))]


def read_audio(path: str, *, start: float, seconds: float, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of [start, start + seconds) from an audio-only or audio-video file."""
    try:
        with av.open(path) as container:
            return _read_audio(container, start, seconds, sample_rate)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode audio at {start:.2f}s: {exc}") from None


def audio_duration(path: str) -> float:
    """Length in seconds of a file's first audio stream (for audio-only datasets such as ESC-50)."""
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream")
            return _duration(container, container.streams.audio[0])
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode: {exc}") from None


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _audio_peak(container) -> float:
    stream = container.streams.audio[0]
    container.seek(0)
    peak = 0.0
    for frame in container.decode(stream):
        samples = frame.to_ndarray()
        if samples.dtype.kind == "i":
            samples = samples / float(np.iinfo(samples.dtype).max)
        peak = max(peak, float(np.abs(samples).max(initial=0.0)))
    return peak


def _seek(container, stream, seconds: float) -> None:
    # Seek to the keyframe at or before `seconds` (0 when before the start); decoding then runs forward to the exact
    # time.
    target = max(0, int(seconds / stream.time_base))
    container.seek(target, stream=stream, backward=True, any_frame=False)


def _single_threaded(stream):
    """One thread for decoding (and, with `threads=1`, for scaling): files are decoded in parallel by the loader's
    workers or the index's processes, and a short clip gains nothing from FFmpeg's own threads, which each file open
    (and each scale) would start anew, one per core: on a 16-core machine that made a clip several times slower."""
    stream.thread_type = "NONE"
    stream.thread_count = 1
    return stream


def _resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _read_frames(container, targets: np.ndarray, clip_frames: int, fps: float, short_side: int) -> np.ndarray:
    """The frame shown at each target time (targets: clips of `clip_frames` times each, in any order), as
    uint8 len(targets) x H x W x 3. A clip whose end lies past the stream's last frame by more than a quarter of its
    frames is refused; a shorter shortfall holds the last frame."""
    stream = _single_threaded(container.streams.video[0])
    width, height = _resized_size(stream.codec_context.width, stream.codec_context.height, short_side)
    order = np.argsort(targets, kind="stable")
    ordered = targets[order]
    half_frame = 0.5 / float(stream.average_rate or fps)
    converted: dict[str, object] = {"frame": None, "array": None}

    def rgb(frame) -> np.ndarray:
        # A frame that serves several targets (upsampled frame rate, overlapping clips) is converted once.
        if converted["frame"] is not frame:
            converted["frame"] = frame
            converted["array"] = frame.to_ndarray(format="rgb24", width=width, height=height, threads=1)
        return converted["array"]

    _seek(container, stream, float(ordered[0]))
    picked: list[np.ndarray] = []
    previous = None
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        # A target time is served by the newest frame shown at or before it (frame-rate conversion by holding).
        while len(picked) < len(ordered) and frame.time > ordered[len(picked)] + half_frame:
            picked.append(rgb(previous if previous is not None else frame))
        if len(picked) == len(ordered):
            break
        previous = frame
    decoded = len(picked)
    short = np.zeros(len(targets), dtype=bool)
    short[order[decoded:]] = True  # targets past the stream's last frame
    missing = short.reshape(-1, clip_frames).sum(axis=1)
    if previous is None or missing.max() > max(1, clip_frames // 4):
        clip = int(np.argmax(missing))
        raise MediaError(f"only {clip_frames - missing[clip]} of {clip_frames} frames decodable from "
                         f"{targets[clip * clip_frames]:.2f}s")
    picked.extend(rgb(previous) for _ in range(len(ordered) - decoded))  # the stream ended inside a last window
    frames = np.empty((len(targets), *picked[0].shape), dtype=np.uint8)
    frames[order] = np.stack(picked)
    return frames


def _read_sounds(container, spans: list[tuple[float, float]], sample_rate: int) -> list[np.ndarray]:
    """Each (start, seconds) window of the sound, from one decode of the stretch they span."""
    if len(spans) == 1:
        return [_read_audio(container, *spans[0], sample_rate)]
    first = min(start for start, _ in spans)
    last = max(start + seconds for start, seconds in spans)
    stretch = _read_audio(container, first, last - first, sample_rate, short_ok=True)
    windows = []
    for start, seconds in spans:
        offset, wanted = int(round((start - first) * sample_rate)), int(round(seconds * sample_rate))
        windows.append(_fit_window(stretch[offset:offset + wanted], wanted, start))
    return windows


def _read_audio(container, start: float, seconds: float, sample_rate: int, *, short_ok: bool = False) -> np.ndarray:
    """Mono samples of [start, start + seconds); a track that ends inside the window is padded with silence when
    it fills half of it (refused when not), or returned as it is with `short_ok`."""
    if not container.streams.audio:
        raise MediaError("no audio stream")
    stream = container.streams.audio[0]
    wanted = int(round(seconds * sample_rate))
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    _seek(container, stream, start - AUDIO_PREROLL)
    chunks: list[np.ndarray] = []
    first_time = None
    have = 0
    for frame in container.decode(stream):
        if first_time is None:
            first_time = frame.time if frame.time is not None else start
        for out in resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1)
            chunks.append(chunk)
            have += chunk.size
        if first_time is not None and have >= (start - first_time) * sample_rate + wanted:
            break
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    if first_time is None:
        raise MediaError("audio stream has no decodable frame")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    offset = max(0, int(round((start - first_time) * sample_rate)))
    window = samples[offset:offset + wanted].astype(np.float32, copy=False)
    return window if short_ok else _fit_window(window, wanted, start)


def _fit_window(window: np.ndarray, wanted: int, start: float) -> np.ndarray:
    if window.size < wanted:
        if window.size < wanted // 2:
            raise MediaError(f"audio ends before the clip window at {start:.2f}s")
        window = np.pad(window, (0, wanted - window.size))  # the track is slightly shorter than the video
    return window

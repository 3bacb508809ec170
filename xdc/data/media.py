"""Decoding of real media files with PyAV: probing, and reading the frames and samples of one clip window."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from xdc.errors import MediaError

# Digital silence after AAC encoding is not exactly zero; anything below this peak carries no usable signal.
SILENCE_PEAK = 1e-4


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
    audio_start, seconds = audio_span or (start, num_frames / fps)
    try:
        with av.open(path) as container:
            frames = _read_frames(container, start, num_frames, fps, short_side)
            audio = _read_audio(container, audio_start, seconds, sample_rate) if with_audio else None
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode clip at {start:.2f}s: {exc}") from None
    return frames, audio


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
    # Seek to the keyframe at or before `seconds`; decoding then runs forward to the exact time.
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


def _read_frames(container, start: float, num_frames: int, fps: float, short_side: int) -> np.ndarray:
    stream = _single_threaded(container.streams.video[0])
    width, height = _resized_size(stream.codec_context.width, stream.codec_context.height, short_side)
    targets = start + np.arange(num_frames) / fps
    half_frame = 0.5 / float(stream.average_rate or fps)
    converted: dict[str, object] = {"frame": None, "array": None}

    def rgb(frame) -> np.ndarray:
        # A frame that serves several targets (upsampled frame rate) is converted once.
        if converted["frame"] is not frame:
            converted["frame"] = frame
            converted["array"] = frame.to_ndarray(format="rgb24", width=width, height=height, threads=1)
        return converted["array"]

    _seek(container, stream, start)
    picked: list[np.ndarray] = []
    previous = None
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        # A target time is served by the newest frame shown at or before it (frame-rate conversion by holding).
        while len(picked) < num_frames and frame.time > targets[len(picked)] + half_frame:
            picked.append(rgb(previous if previous is not None else frame))
        if len(picked) == num_frames:
            break
        previous = frame
    missing = num_frames - len(picked)
    if previous is None or missing > max(1, num_frames // 4):
        raise MediaError(f"only {len(picked)} of {num_frames} frames decodable from {start:.2f}s")
    picked.extend(rgb(previous) for _ in range(missing))  # the stream ended inside the window's last frames
    return np.stack(picked)


def _read_audio(container, start: float, seconds: float, sample_rate: int) -> np.ndarray:
    if not container.streams.audio:
        raise MediaError("no audio stream")
    stream = container.streams.audio[0]
    wanted = int(round(seconds * sample_rate))
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    _seek(container, stream, start)
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
    window = samples[offset:offset + wanted]
    if window.size < wanted:
        if window.size < wanted // 2:
            raise MediaError(f"audio ends before the clip window at {start:.2f}s")
        window = np.pad(window, (0, wanted - window.size))  # the track is slightly shorter than the video
    return window.astype(np.float32, copy=False)

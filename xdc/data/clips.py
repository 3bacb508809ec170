"""Clip datasets: which windows of which videos to read, and the Dataset that decodes and transforms them.

A *request* is one clip to read: (video index, start second, augmentation seed). The trainer draws an epoch's
requests from a seeded generator, so an epoch is the same after a resume; the Dataset only executes them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xdc.config import DataConfig
from xdc.data import media
from xdc.data.transforms import LogMel, crop_frames, to_video_tensor
from xdc.errors import MediaError


@dataclass(frozen=True)
class Video:
    path: str
    duration: float
    label: int = -1  # -1: unlabeled
    store: str = ""  # root of the prepared store that holds it ("": decode the file at `path`)


def media_of(video: Video):
    """What reads a video's clips: the prepared store holding it, or the decoder (the module `xdc.data.media`);
    both offer `read_clip` and `read_audio` with the same signatures and results."""
    if video.store:
        from xdc.data.store import open_store

        return open_store(video.store)
    return media


def random_requests(videos: list[Video], video_ids: np.ndarray, clip_seconds: float,
                    rng: np.random.Generator) -> np.ndarray:
    """One random window per entry of `video_ids`. Returns N x 3 float64: video index, start, seed."""
    durations = np.array([videos[i].duration for i in video_ids], dtype=np.float64)
    starts = rng.random(len(video_ids)) * np.maximum(durations - clip_seconds, 0.0)
    seeds = rng.integers(0, 2**31 - 1, size=len(video_ids))
    return np.stack([video_ids.astype(np.float64), starts, seeds.astype(np.float64)], axis=1)


def stretch_requests(videos: list[Video], video_ids: np.ndarray, clip_seconds: float, clips_per_visit: int,
                     rng: np.random.Generator) -> np.ndarray:
    """`clips_per_visit` random windows per entry of `video_ids`, all inside one stretch of `clips_per_visit` clip
    lengths (the whole video when shorter) placed at random: rows of one visit are consecutive, in time order, so one
    decode of the stretch serves them (`ClipDataset(clips_per_item=...)`). N * clips_per_visit x 3, as
    `random_requests`."""
    durations = np.array([videos[i].duration for i in video_ids], dtype=np.float64)
    stretch = np.minimum(clip_seconds * clips_per_visit, durations)
    stretch_starts = rng.random(len(video_ids)) * np.maximum(durations - stretch, 0.0)
    offsets = np.sort(rng.random((len(video_ids), clips_per_visit)), axis=1) \
        * np.maximum(stretch - clip_seconds, 0.0)[:, None]
    starts = (stretch_starts[:, None] + offsets).reshape(-1)
    seeds = rng.integers(0, 2**31 - 1, size=starts.size)
    ids = np.repeat(video_ids, clips_per_visit)
    return np.stack([ids.astype(np.float64), starts, seeds.astype(np.float64)], axis=1)


def even_requests(videos: list[Video], clips_per_video: int, clip_seconds: float) -> np.ndarray:
    """`clips_per_video` evenly spaced windows per video (the centre window when 1), for feature extraction."""
    rows = []
    for index, video in enumerate(videos):
        span = max(video.duration - clip_seconds, 0.0)
        starts = [span / 2] if clips_per_video == 1 else np.linspace(0.0, span, clips_per_video)
        rows.extend((index, float(start), 0.0) for start in starts)
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def audio_span(cfg: DataConfig, start: float, duration: float) -> tuple[float, float]:
    """(start, seconds) of a clip's sound: `cfg.audio_window` centred on the frames' window, kept inside the file."""
    seconds = cfg.audio_window
    centred = start + (cfg.clip_seconds - seconds) / 2
    return min(max(centred, 0.0), max(duration - seconds, 0.0)), seconds


class ClipDataset(Dataset):
    """Decodes requested windows into (uint8 video 3 x T x S x S, log-mel audio 1 x n_mels x frames).

    A clip that fails to decode is returned as a failure record instead of raising, so one bad file never stops
    a job; `collate_clips` drops it and reports its video index. `with_audio=False` reads frames only (video
    benchmarks such as UCF101, where many files have no sound track); items then carry no "audio".

    `clips_per_item` > 1 reads that many consecutive requests (one video's, from `stretch_requests`) with one
    decode: an item is then a list of clips, which `collate_clips` flattens and `clip_loader` batches by clips.
    """

    def __init__(self, videos: list[Video], requests: np.ndarray, cfg: DataConfig, *, train: bool,
                 with_audio: bool = True, clips_per_item: int = 1):
        if len(requests) % clips_per_item:
            raise ValueError(f"{len(requests)} requests do not split into items of {clips_per_item} clips")
        self.videos = videos
        self.requests = requests
        self.cfg = cfg
        self.train = train
        self.with_audio = with_audio
        self.clips_per_item = clips_per_item
        self.log_mel = LogMel(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, window_ms=cfg.window_ms,
                              hop_ms=cfg.hop_ms)

    def __len__(self) -> int:
        return len(self.requests) // self.clips_per_item

    def __getitem__(self, item: int) -> dict | list[dict]:
        if self.clips_per_item == 1:
            return self._clips([item])[0]
        return self._clips(list(range(item * self.clips_per_item, (item + 1) * self.clips_per_item)))

    def _clips(self, positions: list[int]) -> list[dict]:
        rows = self.requests[positions]
        video_index = int(rows[0, 0])
        video = self.videos[video_index]
        starts = [float(start) for start in rows[:, 1]]
        try:
            clips = media_of(video).read_clips(
                video.path, starts=starts, num_frames=self.cfg.clip_frames, fps=self.cfg.fps,
                short_side=self.cfg.resize_short, sample_rate=self.cfg.sample_rate, with_audio=self.with_audio,
                audio_spans=[audio_span(self.cfg, start, video.duration) for start in starts])
        except MediaError as exc:
            return [{"ok": False, "video_index": video_index, "error": str(exc)} for _ in positions]
        items = []
        for position, seed, (frames, audio) in zip(positions, rows[:, 2], clips):
            rng = np.random.default_rng(int(seed))
            frames = crop_frames(frames, self.cfg.crop_size, train=self.train, rng=rng)
            item = {
                "ok": True,
                "video": to_video_tensor(frames),  # 3 x T x S x S uint8
                "position": position,
                "video_index": video_index,
                "label": video.label,
            }
            if self.with_audio:
                item["audio"] = self.log_mel(audio)  # 1 x n_mels x frames
            items.append(item)
        return items


class AudioClipDataset(Dataset):
    """Log-mel windows of audio-only files (ESC-50, DCASE): requests as for ClipDataset, `seconds` long each.

    Items look like ClipDataset's without "video"; `video_index` is the file's index, so the same collate and
    loader serve both.
    """

    def __init__(self, files: list[Video], requests: np.ndarray, cfg: DataConfig, *, seconds: float):
        self.files = files
        self.requests = requests
        self.cfg = cfg
        self.seconds = seconds
        self.log_mel = LogMel(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, window_ms=cfg.window_ms,
                              hop_ms=cfg.hop_ms)

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, position: int) -> dict:
        index, start, _ = self.requests[position]
        item = self.files[int(index)]
        try:
            samples = media_of(item).read_audio(item.path, start=float(start), seconds=self.seconds,
                                                sample_rate=self.cfg.sample_rate)
        except MediaError as exc:
            return {"ok": False, "video_index": int(index), "error": str(exc)}
        return {"ok": True, "audio": self.log_mel(samples), "position": position, "video_index": int(index),
                "label": item.label}


def collate_clips(items: list[dict | list[dict]]) -> dict:
    items = [clip for item in items for clip in (item if isinstance(item, list) else [item])]
    good = [item for item in items if item["ok"]]
    batch = {
        "failed": [(item["video_index"], item["error"]) for item in items if not item["ok"]],
        "size": len(good),
    }
    if good:
        for key in ("video", "audio"):  # video: B x 3 x T x S x S, audio: B x 1 x n_mels x frames
            if key in good[0]:
                batch[key] = torch.stack([item[key] for item in good])
        batch["position"] = torch.tensor([item["position"] for item in good])
        batch["video_index"] = torch.tensor([item["video_index"] for item in good])
        batch["label"] = torch.tensor([item["label"] for item in good])
    return batch


def clip_loader(dataset: Dataset, *, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """In-order loader of `batch_size` clips a batch (the order is decided by the requests); workers decode in
    parallel."""
    per_item = getattr(dataset, "clips_per_item", 1)
    if batch_size % per_item:
        raise ValueError(f"a batch of {batch_size} clips does not hold whole items of {per_item}")
    return DataLoader(dataset, batch_size=batch_size // per_item, shuffle=False, num_workers=workers,
                      collate_fn=collate_clips, pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers > 0 else None, worker_init_fn=_leave_stops_to_the_trainer)


def _leave_stops_to_the_trainer(worker_id: int) -> None:
    """A stop signal sent to the trainer's whole process group (the lab's cancel, SLURM's warning before preemption)
    is the trainer's to act on: a decoding worker that died of it would fail the batch the trainer checkpoints after.
    Workers still end with the trainer (PyTorch's watchdog on their parent)."""
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)

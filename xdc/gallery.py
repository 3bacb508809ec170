"""The per-round cluster gallery: what each cluster holds, seen and heard, for the lab's job page.

After a round's clustering the trainer (rank 0) writes `<out>/gallery/round_NNN/`: `gallery.json` (schema
"xdc-gallery/1") and, under `media/`, one JPEG strip of frames and one WAV per member shown. Per clustered space and
cluster it lists a seeded random sample of members and the members nearest the centroid (the mean of the members'
unit-length features; nearest = highest cosine), with the cluster's majority label and purity on labelled data, and a
2-D PCA map of the videos. It uses the features the round clustered, and the clip window feature extraction read
(the middle one of `even_requests`), decoded by the data's own reader, so a prepared store serves it as the source
files would.

The work is bounded by K x members x 2 views per space, deduplicated, each member decoded once; a member that fails
to decode is recorded with its error and never fails the round.
"""

from __future__ import annotations

import json
import os
import shutil
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.extmath import randomized_svd, svd_flip
from torchvision.io import encode_jpeg
from torchvision.transforms.functional import resize

from xdc.config import DataConfig, PretrainConfig
from xdc.data import VideoSet
from xdc.data.clips import Video, audio_span, even_requests, media_of
from xdc.errors import MediaError
from xdc.tracking import Tracker

SCHEMA = "xdc-gallery/1"
MAP_POINTS = 2000
STRIP_FRAMES = 8
STRIP_HEIGHT = 64
JPEG_QUALITY = 85
CHUNK_ROWS = 65536
MEDIA_THREADS = 8  # decoding releases the GIL, and between epochs the loader's processes are gone


def gallery_folder(out_dir: Path, round_index: int) -> Path:
    return Path(out_dir) / "gallery" / f"round_{round_index:03d}"


def write_gallery(folder: Path, *, data: VideoSet, cfg: PretrainConfig, round_index: int,
                  features: dict[str, np.ndarray], assignments: dict[str, np.ndarray], ks: dict[str, int]) -> Path:
    """Write the round's gallery into `folder` (replacing what an interrupted attempt left) and return the path of
    its gallery.json, written last so a reader never finds it naming media not yet there. `features[space]` are the
    N x D per-video features the round clustered into `assignments[space]` (N, -1: extraction failed) with
    `ks[space]` clusters."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "media").mkdir(parents=True)
    labels = np.array([v.label for v in data.videos], dtype=np.int64)
    truth = Truth(labels, list(data.classes)) if data.labeled else None
    spaces = {space: _space(features[space], assignments[space], ks[space], truth, members=cfg.gallery_members,
                            seed=[cfg.seed, round_index, offset])
              for offset, space in enumerate(assignments)}
    shown = sorted({i for s in spaces.values() for c in s["clusters"] for i in c["random"] + c["nearest"]})
    members = _write_media(folder, shown, data, cfg.data)
    document = {"schema": SCHEMA, "round": round_index, "clip": _clip(cfg.data), "classes": list(data.classes),
                "spaces": spaces, "members": members}
    path = folder / "gallery.json"
    partial = folder / ".gallery.json.partial"
    partial.write_text(json.dumps(document, allow_nan=False, separators=(",", ":")))
    os.replace(partial, path)
    return path


def log_gallery(tracker: Tracker, folder: Path, artifact_path: str) -> None:
    """Log a gallery folder under `artifact_path`: its media folder as one artifact operation (MLflow uploads
    what is under it), then gallery.json."""
    if (folder / "media").is_dir():
        tracker.log_artifact(folder / "media", f"{artifact_path}/media")
    tracker.log_artifact(folder / "gallery.json", artifact_path)


def _clip(cfg: DataConfig) -> dict[str, Any]:
    return {"seconds": cfg.clip_seconds, "fps": cfg.fps, "sample_rate": cfg.sample_rate,
            "frames": min(STRIP_FRAMES, cfg.clip_frames)}


# -- one space: clusters and map -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    labels: np.ndarray  # N, -1: unlabelled
    classes: list[str]


def _space(features: np.ndarray, clusters: np.ndarray, k: int, truth: Truth | None, *, members: int,
           seed: list[int]) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(clusters >= 0)  # failed extractions are never shown
    cosine = _cosine_to_centroids(features, clusters, k)
    by_cluster = np.split(rows[np.argsort(clusters[rows], kind="stable")],
                          np.cumsum(np.bincount(clusters[rows], minlength=k))[:-1])
    listed = [_cluster(c, group, cosine, truth, members, rng) for c, group in enumerate(by_cluster)]
    return {"k": k, "clusters": listed, "map": _map(features, clusters, rows, truth, rng)}


def _cluster(c: int, group: np.ndarray, cosine: np.ndarray, truth: Truth | None, members: int,
             rng: np.random.Generator) -> dict[str, Any]:
    """One cluster's entry; `group` holds its members' video indices in increasing order."""
    picked = np.sort(rng.choice(group, size=min(members, len(group)), replace=False)) if len(group) else group
    nearest = group[np.argsort(-cosine[group], kind="stable")[:members]]
    purity, majority = _majority(truth, group) if truth is not None else (None, None)
    return {"id": c, "size": len(group), "purity": purity, "majority": majority,
            "random": [int(i) for i in picked], "nearest": [int(i) for i in nearest]}


def _majority(truth: Truth, group: np.ndarray) -> tuple[float | None, str | None]:
    """(share of the labelled members with the most common label, its name); None without a labelled member, as
    the diagnostics' purity leaves unlabelled videos out."""
    known = truth.labels[group]
    known = known[known >= 0]
    if not len(known):
        return None, None
    counts = np.bincount(known)
    return round(float(counts.max() / len(known)), 4), truth.classes[int(counts.argmax())]


def _unit_chunks(features: np.ndarray):
    """(first row, rows scaled to unit length) over a possibly memory-mapped N x D array, a chunk at a time."""
    for begin in range(0, len(features), CHUNK_ROWS):
        chunk = np.asarray(features[begin:begin + CHUNK_ROWS], dtype=np.float32)
        yield begin, chunk / np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)


def _cosine_to_centroids(features: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """Each row's cosine to its own cluster's centroid (-inf for a row in none), in two chunked passes."""
    sums = np.zeros((k, features.shape[1]), dtype=np.float64)  # k x D
    for begin, unit in _unit_chunks(features):
        owner = clusters[begin:begin + len(unit)]
        order = np.flatnonzero(owner >= 0)
        order = order[np.argsort(owner[order], kind="stable")]
        if len(order):  # rows grouped by cluster, each group summed at once (np.add.at is slow on rows)
            firsts = np.flatnonzero(np.r_[True, owner[order][1:] != owner[order][:-1]])
            sums[owner[order][firsts]] += np.add.reduceat(unit[order], firsts, axis=0)
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)  # k x D
    cosine = np.full(len(features), -np.inf)
    for begin, unit in _unit_chunks(features):
        owner = clusters[begin:begin + len(unit)]
        mine = np.flatnonzero(owner >= 0)
        cosine[begin + mine] = np.einsum("nd,nd->n", unit[mine], centroids[owner[mine]])
    return cosine


def _map(features: np.ndarray, clusters: np.ndarray, rows: np.ndarray, truth: Truth | None,
         rng: np.random.Generator) -> dict[str, Any]:
    """The first two principal components of (a seeded sample of at most MAP_POINTS of) the unit-length features."""
    shown = np.sort(rng.choice(rows, size=MAP_POINTS, replace=False)) if len(rows) > MAP_POINTS else rows
    unit = np.asarray(features[shown], dtype=np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    xy, explained = _pca2(unit, int(rng.integers(2**31 - 1)))
    known = truth.labels[shown] if truth is not None else np.full(len(shown), -1)
    points = [[round(float(x), 4), round(float(y), 4), int(i), int(clusters[i]), int(t)]
              for (x, y), i, t in zip(xy, shown, known)]
    return {"method": "pca", "explained": [round(float(e), 4) for e in explained], "points": points}


def _pca2(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n x 2 coordinates on the top two principal axes and each axis's share of the variance (zeros where there is
    none); a randomized SVD when both sides are wide, so a map of 2000 x 1024 features costs a fraction of a second."""
    xy, explained = np.zeros((len(rows), 2)), np.zeros(2)
    centred = rows - rows.mean(axis=0) if len(rows) else rows
    total = float((centred ** 2).sum())
    if len(rows) < 2 or total <= 1e-12:
        return xy, explained
    count = min(2, *centred.shape)
    if min(centred.shape) <= 64:  # the exact SVD, its signs fixed as randomized_svd fixes them
        u, singular, axes = np.linalg.svd(centred, full_matrices=False)
        u, singular = svd_flip(u, axes)[0][:, :count], singular[:count]
    else:
        u, singular, _ = randomized_svd(centred, count, random_state=seed)
    xy[:, :count] = u * singular
    explained[:count] = singular ** 2 / total
    return xy, explained


# -- members: what each video shown looks and sounds like ----------------------------------------------------------


def _write_media(folder: Path, shown: list[int], data: VideoSet, cfg: DataConfig) -> dict[str, dict[str, Any]]:
    """Each member's entry, its media decoded and written by as many threads as torch may use for compute: the
    trainer does nothing else meanwhile."""
    threads = max(1, min(MEDIA_THREADS, torch.get_num_threads(), len(shown)))
    work = lambda i: _member(folder, i, data, cfg)  # noqa: E731
    if threads == 1:
        entries = [work(i) for i in shown]
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="gallery") as pool:
            entries = list(pool.map(work, shown))
    return {str(i): entry for i, entry in zip(shown, entries)}


def _member(folder: Path, index: int, data: VideoSet, cfg: DataConfig) -> dict[str, Any]:
    video = data.videos[index]
    start = clip_start(video, cfg)
    entry = {"path": _relative(video.path, data.listing.root),
             "label": data.classes[video.label] if data.labeled and video.label >= 0 else None,
             "start": round(start, 4), "frames": None, "audio": None}
    try:
        frames, sound = _read(video, start, cfg)
    except (MediaError, OSError, RuntimeError, ValueError) as exc:  # one bad file never fails the round
        return {**entry, "error": " ".join(str(exc).split())[:200] or type(exc).__name__}
    name = f"v{index:06d}"
    _write_strip(folder / "media" / f"{name}.jpg", frames)
    _write_wav(folder / "media" / f"{name}.wav", sound, cfg.sample_rate)
    return {**entry, "frames": f"media/{name}.jpg", "audio": f"media/{name}.wav"}


def clip_start(video: Video, cfg: DataConfig) -> float:
    """Start of the middle one of the clips feature extraction reads from `video`."""
    starts = even_requests([video], cfg.extract_clips, cfg.clip_seconds)[:, 1]
    return float(starts[len(starts) // 2])


def _read(video: Video, start: float, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """At most STRIP_FRAMES frames spread over the clip (asked for at a lower rate, so no frame is converted only to
    be dropped) and the clip's sound, as training hears it."""
    shown = min(STRIP_FRAMES, cfg.clip_frames)
    frames, sound = media_of(video).read_clips(
        video.path, starts=[start], num_frames=shown, fps=cfg.fps * shown / cfg.clip_frames, short_side=STRIP_HEIGHT,
        sample_rate=cfg.sample_rate, audio_spans=[audio_span(cfg, start, video.duration)])[0]
    return frames, sound


def _write_strip(path: Path, frames: np.ndarray) -> None:
    """The frames (T x H x W x 3 uint8) side by side at STRIP_HEIGHT px, as one JPEG."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # T x 3 x H x W
    _, _, height, width = tensor.shape
    if height != STRIP_HEIGHT:  # a portrait video: its short side is the width
        tensor = resize(tensor, [STRIP_HEIGHT, max(1, round(width * STRIP_HEIGHT / height))], antialias=True)
    strip = torch.cat(list(tensor), dim=2)  # 3 x STRIP_HEIGHT x (T * W)
    path.write_bytes(encode_jpeg(strip.contiguous(), quality=JPEG_QUALITY).numpy().tobytes())


def _write_wav(path: Path, sound: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(sound, -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name

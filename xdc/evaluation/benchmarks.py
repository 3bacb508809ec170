"""Benchmark data for evaluation: the files of a benchmark's train/test partitions, their labels, a fingerprint.

Every reader problem (missing split file, a test entry whose class is not in classInd, an empty ESC-50 fold, no
usable file) raises DataError here, before any model is built. Files are probed once (the cached index for videos,
the audio header for sound files); undecodable or too short ones are skipped and counted.

The `folder` benchmark (a plain folder with labels.csv, e.g. `xdc make-dataset synthetic` output) has no official
split: its test set is a deterministic stratified share of every class, `FOLDER_TEST_SHARE` of its files (at least
one, none for a class with a single file) drawn with the evaluation seed; the rest train.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xdc.config import DataConfig
from xdc.data import load_video_set
from xdc.data.clips import Video
from xdc.data.layouts import read_layout
from xdc.data.media import audio_duration
from xdc.errors import DataError, MediaError

FOLDER_TEST_SHARE = 0.3
ESC50_FOLDS = 5


@dataclass
class Part:
    """One train/test division of `EvalData.files`: a UCF101 split, an ESC-50 fold, the folder split."""

    split: int
    train: np.ndarray  # indices into EvalData.files
    test: np.ndarray


@dataclass
class EvalData:
    benchmark: str
    root: Path
    classes: list[str]
    files: list[Video]  # every usable file of every part, each once
    parts: list[Part]
    groups: np.ndarray | None = None  # ESC-50: the fold of each file (cross-validation groups)
    skipped: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 of the sorted (relative path, class, role) rows: role is train/test, or the fold for ESC-50."""
        rows = sorted(self.rows())
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()

    def rows(self) -> list[tuple[str, str, str]]:
        roles = {}
        if self.groups is not None:
            roles = {i: f"fold{int(f)}" for i, f in enumerate(self.groups)}
        else:
            roles.update({int(i): "train" for i in self.parts[0].train})
            roles.update({int(i): "test" for i in self.parts[0].test})
        return [(self.relative(self.files[i].path), self.classes[self.files[i].label], role)
                for i, role in roles.items()]

    def relative(self, path: str) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()


def load_benchmark(benchmark: str, root: str, *, split: int, seed: int, params: dict, workers: int) -> EvalData:
    """The files of `benchmark` at `root` for `split`, screened for clips of the protocol's length."""
    if not root:
        raise DataError("no dataset path given (data / --data)")
    if not Path(root).expanduser().is_dir():
        raise DataError(f"{benchmark}: dataset root {root} does not exist or is not a directory")
    if benchmark in ("ucf101", "hmdb51"):
        return _official_video_split(benchmark, root, split, params, workers)
    if benchmark == "folder":
        return _folder_split(root, seed, params, workers)
    if benchmark == "esc50":
        return _esc50(root, split, params, workers)
    if benchmark == "dcase":
        return _dcase(root, params, workers)
    raise DataError(f"unknown benchmark {benchmark!r}")  # pragma: no cover - EvalConfig.validate refuses it first


# -- video ------------------------------------------------------------------------------------------------------

def _video_config(root: str, layout: str, split: str, fold: int, params: dict, workers: int) -> DataConfig:
    return DataConfig(path=root, layout=layout, split=split, fold=fold, clip_frames=params["clip_frames"],
                      fps=params["fps"], resize_short=params["resize_short"], crop_size=params["crop_size"],
                      num_workers=workers)


def _official_video_split(benchmark: str, root: str, split: int, params: dict, workers: int) -> EvalData:
    sets = {name: load_video_set(_video_config(root, benchmark, name, split, params, workers), need_audio=False)
            for name in ("train", "test")}
    files = sets["train"].videos + sets["test"].videos
    n_train = len(sets["train"].videos)
    part = Part(split, np.arange(n_train), np.arange(n_train, len(files)))
    skipped = _merge_counts(s.screened.skipped_counts for s in sets.values())
    return EvalData(benchmark, sets["train"].listing.root, list(sets["train"].classes), files, [part],
                    skipped=skipped)


def _folder_split(root: str, seed: int, params: dict, workers: int) -> EvalData:
    data = load_video_set(_video_config(root, "folder", "all", 1, params, workers), need_audio=False)
    if not data.labeled:
        raise DataError(f"folder: {root} has no labels.csv, so it cannot be evaluated (needs path,label rows)")
    labels = np.array([v.label for v in data.videos])
    rng = np.random.default_rng(seed)
    test = []
    for label in range(len(data.classes)):
        members = np.flatnonzero(labels == label)
        share = 0 if len(members) < 2 else max(1, round(FOLDER_TEST_SHARE * len(members)))
        test.extend(rng.permutation(members)[:share].tolist())
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test] = True
    part = Part(1, np.flatnonzero(~test_mask), np.flatnonzero(test_mask))
    return EvalData("folder", data.listing.root, list(data.classes), data.videos, [part],
                    skipped=data.screened.skipped_counts)


# -- audio ------------------------------------------------------------------------------------------------------

def _esc50(root: str, split: int, params: dict, workers: int) -> EvalData:
    """All five folds are read (an empty fold is an error whatever the split); split 0 evaluates every fold."""
    listings = {}
    for fold in range(1, ESC50_FOLDS + 1):
        try:
            listings[fold] = read_layout("esc50", root, split="test", fold=fold)
        except DataError as exc:
            if "no samples" in str(exc):
                raise DataError(f"esc50: fold {fold} of {root} is empty; ESC-50 needs files in all five folds") \
                    from None
            raise
    paths = [(s.path, s.label, fold) for fold, listing in listings.items() for s in listing.samples]
    files, folds, skipped = _audio_files(paths, params["clip_seconds"], workers)
    groups = np.array(folds)
    for fold in range(1, ESC50_FOLDS + 1):
        if not (groups == fold).any():
            raise DataError(f"esc50: no usable file in fold {fold} of {root} ({_counts_text(skipped)})")
    chosen = range(1, ESC50_FOLDS + 1) if split == 0 else [split]
    parts = [Part(f, np.flatnonzero(groups != f), np.flatnonzero(groups == f)) for f in chosen]
    return EvalData("esc50", listings[1].root, list(listings[1].classes), files, parts, groups=groups,
                    skipped=skipped)


def _dcase(root: str, params: dict, workers: int) -> EvalData:
    listings = {name: read_layout("dcase", root, split=name) for name in ("train", "test")}
    paths = [(s.path, s.label, name) for name, listing in listings.items() for s in listing.samples]
    files, roles, skipped = _audio_files(paths, params["clip_seconds"], workers)
    roles = np.array(roles)
    for name in ("train", "test"):
        if not (roles == name).any():
            raise DataError(f"dcase: no usable file in {Path(root) / name} ({_counts_text(skipped)})")
    part = Part(1, np.flatnonzero(roles == "train"), np.flatnonzero(roles == "test"))
    return EvalData("dcase", listings["train"].root, list(listings["train"].classes), files, [part],
                    skipped=skipped)


def _audio_files(paths: list[tuple], clip_seconds: float, workers: int) -> tuple[list[Video], list, dict]:
    """Probe audio durations; keep files at least one window long. Returns files, their tags, skipped counts."""
    names = [str(p) for p, _, _ in paths]
    if workers > 1 and len(names) >= 64:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            durations = list(pool.map(_duration_or_none, names, chunksize=32))
    else:
        durations = [_duration_or_none(name) for name in names]
    files, tags, skipped = [], [], {}
    for (path, label, tag), duration in zip(paths, durations):
        reason = "undecodable" if duration is None else ("too_short" if duration < clip_seconds else "")
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        files.append(Video(str(path), duration, label))
        tags.append(tag)
    return files, tags, skipped


def _duration_or_none(path: str) -> float | None:
    try:
        return audio_duration(path)
    except MediaError:
        return None


def _merge_counts(counts) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for reason, n in count.items():
            merged[reason] = merged.get(reason, 0) + n
    return dict(sorted(merged.items()))


def _counts_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "none skipped"

"""A prepared clip store: a video dataset transcoded once into what the clip reader reads fastest.

`xdc prepare DATA --layout L --out STORE` decodes every listed video once (in parallel, resumable) and writes:

    STORE/xdc-store.json        the manifest, written last (its presence marks a finished store): settings,
                                provenance (source root, layout, fingerprint, xdc version), every video's media info
                                (or why it could not be stored), every split and fold of the source layout
                                ([video, label] rows, classes), sizes
    STORE/index.npz             per video: shard, frame count, first row in `offsets`, sound offset and length;
                                `offsets`: each video's JPEG byte offsets (frames + 1 per video)
    STORE/shards/NNNNN.frames   JPEG frames at the store's frame rate and short side, in time order, concatenated
    STORE/shards/NNNNN.pcm      16-bit mono PCM at the store's sample rate, from time 0
    STORE/shards/NNNNN.json     a shard's own records; written after its data, so a shard without it is redone
    STORE/skipped.tsv           files that could not be stored, with the reason

Why JPEG frames and raw PCM rather than re-encoded video: a clip then costs exactly its frames (one read of a
contiguous byte span, a JPEG decode per frame, about 0.06 ms at 171 x 128) instead of a seek to the previous
keyframe and the decode of every frame from there; the sound needs no decode or resampling at all. Frames are
sampled from the source as the clip reader samples them (the newest frame shown at each time), so a clip read
from the store matches one read from the source within JPEG's tolerance.

A store is itself a dataset: read it with its source's layout (`--layout ucf101 --data STORE`); `read_layout`
recognises the manifest and lists the stored splits, so training, evaluation and the lab read it like the source.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import threading
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2.functional import resize

from xdc.config import PrepareConfig, StoreSettings
from xdc.data.index import IndexEntry, file_key
from xdc.data.layouts import LAYOUTS, STORE_MANIFEST, Listing, Sample, read_layout
from xdc.data.media import MediaInfo, _resized_size, _seek, _single_threaded, probe
from xdc.errors import ConfigError, DataError, MediaError, one_line
from xdc.tracking import NullTracker, Tracker

MANIFEST = STORE_MANIFEST
PARTIAL = "xdc-store.partial.json"  # settings and source of a store being written, so a resume matches them
RUN_FILE = ".mlflow-run"  # the MLflow run of `prepare`, continued by a rerun
FORMAT = 1
SHARD_VIDEOS = 64
AUDIO_ONLY_LAYOUTS = ("esc50", "dcase")


@dataclass
class PrepareSummary:
    root: Path
    videos: int  # stored
    skipped: dict[str, str]  # source-relative path -> reason
    source_bytes: int
    store_bytes: int
    seconds: float
    reused_shards: int
    shards: int
    stopped: bool = False  # on request, before every shard was written; a rerun resumes

    def record(self) -> dict[str, Any]:
        """What a finished prepare reports (the lab's job record)."""
        return {"store": str(self.root), "videos": self.videos, "skipped": len(self.skipped),
                "source_bytes": self.source_bytes, "store_bytes": self.store_bytes, "seconds": round(self.seconds, 1)}

    def text(self) -> str:
        if self.stopped:
            return f"stopped on request; {self.root} keeps its finished shards (run the same command to resume)"
        ratio = self.store_bytes / self.source_bytes if self.source_bytes else float("nan")
        reused = f", {self.reused_shards} of {self.shards} shards reused" if self.reused_shards else ""
        return (f"stored {self.videos} videos in {self.root} ({len(self.skipped)} skipped{reused}): "
                f"{self.store_bytes / 1e6:.1f} MB against {self.source_bytes / 1e6:.1f} MB of source files "
                f"({ratio:.2f}x), {self.seconds:.1f} s")


# -- writing --------------------------------------------------------------------------------------------------------


def prepare(cfg: PrepareConfig, tracker: Tracker | None = None, *, out_dir: str | Path,
            on_progress: Callable[[float, float | None, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> PrepareSummary:
    """Prepare the store of `cfg.path` at `out_dir`, tracked as one MLflow run (experiment `cfg.experiment`; a rerun
    continues the same run): the settings as params; videos stored and skipped, sizes and speed as metrics;
    `skipped.tsv` as an artifact. Input problems raise DataError/ConfigError before anything is written or logged;
    a stop request ends after the shards under way (`stopped=True`; a rerun resumes).
    """
    cfg.validate()
    tracker = tracker if tracker is not None else NullTracker()
    plan = plan_store(cfg.path, cfg.layout, out_dir, cfg.store)
    run_file = plan.out / RUN_FILE
    previous = run_file.read_text().strip() if run_file.is_file() else None
    run_id = tracker.start(experiment=cfg.experiment, run_name=cfg.run_name or f"prepare {plan.source.name}",
                           run_id=previous or None, tags={"kind": "prepare"})
    tracker.log_params(cfg.flat())
    began, first = time.monotonic(), []

    def progress(done: int, total: int) -> None:
        first.append(done)  # the first report counts the shards a resumed run reuses: no part of its pace
        if on_progress:
            made = done - first[0]
            eta = (time.monotonic() - began) / made * (total - done) if made else None
            on_progress(done / max(total, 1), eta, f"{done}/{total} videos")

    try:
        summary = write_store(plan, workers=min(cfg.workers or _usable_cores(), _usable_cores()), on_progress=progress,
                              should_stop=should_stop, before=lambda: _remember(run_file, run_id))
    except Exception as exc:
        tracker.finish("FAILED", error=one_line(exc))
        raise
    if summary.stopped:
        tracker.finish("KILLED", error="stopped on request")
        return summary
    tracker.log_metrics({"videos": summary.videos, "skipped": len(summary.skipped),
                         "source_mb": summary.source_bytes / 1e6, "store_mb": summary.store_bytes / 1e6,
                         "size_ratio": summary.store_bytes / max(summary.source_bytes, 1),
                         "seconds": summary.seconds}, step=0)
    tracker.log_artifact(plan.out / "skipped.tsv")
    tracker.finish("FINISHED")
    return summary


def _usable_cores() -> int:
    """The cores this process may run on (a SLURM or cgroup CPU set), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _remember(run_file: Path, run_id: str) -> None:
    run_file.write_text(run_id + "\n")


def prepare_store(source: str | Path, layout: str, out: str | Path, settings: StoreSettings | None = None, *,
                  workers: int = 1, on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> PrepareSummary:
    """Transcode the videos of every split of `source` (read as `layout`) into a store at `out`.

    Resumable: shards already written for the same source files and settings are kept. Raises DataError for a
    source that does not read, an `out` that is neither empty, a partial store of the same settings nor a store,
    and a source where no video could be stored. `on_progress(done, total)` counts videos.
    """
    return write_store(plan_store(source, layout, out, settings or StoreSettings()), workers=workers,
                       on_progress=on_progress, should_stop=should_stop)


@dataclass
class StorePlan:
    """A checked request for a store: the source's splits and files, and where the store goes."""

    source: Path
    out: Path
    layout: str
    settings: StoreSettings
    splits: dict[str, dict]
    paths: list[Path]
    relative: list[str]
    keys: list[list[int]]
    fingerprint: str

    @property
    def intent(self) -> dict:
        return {"format": FORMAT, "layout": self.layout, "source": str(self.source),
                "settings": asdict(self.settings)}


def plan_store(source: str | Path, layout: str, out: str | Path, settings: StoreSettings) -> StorePlan:
    """Read the source's every split and check `out`, writing nothing; DataError names what is wrong."""
    if layout in AUDIO_ONLY_LAYOUTS:
        raise DataError(f"{layout} holds sound files, which are read as fast as they are; a store holds videos")
    source_root = Path(source).expanduser().resolve()
    if _manifest_path(source_root).is_file():
        raise DataError(f"{source_root} is itself a prepared store; prepare from the source dataset")
    out = Path(out).expanduser().resolve()
    if out == source_root or out.is_relative_to(source_root):
        raise DataError(f"the store {out} must lie outside the dataset {source_root}")
    splits = _source_splits(layout, source_root)
    paths = sorted({s.path for split in splits.values() for s in split["listing"].samples})
    relative = [p.relative_to(source_root).as_posix() for p in paths]
    keys = [file_key(p) for p in paths]
    plan = StorePlan(source_root, out, layout, settings, splits, paths, relative, keys,
                     _fingerprint(relative, keys, splits))
    _check_out(out, plan.intent)
    return plan


def write_store(plan: StorePlan, *, workers: int = 1, on_progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                before: Callable[[], None] | None = None) -> PrepareSummary:
    """Write the planned store, reusing finished shards; `before` runs once `out` is claimed. A stop request ends
    after the shards under way and returns `stopped=True` without a manifest."""
    began, out, settings = time.monotonic(), plan.out, asdict(plan.settings)
    _check_out(out, plan.intent)
    with _exclusive(out):
        _check_out(out, plan.intent)  # again, now that no other prepare can change it
        _write_json(out / PARTIAL, {**plan.intent, "fingerprint": plan.fingerprint})
        (out / "shards").mkdir(exist_ok=True)
        if before:
            before()
        size = shard_size(len(plan.paths))
        shards = [list(range(i, min(i + size, len(plan.paths)))) for i in range(0, len(plan.paths), size)]
        records: list[dict | None] = [None] * len(plan.paths)
        todo = []
        for number, ids in enumerate(shards):
            wanted = [[plan.relative[i], plan.keys[i]] for i in ids]
            done = _read_json(out / "shards" / f"{number:05d}.json")
            if done is not None and done.get("files") == wanted and done.get("settings") == settings:
                for i, record in zip(ids, done["records"]):
                    records[i] = record
            else:
                todo.append((number, ids))
        reused = len(shards) - len(todo)
        finished = sum(record is not None for record in records)
        if on_progress:
            on_progress(finished, len(plan.paths))
        tasks = [(str(out), number, [(str(plan.paths[i]), plan.relative[i], plan.keys[i]) for i in ids], settings)
                 for number, ids in todo]
        for number, shard_records in _run_shards(tasks, workers, should_stop or (lambda: False)):
            for i, record in zip(shards[number], shard_records):
                records[i] = record
            finished += len(shard_records)
            if on_progress:
                on_progress(finished, len(plan.paths))
        if finished < len(records):  # stopped on request: the finished shards stay for the next run
            return PrepareSummary(out, 0, {}, 0, 0, time.monotonic() - began, reused, len(shards), stopped=True)
        return _finish(plan, records, len(shards), reused, began)


def shard_size(videos: int) -> int:
    """Videos per shard: up to SHARD_VIDEOS, fewer for a small dataset so that it still splits into about 64
    shards for the cores to share. A function of the dataset's size alone, so a resume finds the same shards."""
    return min(SHARD_VIDEOS, max(1, -(-videos // 64)))


def _source_splits(layout: str, root: Path) -> dict[str, dict]:
    """Every split and fold the layout defines that the source has, keyed 'split/fold'. As at registration
    (`read_every_split`), a broken split of a layout with folds is refused; a layout without folds has optional
    splits (Kinetics without a test folder)."""
    reader = LAYOUTS[layout]
    splits = {}
    for fold in range(1, reader.folds + 1):
        for split in reader.splits:
            try:
                listing = read_layout(layout, root, split=split, fold=fold)
            except DataError:
                if split == "all" or reader.folds > 1:
                    raise
                continue
            splits[f"{split}/{fold}"] = {"listing": listing}
    return splits


def _fingerprint(relative: list[str], keys: list[list[int]], splits: dict[str, dict]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([relative, keys], separators=(",", ":")).encode())
    for name in sorted(splits):
        listing = splits[name]["listing"]
        rows = [[str(s.path), s.label] for s in listing.samples]
        digest.update(json.dumps([name, rows, listing.classes, listing.missing], separators=(",", ":")).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(out: Path):
    """One `prepare` per store at a time: a second one fails at once rather than interleaving shards."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another `xdc prepare` is writing {out}") from None
        yield


def _check_out(out: Path, intent: dict) -> None:
    """`out` may be new, empty, or a (partial) store of the same source and settings; refuse anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out} is not a folder")
    partial = _read_json(out / PARTIAL)
    finished = _read_json(_manifest_path(out))
    mine = {".lock", PARTIAL, MANIFEST, RUN_FILE, "shards", "index.npz", "skipped.tsv"}
    for record in (finished, partial):
        if record is not None:
            ours = {key: record.get(key) for key in intent}
            if ours != intent:
                raise DataError(f"{out} holds a store of other settings or another source "
                                f"({_differences(ours, intent)}); choose another --out or delete it")
            break
    else:
        strangers = sorted(p.name for p in out.iterdir() if p.name not in mine)
        if strangers:
            raise DataError(f"{out} is not empty and not a store (it holds {strangers[0]}); choose an empty folder")


def _differences(found: dict, wanted: dict) -> str:
    return ", ".join(f"{key} {found.get(key)!r} there, {wanted[key]!r} asked" for key in wanted
                     if found.get(key) != wanted[key])


def _run_shards(tasks: list[tuple], workers: int, should_stop: Callable[[], bool]):
    """(shard number, records) of each shard as it finishes; none are started once `should_stop()` says so."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            if should_stop():
                return
            yield task[1], _write_shard(*task)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_shard_worker) as pool:
        futures = {pool.submit(_write_shard, *task): task[1] for task in tasks}
        for future in as_completed(futures):
            if should_stop():
                for pending in futures:
                    pending.cancel()  # the shards under way finish; the rest wait for the next run
            if not future.cancelled():
                yield futures[future], future.result()


def _shard_worker() -> None:
    """A stop sent to the whole process group is the parent's to act on (it finishes the shards under way), and a
    worker never outlives its parent."""
    from xdc.attempt import die_with_parent

    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent()


def _write_shard(out: str, number: int, files: list[tuple[str, str, list[int]]], settings: dict) -> list[dict]:
    """Transcode one shard's videos; data first, then its records (the mark of a finished shard)."""
    torch.set_num_threads(1)
    store_settings = StoreSettings(**settings)
    shard = Path(out) / "shards" / f"{number:05d}"
    frames_tmp, pcm_tmp = shard.with_suffix(".frames.tmp"), shard.with_suffix(".pcm.tmp")
    records = []
    with open(frames_tmp, "wb") as frames_file, open(pcm_tmp, "wb") as pcm_file:
        for path, relative, _ in files:
            frames_at, pcm_at = frames_file.tell(), pcm_file.tell()
            try:
                records.append(_transcode(path, frames_file, pcm_file, store_settings))
            except MediaError as exc:
                for file, at in ((frames_file, frames_at), (pcm_file, pcm_at)):
                    file.seek(at)
                    file.truncate()
                records.append({"info": None, "error": str(exc)})
        for file in (frames_file, pcm_file):
            file.flush()
            os.fsync(file.fileno())
    os.replace(frames_tmp, shard.with_suffix(".frames"))
    os.replace(pcm_tmp, shard.with_suffix(".pcm"))
    _write_json(shard.with_suffix(".json"), {"files": [[relative, key] for _, relative, key in files],
                                             "settings": settings, "records": records})
    return records


def _transcode(path: str, frames_file, pcm_file, settings: StoreSettings) -> dict:
    info = probe(path)  # the same checks and media info as the source's own index
    fps = settings.fps or info.fps
    start = frames_file.tell()
    try:
        with av.open(path) as container:
            offsets = _write_frames(container, frames_file, fps, info, settings)
            audio = _write_sound(container, pcm_file, settings.sample_rate) if info.has_audio else [0, 0]
    except MediaError:
        raise
    except (av.FFmpegError, ValueError) as exc:  # PyAV's own OSErrors are FFmpegErrors; a failed write of the
        raise MediaError(f"cannot transcode: {exc}") from None  # store (a full disk) is no bad video: it fails the run
    return {"info": asdict(info), "error": "", "fps": fps, "offsets": [start + o for o in offsets], "audio": audio}


def _write_frames(container, out, fps: float, info: MediaInfo, settings: StoreSettings) -> list[int]:
    """Frames at `fps` (frame k: the newest source frame shown at k / fps, as the clip reader picks them), resized
    to the short side and JPEG-encoded. Returns byte offsets relative to the video's first frame, frames + 1."""
    stream = _single_threaded(container.streams.video[0])
    width, height = _resized_size(info.width, info.height, settings.short_side)
    half_frame = 0.5 / info.fps
    offsets, written = [0], 0
    encoded: dict[str, Any] = {"frame": None, "bytes": b""}

    def emit(frame) -> None:
        nonlocal written
        if encoded["frame"] is not frame:  # a frame held for several times (store rate above the source's)
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, threads=1)
            encoded["frame"] = frame
            encoded["bytes"] = encode_jpeg(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
                                           quality=settings.quality).numpy().tobytes()
        out.write(encoded["bytes"])
        written += len(encoded["bytes"])
        offsets.append(written)

    previous = None
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        while frame.time > (len(offsets) - 1) / fps + half_frame:
            emit(previous if previous is not None else frame)
        previous = frame
    if previous is None:
        raise MediaError("video stream has no decodable frame")
    end = min(info.duration, previous.time + 1.0 / info.fps)  # the last frame is shown for one frame's time
    while (len(offsets) - 1) / fps < end - 1e-9:
        emit(previous)
    return offsets


def _write_sound(container, out, sample_rate: int) -> list[int]:
    """The whole first audio track, mono int16 at `sample_rate`, sample i at time i / sample_rate. Returns
    [offset in samples within the shard's PCM file, samples]."""
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    _seek(container, stream, 0.0)
    chunks, first_time = [], None
    for frame in container.decode(stream):
        if first_time is None:
            first_time = frame.time if frame.time is not None else 0.0
        chunks += [out_frame.to_ndarray().reshape(-1) for out_frame in resampler.resample(frame)]
    chunks += [out_frame.to_ndarray().reshape(-1) for out_frame in resampler.resample(None)]
    if first_time is None:
        raise MediaError("audio stream has no decodable frame")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    lead = int(round(first_time * sample_rate))
    samples = np.pad(samples, (lead, 0)) if lead > 0 else samples[-lead:]
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    offset = out.tell() // 2
    out.write(pcm.tobytes())
    return [offset, int(pcm.size)]


def _finish(plan: StorePlan, records: list[dict], shards: int, reused: int, began: float) -> PrepareSummary:
    out, intent, relative = plan.out, plan.intent, plan.relative
    shard_of = [i // shard_size(len(records)) for i in range(len(records))]
    stored = [i for i, r in enumerate(records) if r["info"] is not None]
    if not stored:
        reasons = sorted({r["error"] for r in records})
        raise DataError(f"no video of {intent['source']} could be stored ({len(records)} files; "
                        f"{'; '.join(reasons[:3])})")
    counts = np.array([len(r["offsets"]) - 1 if r["info"] else 0 for r in records], dtype=np.int64)
    offsets = [np.asarray(r["offsets"], dtype=np.int64) for r in records if r["info"]]
    bases = np.zeros(len(records), dtype=np.int64)
    bases[stored] = np.cumsum([0] + [len(o) for o in offsets[:-1]])
    audio = np.array([r["audio"] if r["info"] else [0, 0] for r in records], dtype=np.int64).reshape(-1, 2)
    np.savez(out / "index.tmp.npz", shard=np.array(shard_of, dtype=np.int32), frames=counts, base=bases,
             offsets=np.concatenate(offsets), audio_offset=audio[:, 0], audio_samples=audio[:, 1],
             fps=np.array([r.get("fps", 0.0) for r in records], dtype=np.float64))
    os.replace(out / "index.tmp.npz", out / "index.npz")
    skipped = {relative[i]: r["error"] for i, r in enumerate(records) if r["info"] is None}
    (out / "skipped.tsv").write_text("".join(f"{reason}\t{path}\n" for path, reason in skipped.items()))
    source_bytes = sum(max(key[0], 0) for key in plan.keys)
    store_bytes = sum(p.stat().st_size for p in (out / "shards").iterdir() if p.suffix in (".frames", ".pcm"))
    ids = {path: i for i, path in enumerate(relative)}
    manifest = {
        **intent, "fingerprint": plan.fingerprint, "xdc_version": _version(), "created": time.time(),
        "videos": [{"path": relative[i], "info": r["info"], "error": r["error"]} for i, r in enumerate(records)],
        "splits": {name: {"samples": [[ids[s.path.relative_to(intent["source"]).as_posix()], s.label]
                                      for s in split["listing"].samples],
                          "classes": split["listing"].classes, "missing": split["listing"].missing}
                   for name, split in plan.splits.items()},
        "source_bytes": source_bytes, "store_bytes": store_bytes,
    }
    _write_json(_manifest_path(out), manifest)
    (out / PARTIAL).unlink(missing_ok=True)
    open_store.cache_clear()
    return PrepareSummary(out, len(stored), skipped, source_bytes, store_bytes, time.monotonic() - began,
                          reused, shards)


def _version() -> str:
    from xdc import __version__

    return __version__


# -- reading --------------------------------------------------------------------------------------------------------


def is_store(root: str | Path) -> bool:
    return _manifest_path(Path(root)).is_file()


@functools.lru_cache(maxsize=16)
def open_store(root: str) -> Store:
    """The store at `root`, opened once per process (loader workers each open their own)."""
    return Store(Path(root))


class Store:
    """A finished store: its listings (as its source layout lists them), media info, and clip reads."""

    def __init__(self, root: Path):
        self.root = root
        manifest = _read_json(_manifest_path(root))
        if manifest is None:
            raise DataError(f"{root}: the store's manifest {MANIFEST} cannot be read")
        if manifest.get("format") != FORMAT:
            raise DataError(f"{root}: store format {manifest.get('format')!r} is not {FORMAT}; prepare it again "
                            f"with this version of xdc")
        self.manifest = manifest
        try:
            self.layout: str = manifest["layout"]
            self.settings = StoreSettings.from_dict(manifest["settings"])
            self.videos: list[dict] = manifest["videos"]
            self._row = {str(root / video["path"]): i for i, video in enumerate(self.videos)}
            with np.load(root / "index.npz") as index:
                self._index = {name: index[name] for name in index.files}
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise DataError(f"{root}: the store's manifest or index is not one `xdc prepare` wrote ({exc!r:.200})") \
                from None
        self._files: dict[tuple[int, str], int] = {}
        self._opening = threading.Lock()  # threads reading one store (the gallery's) open each shard once

    def __del__(self, _close=os.close) -> None:  # os.close held here: at interpreter exit `os` may be gone
        for handle in getattr(self, "_files", {}).values():
            _close(handle)

    # listings, as the source layout gives them

    def listing(self, layout: str, split: str, fold: int) -> Listing:
        if layout != self.layout:
            raise DataError(f"{self.root} is a prepared store of a {self.layout} dataset; read it with layout "
                            f"{self.layout}, not {layout}")
        splits = self.manifest.get("splits")
        stored = splits.get(f"{split}/{fold}") if isinstance(splits, dict) else None
        if stored is None:
            raise DataError(f"{layout}: the store {self.root} holds no split {split!r}, fold {fold} (its source had "
                            f"none)")
        try:
            samples = [Sample(self.root / self.videos[i]["path"], label) for i, label in stored["samples"]]
            return Listing(layout, self.root, samples, list(stored["classes"]), int(stored["missing"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DataError(f"{self.root}: the store's split {split}/{fold} is not one `xdc prepare` wrote "
                            f"({exc!r:.200})") from None

    def entries(self, paths: list[Path]) -> list[IndexEntry]:
        """What the source's index would say of each file, recorded when it was stored."""
        entries = []
        try:
            for path in paths:
                video = self.videos[self._row[str(path)]]
                info = MediaInfo(**video["info"]) if video["info"] else None
                entries.append(IndexEntry(str(path), info, str(video["error"])))
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(f"{self.root}: the store's media records are not ones `xdc prepare` wrote "
                            f"({exc!r:.200})") from None
        return entries

    def check_reads(self, *, resize_short: int, fps: float, sample_rate: int, with_audio: bool) -> None:
        """Refuse clip settings the store cannot serve at the quality of the source."""
        fixed_fps = self.settings.fps
        problems = []
        if resize_short > self.settings.short_side:
            problems.append(f"its frames have a {self.settings.short_side} px short side and data.resize_short is "
                            f"{resize_short} (prepare with --short-side {resize_short})")
        if fixed_fps and fps > fixed_fps + 1e-9:
            problems.append(f"it holds {fixed_fps:g} frames per second and data.fps is {fps:g} (prepare with "
                            f"--fps {fps:g} or 0)")
        if with_audio and sample_rate != self.settings.sample_rate:
            problems.append(f"its sound is at {self.settings.sample_rate} Hz and data.sample_rate is {sample_rate} "
                            f"(prepare with --sample-rate {sample_rate})")
        if problems:
            raise DataError(f"the store {self.root} cannot serve these clips: {'; '.join(problems)}")

    # clip reads, with the signatures and results of media.read_clip, read_clips and read_audio

    def read_clip(self, path: str, *, start: float, num_frames: int, fps: float, short_side: int,
                  sample_rate: int, with_audio: bool = True,
                  audio_span: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        row = self._row[path]
        audio_start, seconds = audio_span or (start, num_frames / fps)
        frames = self._frames(row, start, num_frames, fps, short_side)
        audio = self.read_audio(path, start=audio_start, seconds=seconds, sample_rate=sample_rate) \
            if with_audio else None
        return frames, audio

    def read_clips(self, path: str, *, starts: list[float], num_frames: int, fps: float, short_side: int,
                   sample_rate: int, with_audio: bool = True,
                   audio_spans: list[tuple[float, float]] | None = None) -> list[tuple[np.ndarray, np.ndarray | None]]:
        spans = audio_spans or [None] * len(starts)
        return [self.read_clip(path, start=start, num_frames=num_frames, fps=fps, short_side=short_side,
                               sample_rate=sample_rate, with_audio=with_audio, audio_span=span)
                for start, span in zip(starts, spans)]

    def read_audio(self, path: str, *, start: float, seconds: float, sample_rate: int) -> np.ndarray:
        row = self._row[path]
        total = int(self._index["audio_samples"][row])
        if not total:
            raise MediaError("no audio stream")
        wanted = int(round(seconds * sample_rate))
        first = max(0, int(round(start * sample_rate)))
        count = max(0, min(wanted, total - first))
        if count < wanted // 2 or count == 0:
            raise MediaError(f"audio ends before the clip window at {start:.2f}s")
        offset = int(self._index["audio_offset"][row]) + first
        data = self._read(row, "pcm", offset * 2, count * 2)
        window = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
        return np.pad(window, (0, wanted - count)) if count < wanted else window

    def _frames(self, row: int, start: float, num_frames: int, fps: float, short_side: int) -> np.ndarray:
        count = int(self._index["frames"][row])
        wanted = np.floor((start + np.arange(num_frames) / fps) * float(self._index["fps"][row]) + 0.5)
        wanted = np.maximum(wanted.astype(np.int64), 0)
        missing = int((wanted >= count).sum())
        if missing > max(1, num_frames // 4):
            raise MediaError(f"only {num_frames - missing} of {num_frames} frames decodable from {start:.2f}s")
        wanted = np.minimum(wanted, count - 1)
        base = int(self._index["base"][row])
        offsets = self._index["offsets"][base + wanted[0]: base + wanted[-1] + 2]
        span = self._read(row, "frames", int(offsets[0]), int(offsets[-1] - offsets[0]))
        buffer = torch.frombuffer(bytearray(span), dtype=torch.uint8)
        decoded: dict[int, torch.Tensor] = {}
        for k in wanted.tolist():
            if k not in decoded:
                at = int(offsets[k - wanted[0]] - offsets[0])
                decoded[k] = decode_jpeg(buffer[at:int(offsets[k - wanted[0] + 1] - offsets[0])])
        frames = torch.stack([decoded[k] for k in wanted.tolist()])  # T x 3 x H x W
        if short_side != self.settings.short_side:
            _, _, height, width = frames.shape
            size = _resized_size(width, height, short_side)
            frames = resize(frames, [size[1], size[0]], antialias=True)
        return frames.permute(0, 2, 3, 1).numpy()  # T x H x W x 3

    def _open(self, shard: int, kind: str) -> int:
        with self._opening:
            handle = self._files.get((shard, kind))
            if handle is None:
                path = self.root / "shards" / f"{shard:05d}.{kind}"
                try:
                    handle = self._files[(shard, kind)] = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise MediaError(f"cannot read the store's {path.name}: {exc.strerror}") from None
            return handle

    def _read(self, row: int, kind: str, offset: int, size: int) -> bytes:
        shard = int(self._index["shard"][row])
        handle = self._files.get((shard, kind))
        if handle is None:
            handle = self._open(shard, kind)
        data = os.pread(handle, size, offset)
        if len(data) != size:
            raise MediaError(f"the store's shard {shard:05d}.{kind} is shorter than its index says")
        return data


# -- small helpers --------------------------------------------------------------------------------------------------


def _manifest_path(root: Path) -> Path:
    return root / MANIFEST


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)

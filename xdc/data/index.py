"""A cached index of a dataset's media files: probed once (in parallel), reused while files are unchanged.

The cache lives outside the dataset (datasets are often read-only team shares), keyed by each file's path, size and
modification time, so an edited or replaced file is probed again and nothing else is.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xdc.data.media import SILENCE_PEAK, MediaInfo, probe
from xdc.errors import MediaError

INDEX_VERSION = 1


@dataclass(frozen=True)
class IndexEntry:
    path: str
    info: MediaInfo | None
    error: str = ""


@dataclass
class Screened:
    """Files fit for clips of a given length, and the rest with the reason each was skipped."""

    usable: list[IndexEntry]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(paths) for reason, paths in sorted(self.skipped.items())}

    def report(self) -> str:
        lines = [f"usable\t{len(self.usable)}"]
        for reason, paths in sorted(self.skipped.items()):
            lines += [f"{reason}\t{path}" for path in paths]
        return "\n".join(lines) + "\n"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDC_CACHE", Path.home() / ".cache" / "xdc"))


def build_index(paths: list[Path], *, workers: int = 0, cache_dir: Path | None = None) -> list[IndexEntry]:
    """Probe every file (reusing cached results for unchanged files); order follows `paths`."""
    cache_file = _cache_file(paths, cache_dir or default_cache_dir())
    cached = _load_cache(cache_file)
    keys = {str(p): file_key(p) for p in paths}
    todo = [str(p) for p in paths if cached.get(str(p), {}).get("key") != keys[str(p)]]
    fresh = dict(zip(todo, _probe_all(todo, workers)))
    entries = []
    for p in map(str, paths):
        entry = fresh[p] if p in fresh else _entry_from_json(p, cached[p])
        entries.append(entry)
    if todo:
        updated = {e.path: {"key": keys[e.path], **_entry_to_json(e)} for e in entries}
        _save_cache(cache_file, {**cached, **updated})
    return entries


def screen(entries: list[IndexEntry], *, clip_seconds: float, need_audio: bool = True) -> Screened:
    """Split indexed files into usable ones and skipped ones (undecodable, no_audio, silent, too_short)."""
    screened = Screened(usable=[])
    for entry in entries:
        reason = _skip_reason(entry, clip_seconds, need_audio)
        if reason:
            screened.skipped.setdefault(reason, []).append(entry.path)
        else:
            screened.usable.append(entry)
    return screened


def summarize(screened: Screened) -> str:
    skipped = ", ".join(f"{n} {reason}" for reason, n in screened.skipped_counts.items()) or "none"
    return f"{len(screened.usable)} usable files; skipped: {skipped}"


def _skip_reason(entry: IndexEntry, clip_seconds: float, need_audio: bool) -> str:
    if entry.info is None:
        return "undecodable"
    if need_audio and not entry.info.has_audio:
        return "no_audio"
    if need_audio and entry.info.audio_peak < SILENCE_PEAK:
        return "silent"
    if entry.info.duration < clip_seconds:
        return "too_short"
    return ""


def _probe_one(path: str) -> IndexEntry:
    try:
        return IndexEntry(path, probe(path))
    except MediaError as exc:
        return IndexEntry(path, None, str(exc))


def _probe_all(paths: list[str], workers: int) -> list[IndexEntry]:
    if workers <= 1 or len(paths) < 8:
        return [_probe_one(p) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_probe_one, paths, chunksize=16))


def file_key(path: Path) -> list[int]:
    try:
        stat = path.stat()
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def _cache_file(paths: list[Path], cache_dir: Path) -> Path:
    common = os.path.commonpath([str(p.resolve().parent) for p in paths]) if paths else ""
    digest = hashlib.sha1(common.encode()).hexdigest()[:16]
    return cache_dir / "index" / f"{digest}.json"


def _load_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("version") == INDEX_VERSION else {}


def _save_cache(cache_file: Path, files: dict) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": files}))
    os.replace(tmp, cache_file)


def _entry_to_json(entry: IndexEntry) -> dict:
    return {"info": asdict(entry.info) if entry.info else None, "error": entry.error}


def _entry_from_json(path: str, raw: dict) -> IndexEntry:
    info = MediaInfo(**raw["info"]) if raw.get("info") else None
    return IndexEntry(path, info, raw.get("error", ""))

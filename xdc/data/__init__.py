"""Media in: dataset layouts, the cached file index, clip decoding and transforms."""

from __future__ import annotations

from dataclasses import dataclass

from xdc.config import DataConfig
from xdc.data.clips import Video
from xdc.data.factors import Factors, read_factors
from xdc.data.index import Screened, build_index, screen
from xdc.data.layouts import Listing, read_layout
from xdc.data.store import is_store, open_store
from xdc.errors import DataError


@dataclass
class VideoSet:
    """The usable videos of a dataset split, its class names (empty when unlabeled) and what was skipped."""

    videos: list[Video]
    classes: list[str]
    screened: Screened
    listing: Listing
    factors: Factors  # known nuisances per video, from the dataset's factors.csv (empty without one)

    @property
    def labeled(self) -> bool:
        return bool(self.classes)


def load_video_set(cfg: DataConfig, *, need_audio: bool = True) -> VideoSet:
    """List a dataset with its layout reader, probe its files (cached; a prepared store recorded them), and keep
    those fit for clips.

    Raises DataError before any training when nothing is usable.
    """
    if not cfg.path:
        raise DataError("no dataset path given (data.path / --data)")
    listing = read_layout(cfg.layout, cfg.path, split=cfg.split, fold=cfg.fold)
    samples = listing.samples[: cfg.max_videos] if cfg.max_videos else listing.samples
    labels = {str(s.path): (-1 if s.label is None else s.label) for s in samples}
    store = open_store(str(listing.root)) if is_store(listing.root) else None
    if store is not None:
        store.check_reads(resize_short=cfg.resize_short, fps=cfg.fps, sample_rate=cfg.sample_rate,
                          with_audio=need_audio)
        entries = store.entries([s.path for s in samples])
    else:
        entries = build_index([s.path for s in samples], workers=cfg.num_workers)
    shortest = cfg.span_seconds if need_audio else cfg.clip_seconds  # a clip, and its sound window when it has one
    screened = screen(entries, clip_seconds=shortest, need_audio=need_audio)
    if not screened.usable:
        counts = ", ".join(f"{n} {reason}" for reason, n in screened.skipped_counts.items())
        raise DataError(f"no usable video in {cfg.path} ({len(samples)} files: {counts})")
    held_in = str(listing.root) if store is not None else ""
    videos = [Video(e.path, e.info.duration, labels[e.path], held_in) for e in screened.usable]
    factors = read_factors(listing.root, [v.path for v in videos])
    return VideoSet(videos, list(listing.classes), screened, listing, factors)

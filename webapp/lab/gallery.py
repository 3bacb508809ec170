"""A pretraining job's cluster gallery, read from the files its trainer wrote (`xdc.gallery`:
out_dir/gallery/round_NNN/gallery.json and its media/), for the job's gallery page.

Only the trainer's own file names are ever opened: a round is a number, a media file a name of the form the
trainer writes (v000123.jpg, v000123.wav), resolved inside the job's own round folder. The view checks the
job's team before calling anything here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from django.utils.safestring import SafeString, mark_safe

SCHEMA = "xdc-gallery/1"
MEDIA_NAME = re.compile(r"^v\d{6,12}\.(jpg|wav)$")
MEDIA_TYPES = {"jpg": "image/jpeg", "wav": "audio/wav"}
MAX_GALLERY_BYTES = 32 << 20  # a gallery.json larger than this is not one the trainer wrote
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777", "#65a30d",
           "#ca8a04", "#7c3aed", "#0d9488")
SORTS = ("size", "purity", "id")
VIEWS = ("random", "nearest")


def rounds(out_dir: str) -> list[int]:
    """The rounds whose gallery the job wrote, in order."""
    root = Path(out_dir) / "gallery" if out_dir else None
    if root is None or not root.is_dir():
        return []
    found = (re.fullmatch(r"round_(\d{3,})", entry.name) for entry in root.iterdir())
    return sorted(int(match.group(1)) for match in found
                  if match and (root / match.group(0) / "gallery.json").is_file())


def round_folder(out_dir: str, round_index: int) -> Path:
    return Path(out_dir) / "gallery" / f"round_{round_index:03d}"


def load(out_dir: str, round_index: int) -> dict[str, Any] | None:
    """The round's gallery.json, or None when it is missing, too large or not the trainer's format."""
    path = round_folder(out_dir, round_index) / "gallery.json"
    try:
        if path.stat().st_size > MAX_GALLERY_BYTES:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("spaces"), dict):
        return None
    return data


def media_file(out_dir: str, round_index: int, name: str, *, within: Path) -> tuple[Path, str] | None:
    """(path, content type) of one of the round's media files, or None for any other name, or for a file that a
    link anywhere on the way leads outside the round's folder or outside `within` (the team's runs)."""
    if not MEDIA_NAME.fullmatch(name or ""):
        return None
    folder = round_folder(out_dir, round_index)
    path = (folder / "media" / name).resolve()
    if not (path.is_relative_to(folder.resolve()) and path.is_relative_to(within)) or not path.is_file():
        return None
    return path, MEDIA_TYPES[name.rsplit(".", 1)[1]]


@dataclass
class Member:
    index: str
    label: str | None
    path: str
    start: float
    frames: str | None
    audio: str | None
    error: str | None


def clusters(gallery: dict[str, Any], space: str, *, sort: str = "size", view: str = "random") -> list[dict]:
    """The space's clusters with their members resolved, sorted (largest, purest, or by id)."""
    members = gallery.get("members") or {}
    rows = []
    for cluster in (gallery["spaces"].get(space) or {}).get("clusters") or []:
        shown = [_member(str(i), members.get(str(i)) or {}) for i in cluster.get(view) or []]
        rows.append({**cluster, "shown": shown})
    keys = {"size": lambda c: (-c.get("size", 0), c.get("id", 0)),
            "purity": lambda c: (-(c.get("purity") if c.get("purity") is not None else -1), -c.get("size", 0)),
            "id": lambda c: c.get("id", 0)}
    return sorted(rows, key=keys.get(sort, keys["size"]))


def _member(index: str, entry: dict[str, Any]) -> Member:
    return Member(index=index, label=entry.get("label"), path=str(entry.get("path", "")),
                  start=float(entry.get("start") or 0.0), frames=_media(entry.get("frames")),
                  audio=_media(entry.get("audio")), error=entry.get("error"))


def _media(value: Any) -> str | None:
    """A member's media as the file name the media view serves ('media/v000001.jpg' -> 'v000001.jpg')."""
    name = str(value or "").removeprefix("media/")
    return name if MEDIA_NAME.fullmatch(name) else None


def map_svg(gallery: dict[str, Any], space: str, *, colour_by: str = "cluster", size: int = 360) -> SafeString:
    """The round's 2-D map of a space's features (PCA), a dot per video coloured by cluster or by label."""
    points = ((gallery["spaces"].get(space) or {}).get("map") or {}).get("points") or []
    points = [p for p in points if isinstance(p, list) and len(p) >= 5]
    if not points:
        return mark_safe("")
    classes = gallery.get("classes") or []
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span = (lambda low, high: (high - low) or 1.0)
    parts = [f'<svg class="figure" data-testid="cluster-map" viewBox="0 0 {size} {size}" width="{size}" '
             f'role="img" aria-label="2-D map of the {escape(space)} features, coloured by {escape(colour_by)}">']
    for x, y, video, cluster, label in (p[:5] for p in points):
        key = int(label) if colour_by == "label" else int(cluster)
        colour = PALETTE[key % len(PALETTE)] if key >= 0 else "#9ca3af"
        name = classes[int(label)] if 0 <= int(label) < len(classes) else "unlabelled"
        cx = 6 + (float(x) - x0) / span(x0, x1) * (size - 12)
        cy = size - 6 - (float(y) - y0) / span(y0, y1) * (size - 12)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.6" fill="{colour}" fill-opacity=".75">'
                     f'<title>video {int(video)} · cluster {int(cluster)} · {escape(str(name))}</title></circle>')
    parts.append("</svg>")
    return mark_safe("".join(parts))

"""Checkpoint files: written atomically, named by global step, newest found first, a few kept."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

KEEP = 2
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def save_checkpoint(directory: Path, state: dict[str, Any], *, global_step: int) -> Path:
    """Write `step_<global_step>.pt` via a temporary file and rename, so a crash never leaves a torn checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{global_step:08d}.pt"
    write_atomic(path, state)
    for old in list_checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def write_atomic(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint; an unreadable newest one (disk full, killed mid-copy) falls back to the next."""
    for path in list_checkpoints(directory):
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError):
            continue
    return None

"""Checkpoint files: written atomically, named by global step, newest found first, a few kept."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from xdc.errors import DataError

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
    """The newest readable checkpoint; an unreadable newest one (disk full, killed mid-copy) falls back to the next.

    Loaded with `weights_only=True`: a checkpoint holds tensors and plain values only, so a file planted in a shared
    runs folder cannot run code on the worker that resumes from it; one that holds anything else is refused."""
    for path in list_checkpoints(directory):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise DataError(f"{path} holds objects other than tensors and plain values, so it was not written by "
                            "this version of xdc (or was tampered with); it is not loaded. Move it away to start "
                            "the run over.") from None
        except (OSError, RuntimeError, EOFError):
            continue
    return None


def writable_dir(path: str | Path) -> Path:
    """`path` as an output folder: an existing folder, or one whose nearest existing ancestor is a folder this
    process may write in. DataError otherwise; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"output {path} exists and is not a folder")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise DataError(f"output {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"output {path} cannot be written: no write permission on {existing}")
    return path


SPARE_BYTES = 64 << 20  # room left for checkpoints and logs beside what is checked for


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """DataError when the file system of `folder` has less than `needed` bytes (plus a spare margin) free: a job on a
    full disk stops with that reason instead of a bus error in a memory map."""
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE_BYTES:
        raise DataError(f"not enough free disk space for {what} under {folder}: {_size(needed + SPARE_BYTES)} "
                        f"needed, {_size(free)} free")


def _size(count: int) -> str:
    return f"{count / (1 << 30):.2f} GiB" if count >= 1 << 30 else f"{count / (1 << 20):.0f} MiB"

"""Known nuisance factors of a dataset's files, read from an optional `factors.csv` at the dataset's root.

A row names a file by its path relative to the root and gives it a value per factor column (say `colour`,
`speaker`, `camera`); empty means unknown. Pretraining uses them only to diagnose: per round, the NMI and purity of
each clustering with each factor, beside the class, tell whether the clusters follow the class or a nuisance. The
generated and real-material sets write one per tree; any dataset may carry its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xdc.data.layouts import _csv_rows
from xdc.errors import DataError

FACTORS_CSV = "factors.csv"
MAX_FACTORS = 16
FACTOR_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED = {"labels", "video", "audio", "joint", "label", "path"}


@dataclass(frozen=True)
class Factors:
    codes: dict[str, np.ndarray]  # factor -> N codes (int64), -1 where the file has no value
    values: dict[str, list[str]]  # factor -> the value of each code

    def __bool__(self) -> bool:
        return bool(self.codes)


NO_FACTORS = Factors({}, {})


def read_factors(root: str | Path, paths: list[str]) -> Factors:
    """The factors of `paths` (absolute, as the layout listed them) from root/factors.csv; none without the file.

    A malformed file is a DataError naming the line: a bad factor name, too many factors, a repeated path.
    Rows for files that are not among `paths` (other splits, skipped files) are ignored.
    """
    csv_path = Path(root) / FACTORS_CSV
    if not csv_path.is_file():
        return NO_FACTORS
    position = {os.path.normpath(p): i for i, p in enumerate(paths)}
    columns: list[str] | None = None
    raw: dict[str, list[str]] = {}
    seen: set[str] = set()
    for line, row in _csv_rows("factors", csv_path, ("path",)):
        if columns is None:
            columns = _factor_columns(csv_path, [name for name in row if name != "path"])
            raw = {name: [""] * len(paths) for name in columns}
        where = f"factors: {csv_path} line {line}"
        if not row["path"]:
            raise DataError(f"{where}: path must be set")
        path = os.path.normpath(Path(root) / row["path"])
        if path in seen:
            raise DataError(f"{where}: {row['path']} is listed twice")
        seen.add(path)
        if path in position:
            for name in columns:
                raw[name][position[path]] = row.get(name, "")
    return _encode(raw)


def _factor_columns(csv_path: Path, names: list[str]) -> list[str]:
    if len(names) > MAX_FACTORS:
        raise DataError(f"factors: {csv_path} has {len(names)} factor columns; at most {MAX_FACTORS}")
    for name in names:
        if not FACTOR_NAME.fullmatch(name) or name in RESERVED:
            raise DataError(f"factors: {csv_path} line 1: factor name {name!r} must be lower-case letters, digits "
                            f"and underscores (at most 32, starting with a letter) and not one of "
                            f"{', '.join(sorted(RESERVED))}")
    return names


def _encode(raw: dict[str, list[str]]) -> Factors:
    codes, values = {}, {}
    for name, column in raw.items():
        known = sorted({value for value in column if value})
        if not known:
            continue
        index = {value: code for code, value in enumerate(known)}
        codes[name] = np.array([index.get(value, -1) for value in column], dtype=np.int64)
        values[name] = known
    return Factors(codes, values)

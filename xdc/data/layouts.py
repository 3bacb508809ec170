"""Readers that list the media files of real dataset layouts with their labels and splits.

A reader only walks directory trees and parses annotation files; it never decodes media. Each layout is
registered by name in ``LAYOUTS`` and read through ``read_layout``, which validates the split and fold and
refuses an empty listing. Broken input raises ``DataError`` with a one-line message that names the file
(and line) at fault. Hidden files and folders (names starting with ".") are skipped by every directory walk,
so macOS ``._clip.mp4`` debris and notebook checkpoints never become samples.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xdc.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES
STORE_MANIFEST = "xdc-store.json"  # marks a folder as a prepared store (xdc.data.store)


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute path of the media file
    label: int | None = None  # 0-based index into Listing.classes, None when unlabeled


@dataclass(frozen=True)
class Listing:
    layout: str
    root: Path
    samples: list[Sample]
    classes: list[str]  # [] when unlabeled
    missing: int = 0  # annotated files absent on disk and skipped (only layouts that tolerate gaps)

    @property
    def labeled(self) -> bool:
        """True when there are classes and every sample carries a label."""
        return bool(self.classes) and all(sample.label is not None for sample in self.samples)


ReadFn = Callable[[Path, str, int], Listing]


@dataclass(frozen=True)
class Reader:
    read: ReadFn  # (root, split, fold) -> Listing
    splits: tuple[str, ...]
    folds: int = 1


LAYOUTS: dict[str, Reader] = {}


def register(name: str, *, splits: tuple[str, ...], folds: int = 1) -> Callable[[ReadFn], ReadFn]:
    """Register a layout reader under ``name`` with the splits and number of folds it supports."""

    def decorate(read: ReadFn) -> ReadFn:
        if name in LAYOUTS:
            raise ValueError(f"layout {name!r} is registered twice")
        LAYOUTS[name] = Reader(read=read, splits=splits, folds=folds)
        return read

    return decorate


def read_layout(layout: str, root: str | Path, *, split: str = "train", fold: int = 1) -> Listing:
    """List the samples of the dataset at ``root`` read as ``layout``, for one split and fold (of a prepared store
    at ``root``: the split as its source listed it).

    Raises DataError for an unknown layout, a missing root, an unsupported split, a fold out of range,
    broken annotations, or a listing without samples.
    """
    reader = _reader(layout)
    root_dir = _existing_root(layout, root)
    _check_split(layout, reader, split)
    _check_fold(layout, reader, fold)
    try:
        if (root_dir / STORE_MANIFEST).is_file():  # a prepared store lists the splits of its source
            from xdc.data.store import open_store  # decoding modules, which listing a folder does not need

            listing = open_store(str(root_dir)).listing(layout, split, fold)
        else:
            listing = reader.read(root_dir, split, fold)
    except OSError as error:  # an unreadable split file, label file or folder
        raise DataError(f"{layout}: cannot read {error.filename or root_dir}: {error.strerror or error}") from None
    if not listing.samples:
        raise DataError(f"{layout}: no samples under {root_dir} for split {split!r}, fold {fold}")
    outside = next((s.path for s in listing.samples if not Path(os.path.normpath(s.path)).is_relative_to(root_dir)),
                   None)
    if outside is not None:  # '../other/x.mp4' or an absolute path in a split or label file
        raise DataError(f"{layout}: {outside} is listed but lies outside the dataset root {root_dir}")
    return listing


def read_every_split(layout: str, root: str | Path) -> Listing:
    """The whole dataset (split 'all'), after reading every split of every fold the layout defines, so a missing,
    empty or broken split file of any fold is refused now (at registration) rather than when a job asks for it.
    Layouts without folds (folder, kinetics, dcase) have optional splits and are read whole."""
    reader = _reader(layout)
    if reader.folds > 1:
        for fold in range(1, reader.folds + 1):
            for split in reader.splits:
                if split != "all":
                    read_layout(layout, root, split=split, fold=fold)
    return read_layout(layout, root, split="all", fold=1)


def _reader(layout: str) -> Reader:
    try:
        return LAYOUTS[layout]
    except KeyError:
        known = ", ".join(sorted(LAYOUTS))
        raise DataError(f"unknown dataset layout {layout!r}; known layouts: {known}") from None


def _existing_root(layout: str, root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{layout}: dataset root {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{layout}: dataset root {path} is not a directory")
    return path


def _check_split(layout: str, reader: Reader, split: str) -> None:
    if split not in reader.splits:
        raise DataError(f"{layout}: split {split!r} is not one of {', '.join(reader.splits)}")


def _check_fold(layout: str, reader: Reader, fold: int) -> None:
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise DataError(f"{layout}: fold must be an integer, got {fold!r}")
    if reader.folds == 1 and fold != 1:
        raise DataError(f"{layout}: the layout has no folds, so fold must be 1 (got {fold})")
    if not 1 <= fold <= reader.folds:
        raise DataError(f"{layout}: fold {fold} is out of range 1..{reader.folds}")


# ---------------------------------------------------------------------------------------------------------
# Shared helpers: directory walks, text and CSV parsing, missing-file reports.


def _media_files(top: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Every non-hidden file under ``top`` (recursively) whose suffix is in ``suffixes``, sorted. A folder that
    cannot be read is an error, not a silent gap in the dataset."""

    def refuse(error: OSError) -> None:
        raise error

    found = []
    for folder, dirs, files in os.walk(top, onerror=refuse):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in suffixes and path.is_file():
                found.append(path)
    return sorted(found)


def _subdirs(top: Path) -> list[Path]:
    return sorted(path for path in top.iterdir() if path.is_dir() and not path.name.startswith("."))


def _text_lines(layout: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) for each non-blank line; CRLF endings and a BOM are tolerated."""
    for number, line in enumerate(_read_text(layout, path).splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _read_text(layout: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{layout}: {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _csv_rows(layout: str, path: Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row with stripped values) for each data row of a CSV whose header has ``required``."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            yield from _checked_rows(layout, path, reader, required)
        except (csv.Error, UnicodeDecodeError) as error:
            line = max(reader.line_num, 1)
            raise DataError(f"{layout}: {path} line {line}: unreadable CSV ({error})") from None


def _checked_rows(
    layout: str, path: Path, reader: csv.DictReader, required: Iterable[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    header = [name.strip() for name in reader.fieldnames or []]
    absent = [name for name in required if name not in header]
    if absent:
        raise DataError(f"{layout}: {path} line 1: header lacks column(s) {', '.join(absent)}")
    reader.fieldnames = header
    for row in reader:
        values = {key: (value or "").strip() for key, value in row.items() if isinstance(key, str)}
        if any(values.values()):  # skip blank rows such as a trailing ",,,"
            yield reader.line_num, values


def _int_field(layout: str, path: Path, line: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{layout}: {path} line {line}: {name} {value!r} is not an integer") from None


def _missing_files_error(layout: str, missing: list[tuple[Path, str]], where: Path) -> DataError:
    """One error for all listed files absent on disk: the count plus the first one and where it is listed."""
    first, origin = missing[0]
    return DataError(
        f"{layout}: {len(missing)} listed file(s) missing under {where}; first: {first} ({origin})"
    )


def _first_dir(root: Path, names: Iterable[str]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


# ---------------------------------------------------------------------------------------------------------
# folder: a plain tree of videos, unlabeled, unless root/labels.csv lists the files with a class each.

FOLDER_LABELS = "labels.csv"


@register("folder", splits=("all", "train"))
def read_folder(root: Path, split: str, fold: int) -> Listing:
    """Every video under ``root``, sorted. When ``root/labels.csv`` exists it defines the dataset: exactly the files
    it lists, with their labels (other media under root, such as copies in other layouts, are not part of it)."""
    labels_csv = root / FOLDER_LABELS
    if not labels_csv.is_file():
        return Listing("folder", root, [Sample(path) for path in _media_files(root, VIDEO_SUFFIXES)], [])
    names = _folder_label_names(root, labels_csv)
    classes = sorted(set(names.values()))
    index = {name: number for number, name in enumerate(classes)}
    return Listing("folder", root, [Sample(path, index[names[path]]) for path in sorted(names)], classes)


def _folder_label_names(root: Path, labels_csv: Path) -> dict[Path, str]:
    names: dict[Path, str] = {}
    for line, row in _csv_rows("folder", labels_csv, ("path", "label")):
        where = f"folder: {labels_csv} line {line}"
        if not row["path"] or not row["label"]:
            raise DataError(f"{where}: path and label must both be set")
        path = Path(os.path.normpath(root / row["path"]))
        if not path.is_file():
            raise DataError(f"{where}: {row['path']} does not exist under {root}")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise DataError(f"{where}: {row['path']} is not a video ({', '.join(VIDEO_SUFFIXES)})")
        if path in names:
            raise DataError(f"{where}: {row['path']} is listed twice")
        names[path] = row["label"]
    return names


# ---------------------------------------------------------------------------------------------------------
# kinetics: root/{split}/[{class}/]{youtube_id}_{start:06d}_{end:06d}.mp4 joined to the DeepMind CSVs.

KINETICS_SPLITS = ("train", "val", "test")
# Kinetics-700 ships its validation annotations as validate.csv; the CVDF mirror calls them val.csv.
KINETICS_ALIASES = {"train": ("train",), "val": ("val", "validate"), "test": ("test",)}
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


@register("kinetics", splits=(*KINETICS_SPLITS, "all"))
def read_kinetics(root: Path, split: str, fold: int) -> Listing:
    """Clips of one split (or all) joined to their CSV rows by file name, or labeled by class folder."""
    splits = [name for name in KINETICS_SPLITS if _kinetics_dir(root, name)] if split == "all" else [split]
    classes = _kinetics_classes(root, splits)
    samples: list[Sample] = []
    missing = 0
    for name in splits:
        found, absent = _kinetics_split(root, name, classes)
        samples += found
        missing += absent
    return Listing("kinetics", root, samples, classes, missing)


def _kinetics_dir(root: Path, split: str) -> Path | None:
    return _first_dir(root, KINETICS_ALIASES[split])


def _kinetics_csv(root: Path, split: str) -> Path | None:
    candidates = (
        folder / f"{alias}.csv" for folder in (root / "annotations", root) for alias in KINETICS_ALIASES[split]
    )
    return next((path for path in candidates if path.is_file()), None)


def _kinetics_classes(root: Path, splits: list[str]) -> list[str]:
    """Train CSV labels if present, else the requested splits' CSV labels, else class folder names."""
    train_csv = _kinetics_csv(root, "train")
    csvs = [train_csv] if train_csv else [path for name in splits if (path := _kinetics_csv(root, name))]
    if csvs:
        return sorted({label for path in csvs for label in _kinetics_labels(path)})
    train_dir = _kinetics_dir(root, "train")
    dirs = [train_dir] if train_dir else [path for name in splits if (path := _kinetics_dir(root, name))]
    return sorted({sub.name for path in dirs for sub in _subdirs(path)})


def _kinetics_labels(path: Path) -> set[str]:
    return {row.get("label", "") for _, row in _csv_rows("kinetics", path, KINETICS_COLUMNS)} - {""}


def _kinetics_split(root: Path, split: str, classes: list[str]) -> tuple[list[Sample], int]:
    folder = _kinetics_dir(root, split)
    if folder is None:
        looked = ", ".join(KINETICS_ALIASES[split])
        raise DataError(f"kinetics: no {split!r} folder under {root} (looked for {looked})")
    annotations = _kinetics_csv(root, split)
    if annotations is None:
        return _kinetics_by_folder(folder, classes), 0
    return _kinetics_by_csv(folder, annotations, classes)


def _kinetics_by_folder(folder: Path, classes: list[str]) -> list[Sample]:
    index = {name: number for number, name in enumerate(classes)}
    samples = []
    for class_dir in _subdirs(folder):
        if class_dir.name not in index:
            raise DataError(f"kinetics: class folder {class_dir} is not a known class")
        label = index[class_dir.name]
        samples += [Sample(path, label) for path in _media_files(class_dir, VIDEO_SUFFIXES)]
    return samples


def _kinetics_by_csv(folder: Path, annotations: Path, classes: list[str]) -> tuple[list[Sample], int]:
    clips = _kinetics_clips(folder)
    index = {name: number for number, name in enumerate(classes)}
    samples: dict[str, Sample] = {}
    missing = 0
    for line, row in _csv_rows("kinetics", annotations, KINETICS_COLUMNS):
        stem = _kinetics_stem(annotations, line, row)
        label = _kinetics_label(annotations, line, row, index)
        if stem in samples:
            continue  # the same clip annotated twice is one sample
        if stem not in clips:
            missing += 1  # Kinetics downloads are always incomplete: a gap is expected, not an error
            continue
        samples[stem] = Sample(clips[stem], label)
    return list(samples.values()), missing


def _kinetics_clips(folder: Path) -> dict[str, Path]:
    """Clip file stem -> path, anywhere under the split folder (flat CVDF mirror or per-class folders)."""
    clips: dict[str, Path] = {}
    for path in _media_files(folder, VIDEO_SUFFIXES):
        if path.stem in clips:
            raise DataError(f"kinetics: clip {path.stem} exists twice: {clips[path.stem]} and {path}")
        clips[path.stem] = path
    return clips


def _kinetics_stem(annotations: Path, line: int, row: dict[str, str]) -> str:
    if not row["youtube_id"]:
        raise DataError(f"kinetics: {annotations} line {line}: youtube_id is empty")
    start = _int_field("kinetics", annotations, line, "time_start", row["time_start"])
    end = _int_field("kinetics", annotations, line, "time_end", row["time_end"])
    return f"{row['youtube_id']}_{start:06d}_{end:06d}"


def _kinetics_label(annotations: Path, line: int, row: dict[str, str], index: dict[str, int]) -> int | None:
    label = row.get("label", "")
    if not label:
        return None  # test CSVs of Kinetics-400/600 carry no labels
    if label not in index:
        raise DataError(f"kinetics: {annotations} line {line}: label {label!r} is not among the training classes")
    return index[label]


# ---------------------------------------------------------------------------------------------------------
# ucf101: UCF-101/{class}/v_*.avi with the official ucfTrainTestlist/ split files.

UCF_VIDEO_DIRS = ("UCF-101", "UCF101")
UCF_LISTS = "ucfTrainTestlist"


@register("ucf101", splits=("train", "test", "all"), folds=3)
def read_ucf101(root: Path, split: str, fold: int) -> Listing:
    """Videos of an official UCF101 split (fold = split number 1..3), labeled through classInd.txt."""
    lists = root / UCF_LISTS
    classes = _ucf_classes(_required_file("ucf101", lists / "classInd.txt"))
    videos = _first_dir(root, UCF_VIDEO_DIRS) or root
    parts = ("train", "test") if split == "all" else (split,)
    entries = [entry for part in parts for entry in _ucf_entries(lists, part, fold, classes)]
    _reject_repeats("ucf101", entries)
    missing = [(Path(relative), origin) for relative, _, origin in entries if not (videos / relative).is_file()]
    if missing:
        raise _missing_files_error("ucf101", missing, videos)
    return Listing("ucf101", root, [Sample(videos / relative, label) for relative, label, _ in entries], classes)


def _required_file(layout: str, path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{layout}: split file {path} does not exist")
    return path


def _ucf_classes(class_ind: Path) -> list[str]:
    """classInd.txt lines '1 ApplyEyeMakeup' -> class names in 1-based order, numbers checked contiguous."""
    numbered: dict[int, str] = {}
    for line, text in _text_lines("ucf101", class_ind):
        fields = text.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"ucf101: {class_ind} line {line}: expected '<number> <class>', got {text!r}")
        number, name = int(fields[0]), fields[1]
        if number in numbered or name in numbered.values():
            raise DataError(f"ucf101: {class_ind} line {line}: class {number} {name} is listed twice")
        numbered[number] = name
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise DataError(f"ucf101: {class_ind}: class numbers must run 1..{len(numbered)} without gaps")
    return [numbered[number] for number in sorted(numbered)]


Entry = tuple[str, int, str]  # (path relative to the video folder, 0-based label, "file line N")


def _ucf_entries(lists: Path, part: str, fold: int, classes: list[str]) -> list[Entry]:
    """Entries of trainlist0N.txt ('Class/v_x.avi 3') or testlist0N.txt ('Class/v_x.avi')."""
    split_file = _required_file("ucf101", lists / f"{part}list0{fold}.txt")
    index = {name: number for number, name in enumerate(classes)}
    entries = []
    for line, text in _text_lines("ucf101", split_file):
        where = f"ucf101: {split_file} line {line}"
        relative, number = _ucf_fields(where, text, labeled=part == "train")
        label = _ucf_label(where, relative, number, index)
        entries.append((relative, label, f"{split_file.name} line {line}"))
    return entries


def _ucf_fields(where: str, text: str, *, labeled: bool) -> tuple[str, int | None]:
    fields = text.split()
    expected = "'<class>/<video> <label>'" if labeled else "'<class>/<video>'"
    if len(fields) not in ((2,) if labeled else (1, 2)) or "/" not in fields[0]:
        raise DataError(f"{where}: expected {expected}, got {text!r}")
    if len(fields) == 2 and not fields[1].isdigit():
        raise DataError(f"{where}: label {fields[1]!r} is not a class number")
    return fields[0], int(fields[1]) if len(fields) == 2 else None


def _ucf_label(where: str, relative: str, number: int | None, index: dict[str, int]) -> int:
    """The 0-based label of the entry's class folder, checked against the 1-based number the line states."""
    class_name = relative.split("/", 1)[0]
    if class_name not in index:
        raise DataError(f"{where}: class {class_name!r} is not in classInd.txt")
    label = index[class_name]
    if number is not None and number != label + 1:
        raise DataError(f"{where}: label {number} disagrees with classInd.txt, where {class_name} is {label + 1}")
    return label


def _reject_repeats(layout: str, entries: list[Entry]) -> None:
    seen: dict[str, str] = {}
    for relative, _, origin in entries:
        if relative in seen:
            raise DataError(f"{layout}: {relative} is listed twice ({seen[relative]} and {origin})")
        seen[relative] = origin


# ---------------------------------------------------------------------------------------------------------
# hmdb51: {class}/*.avi with testTrainMulti_7030_splits/{class}_test_split{1,2,3}.txt ("<file>.avi <tag>").

HMDB_VIDEO_DIRS = ("hmdb51_org", "videos")
HMDB_SPLIT_DIRS = ("testTrainMulti_7030_splits", "splits")
HMDB_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<fold>\d+)\.txt$")
HMDB_TAGS = {"train": {"1"}, "test": {"2"}, "all": {"0", "1", "2"}}  # 0 = unused by this split


@register("hmdb51", splits=("train", "test", "all"), folds=3)
def read_hmdb51(root: Path, split: str, fold: int) -> Listing:
    """Videos tagged for ``split`` in the official 70/30 split files of ``fold``; 'all' is every listed video."""
    split_dir = _first_dir(root, HMDB_SPLIT_DIRS)
    if split_dir is None:
        raise DataError(f"hmdb51: no split folder under {root} (looked for {', '.join(HMDB_SPLIT_DIRS)})")
    classes = _hmdb_classes(split_dir)
    videos = _first_dir(root, HMDB_VIDEO_DIRS) or root
    entries = [
        entry
        for label, name in enumerate(classes)
        for entry in _hmdb_entries(split_dir / f"{name}_test_split{fold}.txt", name, label, HMDB_TAGS[split])
    ]
    _reject_repeats("hmdb51", entries)
    missing = [(Path(relative), origin) for relative, _, origin in entries if not (videos / relative).is_file()]
    if missing:
        raise _missing_files_error("hmdb51", missing, videos)
    return Listing("hmdb51", root, [Sample(videos / relative, label) for relative, label, _ in entries], classes)


def _hmdb_classes(split_dir: Path) -> list[str]:
    names = {match["name"] for path in split_dir.iterdir() if (match := HMDB_SPLIT_FILE.match(path.name))}
    if not names:
        raise DataError(f"hmdb51: {split_dir} holds no '<class>_test_split<N>.txt' files")
    return sorted(names)


def _hmdb_entries(split_file: Path, name: str, label: int, tags: set[str]) -> list[Entry]:
    _required_file("hmdb51", split_file)
    entries = []
    for line, text in _text_lines("hmdb51", split_file):
        fields = text.rsplit(maxsplit=1)  # a video name may hold spaces; the tag is the last field
        if len(fields) != 2 or fields[1] not in HMDB_TAGS["all"]:
            raise DataError(f"hmdb51: {split_file} line {line}: expected '<video>.avi <0|1|2>', got {text!r}")
        if fields[1] in tags:
            entries.append((f"{name}/{fields[0]}", label, f"{split_file.name} line {line}"))
    return entries


# ---------------------------------------------------------------------------------------------------------
# esc50: audio/*.wav with meta/esc50.csv (filename,fold,target,category,esc10,src_file,take).

ESC50_FOLDS = 5
ESC50_COLUMNS = ("filename", "fold", "target", "category")


@dataclass(frozen=True)
class _Esc50Row:
    filename: str
    fold: int
    target: int
    origin: str  # "esc50.csv line N"


@register("esc50", splits=("train", "test", "all"), folds=ESC50_FOLDS)
def read_esc50(root: Path, split: str, fold: int) -> Listing:
    """Clips of ESC-50: 'test' is the given fold, 'train' the other four, 'all' every clip."""
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DataError(f"esc50: metadata file {meta} does not exist")
    rows, classes = _esc50_rows(meta)
    chosen = [row for row in rows if _in_esc50_split(row.fold, split, fold)]
    audio = root / "audio"
    missing = [(Path(row.filename), row.origin) for row in chosen if not (audio / row.filename).is_file()]
    if missing:
        raise _missing_files_error("esc50", missing, audio)
    return Listing("esc50", root, [Sample(audio / row.filename, row.target) for row in chosen], classes)


def _in_esc50_split(row_fold: int, split: str, fold: int) -> bool:
    return split == "all" or (row_fold == fold) == (split == "test")


def _esc50_rows(meta: Path) -> tuple[list[_Esc50Row], list[str]]:
    """Parsed rows plus class names ordered by target, with target <-> category checked one-to-one."""
    rows: list[_Esc50Row] = []
    category_of: dict[int, str] = {}
    target_of: dict[str, int] = {}
    seen: set[str] = set()
    for line, raw in _csv_rows("esc50", meta, ESC50_COLUMNS):
        row = _esc50_row(meta, line, raw)
        category = raw["category"]
        known_category = category_of.setdefault(row.target, category)
        known_target = target_of.setdefault(category, row.target)
        if (known_category, known_target) != (category, row.target):
            raise DataError(
                f"esc50: {meta} line {line}: target {row.target} is {category!r} here but earlier rows pair "
                f"target {row.target} with {known_category!r} and {category!r} with target {known_target}"
            )
        if row.filename in seen:
            raise DataError(f"esc50: {meta} line {line}: {row.filename} is listed twice")
        seen.add(row.filename)
        rows.append(row)
    return rows, _esc50_classes(meta, category_of)


def _esc50_row(meta: Path, line: int, raw: dict[str, str]) -> _Esc50Row:
    fold = _int_field("esc50", meta, line, "fold", raw["fold"])
    target = _int_field("esc50", meta, line, "target", raw["target"])
    if not 1 <= fold <= ESC50_FOLDS:
        raise DataError(f"esc50: {meta} line {line}: fold {fold} is out of range 1..{ESC50_FOLDS}")
    if target < 0 or not raw["filename"] or not raw["category"]:
        raise DataError(f"esc50: {meta} line {line}: needs a filename, a category and a target >= 0")
    return _Esc50Row(raw["filename"], fold, target, f"{meta.name} line {line}")


def _esc50_classes(meta: Path, category_of: dict[int, str]) -> list[str]:
    gaps = sorted(set(range(len(category_of))) - set(category_of))
    if gaps:
        raise DataError(f"esc50: {meta}: targets must run 0..{len(category_of) - 1}; missing target {gaps[0]}")
    return [category_of[target] for target in range(len(category_of))]


# ---------------------------------------------------------------------------------------------------------
# dcase: acoustic scenes as root/{train,test}/{scene}/*.wav, or root/{scene}/*.wav without splits.

DCASE_SPLITS = ("train", "test")


@register("dcase", splits=(*DCASE_SPLITS, "all"))
def read_dcase(root: Path, split: str, fold: int) -> Listing:
    """Recordings labeled by scene folder; classes are the union over splits so train and test share indices."""
    split_dirs = [root / name for name in DCASE_SPLITS if (root / name).is_dir()]
    if not split_dirs and split != "all":
        raise DataError(f"dcase: {root} has no train/ or test/ folder, so only split 'all' can be read")
    if split_dirs and split != "all" and not (root / split).is_dir():
        raise DataError(f"dcase: split folder {root / split} does not exist")
    tops = split_dirs or [root]
    classes = sorted({scene.name for top in tops for scene in _subdirs(top)})
    chosen = tops if split == "all" else [root / split]
    index = {name: number for number, name in enumerate(classes)}
    samples = [
        Sample(path, index[scene.name])
        for top in chosen
        for scene in _subdirs(top)
        for path in _media_files(scene, AUDIO_SUFFIXES)
    ]
    return Listing("dcase", root, samples, classes)

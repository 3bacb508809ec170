"""The team's leaderboard, read in the database: a few grouped queries, whatever the number of jobs.

A row is what determines an encoder's numbers: a pretraining config without its runtime keys and seed (the seeds
are the row's n), a baseline of one kind, width, input and training budget, or one checkpoint file outside the lab.
A column is what determines how it was measured: the benchmark (a `folder` dataset by its name), the protocol label
(its preset included; a shuffled-labels control apart), the protocol version and the set of splits a row's results
cover. A cell never averages across any of those. Each job row carries its `board_row`, `board_label` and
`board_column` from submission (`board_fields`), so the page groups by columns instead of reading configs.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db.models import Count, F, FloatField, Max, Q, Sum
from django.db.models.functions import Cast
from django.utils.safestring import SafeString, mark_safe

from webapp.lab.models import Dataset, Job, Result, Team
from xdc.config import PRESETS, PretrainConfig, deep_merge, flatten, runtime_keys

# Two pretraining jobs whose configs differ only in these keys are one row: the keys that do not change what is
# learnt (declared `runtime` on xdc's config fields) and the seed, over which a row reports mean ± std.
ROW_IGNORED_KEYS = runtime_keys(PretrainConfig) | {"seed"}
BASELINES = ("random", "supervised")
PAGE_ROWS = 100
REFERENCES_FILE = Path(__file__).with_name("references.json")


# -- what a job is on the board (stored on the job row at submission) ----------------------------------------------


def board_fields(kind: str, cfg: dict[str, Any], *, dataset: Dataset | None = None,
                 parent: Job | None = None) -> dict[str, str]:
    """The row (key, label) and, for an evaluation, the column a job's results belong to."""
    if kind == Job.Kind.PRETRAIN:
        key, label = pretrain_row(cfg, dataset)
        return {"board_row": key, "board_label": label, "board_column": ""}
    if kind != Job.Kind.EVALUATE:
        return {"board_row": "", "board_label": "", "board_column": ""}
    if parent is not None and parent.board_row:
        key, label = parent.board_row, parent.board_label
    elif str(cfg.get("checkpoint", "")) in BASELINES:
        key, label = baseline_row(cfg)
    else:
        key, label = _digest("checkpoint", cfg.get("checkpoint", "")), str(cfg.get("checkpoint", ""))[-300:]
    return {"board_row": key, "board_label": label[:300], "board_column": column_name(cfg, dataset)}


def pretrain_row(cfg: dict[str, Any], dataset: Dataset | None = None) -> tuple[str, str]:
    kept = {k: v for k, v in flatten(cfg).items() if k not in ROW_IGNORED_KEYS}
    data = dataset.name if dataset else Path(str(cfg.get("data", {}).get("path", ""))).name or "?"
    cluster = cfg.get("cluster", {})
    label = f"{cfg.get('variant', '?')} · {data} · K={cluster.get('k_video', '?')} · {budget_label(cfg)}"
    return _digest("pretrain", kept), label


def baseline_row(cfg: dict[str, Any]) -> tuple[str, str]:
    """Random init or the supervised baseline, keyed by what sets its numbers: kind, the encoder's width and input
    (the preset's unless given), the supervised budget and its training data."""
    from xdc.config import load_config
    from xdc.evaluation.encoders import SUPERVISED_BUDGET

    kind, preset = str(cfg.get("checkpoint")), str(cfg.get("preset", "") or "")
    modality = protocol_modality(str(cfg.get("protocol", "")), preset)
    budget = SUPERVISED_BUDGET.get(preset, "") if kind == "supervised" else ""
    model = load_config(preset=(budget if kind == "supervised" else preset) or None).model
    width = int(cfg.get("width") or getattr(model, f"{modality}_width"))
    layer = model.video_input if modality == "video" else model.audio_norm
    data = str(cfg.get("supervised_data", "") or "") if kind == "supervised" else ""
    key = _digest("baseline", {"kind": kind, "width": width, "input": layer, "budget": budget, "data": data})
    label = "random init" if kind == "random" else f"supervised ({budget or 'full'} budget)"
    if layer not in ("rgb", "none"):  # Sobel frames for video; per-clip standardised log-mel for sound
        label += f" · width {width} · " + (f"{layer} input" if modality == "video" else f"{layer}-normalised sound")
    else:
        label += f" · width {width}"
    return key, label + (f" · on {Path(data).name}" if data else "")


def column_name(cfg: dict[str, Any], dataset: Dataset | None = None) -> str:
    """'ucf101 · linear-small': the benchmark (a folder dataset by name) and the protocol label; a shuffled-labels
    control is a column of its own."""
    benchmark, protocol = str(cfg.get("benchmark", "?")), str(cfg.get("protocol", "?"))
    if benchmark == "folder":
        benchmark = f"folder:{dataset.name if dataset else Path(str(cfg.get('data', ''))).name or '?'}"
    if cfg.get("preset"):
        protocol = f"{protocol}-{cfg['preset']}"
    if cfg.get("shuffle_train_labels"):
        protocol = f"{protocol} (shuffled labels)"
    return f"{benchmark} · {protocol}"[:200]


def budget_label(cfg: dict[str, Any]) -> str:
    """Which preset a pretraining config is ('small preset'), with up to two keys it changes, else its budget."""
    flat = flatten(cfg)
    shown = {"variant", "data.path", "data.layout", "data.split", "data.fold", "cluster.k_video"}  # in the label
    shown |= {k for k in ("cluster.k_audio", "cluster.k_joint") if flat.get(k) == flat.get("cluster.k_video")}
    learnt = {k: v for k, v in flat.items() if k not in ROW_IGNORED_KEYS and k not in shown}
    best = min(_preset_flats(), key=lambda item: len(_differences(learnt, item[1])))
    changed = _differences(learnt, best[1])
    if len(changed) <= 2:
        extra = "".join(f", {k}={learnt.get(k)}" for k in changed)
        return f"{best[0]} preset{extra}"
    return (f"custom: {cfg.get('rounds', '?')} rounds × {cfg.get('epochs_per_round', '?')} epochs, width "
            f"{cfg.get('model', {}).get('video_width', '?')}")


@functools.cache
def _preset_flats() -> tuple[tuple[str, dict[str, Any]], ...]:
    defaults = PretrainConfig().to_dict()
    return (("default", flatten(defaults)),
            *((name, flatten(PretrainConfig.from_dict(deep_merge(defaults, values)).to_dict()))
              for name, values in PRESETS.items()))


def _differences(learnt: dict[str, Any], preset: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in learnt.items() if k in preset and preset[k] != v)


def protocol_modality(name: str, preset: str) -> str:
    from xdc.evaluation.protocols import PROTOCOLS

    versions = PROTOCOLS.get((name, preset)) or PROTOCOLS.get((name, ""))
    return next(iter(versions.values())).modality if versions else "video"


@functools.cache
def latest_versions() -> dict[str, int]:
    """The newest registered version of each protocol label ('linear-small': 1)."""
    from xdc.evaluation.protocols import PROTOCOLS

    return {(f"{name}-{preset}" if preset else name): max(versions) for (name, preset), versions in PROTOCOLS.items()}


def _digest(prefix: str, value: Any) -> str:
    return f"{prefix}:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


# -- the board ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Column:
    name: str  # 'ucf101 · linear-small'
    version: str  # the protocol version the results ran under
    splits: str  # '1' or '1,2,3': the splits a row's results cover
    protocol: str = field(default="", compare=False)  # the protocol label, for staleness

    @property
    def key(self) -> str:
        return f"{self.name}|v{self.version}|{self.splits}"

    @functools.cached_property
    def quoted(self) -> str:
        """The name as a query-string value (the jobs behind a cell)."""
        return quote(self.name, safe="")

    @property
    def title(self) -> str:
        splits = f"split {self.splits}" if "," not in self.splits else f"splits {self.splits}"
        return f"{self.name} v{self.version or '?'} · {splits}"

    @property
    def latest(self) -> int | None:
        return latest_versions().get(self.protocol)

    @property
    def stale(self) -> bool:
        return self.latest is not None and self.version.isdigit() and int(self.version) < self.latest


@dataclass
class Cell:
    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    best: float | None = None
    pending: int = 0
    delta: float | None = None

    def add(self, n: int, total: float, squares: float, best: float) -> None:
        self.n, self.total, self.squares = self.n + n, self.total + total, self.squares + squares
        self.best = best if self.best is None else max(self.best, best)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def delta_text(self) -> str:
        return f"{self.delta:+.3f}" if self.delta is not None else ""

    @property
    def std(self) -> float | None:
        """Sample standard deviation over the cell's results (0 for one)."""
        if self.n < 2:
            return 0.0 if self.n else None
        return math.sqrt(max(self.squares - self.total * self.total / self.n, 0.0) / (self.n - 1))


@dataclass
class Row:
    key: str
    label: str
    kind: str  # pretrained | baseline | checkpoint
    pretrain_jobs: list[int] = field(default_factory=list)
    cells: dict[Column, Cell] = field(default_factory=dict)


@dataclass
class Board:
    columns: list[Column]
    rows: list[Row]  # this page's rows, in order
    total_rows: int = 0
    page: int = 1
    pages: int = 1
    pins: dict[str, str] = field(default_factory=dict)  # column key -> pinned row key
    pin_labels: dict[str, str] = field(default_factory=dict)
    pin_choices: list[tuple[str, str]] = field(default_factory=list)  # (key, label) of every row, all pages

    def matrix(self) -> list[tuple[Row, list[tuple[Column, Cell | None]]]]:
        return [(row, [(column, row.cells.get(column)) for column in self.columns]) for row in self.rows]

    def rendered(self, jobs_url: str) -> list[tuple[Row, list[SafeString]]]:
        """This page's rows with their cells as HTML (`cell_html`); `jobs_url` is the jobs list of the board's team
        (a query string of its own, to which a cell adds its row, column and version)."""
        return [(row, [cell_html(row.cells.get(column), row, column, jobs_url) for column in self.columns])
                for row in self.rows]

    def header(self) -> list[tuple[Column, str]]:
        """Each column with the label of its pinned row ('' when none)."""
        return [(column, self.pin_labels.get(column.key, "")) for column in self.columns]


def query_from(params) -> dict[str, Any]:
    """The board's filters and order from a query string: variant, pretraining dataset, sort column, page."""
    from webapp.lab.selectors import parse_id

    return {"variant": str(params.get("variant", ""))[:40], "dataset": parse_id(params.get("dataset", "")),
            "sort": str(params.get("sort", ""))[:400], "page": min(parse_id(params.get("page", "")) or 1, 1 << 20)}


def row_kind(key: str) -> str:
    return {"pretrain": "pretrained", "baseline": "baseline"}.get(key.partition(":")[0], "checkpoint")


def build(team: Team, *, variant: str = "", dataset: int | None = None, sort: str = "", page: int = 1,
          page_rows: int | None = PAGE_ROWS) -> Board:
    """The team's board: rows of the filters (baselines always; checkpoint files only unfiltered), every column
    any of them fills, sorted by `sort` (a column key, best first; else baselines then labels), one page of
    `page_rows` (None: all, for exports), with deltas to each column's pinned baseline."""
    allowed = _allowed_rows(team, variant, dataset)
    rows = _rows(team, allowed)
    _fill_results(team, rows)
    _fill_pending(team, rows)
    columns = sorted({column for row in rows.values() for column in row.cells})
    pins = _pins(team, rows, columns)
    _deltas(rows, pins)
    ordered = _sorted(list(rows.values()), next((c for c in columns if c.key == sort), None))
    size = page_rows or max(len(ordered), 1)
    pages = max(1, math.ceil(len(ordered) / size))
    page = min(max(page, 1), pages)
    return Board(columns=columns, rows=ordered[(page - 1) * size:page * size], total_rows=len(ordered), page=page,
                 pages=pages, pins=pins, pin_labels={k: rows[v].label for k, v in pins.items()},
                 pin_choices=[(row.key, row.label) for row in ordered])


def _allowed_rows(team: Team, variant: str, dataset: int | None) -> set[str] | None:
    """The pretrained rows the filters keep (None: no filter)."""
    if not variant and not dataset:
        return None
    jobs = Job.objects.filter(team=team, kind=Job.Kind.PRETRAIN)
    if variant:
        jobs = jobs.filter(variant=variant) if "\x00" not in variant else jobs.none()
    if dataset:
        jobs = jobs.filter(dataset_id=dataset)
    return set(jobs.values_list("board_row", flat=True))


def _keeps(allowed: set[str] | None, key: str) -> bool:
    if allowed is None:
        return True
    return key in allowed or row_kind(key) == "baseline"


def _rows(team: Team, allowed: set[str] | None) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    pretrains = (Job.objects.filter(team=team, kind=Job.Kind.PRETRAIN).order_by("pk")
                 .values_list("board_row", "board_label", "pk"))
    for key, label, pk in pretrains:
        if _keeps(allowed, key):
            rows.setdefault(key, Row(key, label, "pretrained")).pretrain_jobs.append(pk)
    others = (Job.objects.filter(team=team, kind=Job.Kind.EVALUATE, parent=None)
              .values_list("board_row", "board_label").order_by().distinct())
    for key, label in others:
        if key not in rows and _keeps(allowed, key) and (allowed is None or row_kind(key) == "baseline"):
            rows[key] = Row(key, label, row_kind(key))
    return rows


def _fill_results(team: Team, rows: dict[str, Row]) -> None:
    """One grouped query: n, sum, sum of squares and best per (row, column, version, split); a row's splits then
    make its column's split set. Tuples, not dicts, and one Column object per distinct column: the board of a
    large team loops over tens of thousands of groups."""
    grouped = (Result.objects.filter(team=team, job__status=Job.Status.SUCCEEDED, metric_value__isnull=False)
               .values("job__board_row", "job__board_column", "protocol_version", "protocol", "split")
               .annotate(n=Count("id"), total=Sum("metric_value"), best=Max("metric_value"),
                         squares=Sum(Cast(F("metric_value"), FloatField()) * F("metric_value")))
               .values_list("job__board_row", "job__board_column", "protocol_version", "protocol", "split", "n",
                            "total", "squares", "best").order_by())
    per_cell: dict[tuple[str, str, str, str], list[tuple]] = defaultdict(list)
    for row_key, name, version, protocol, split, *numbers in grouped:
        if row_key in rows:
            per_cell[(row_key, name, version, protocol)].append((split, *numbers))
    columns: dict[tuple[str, str, str, str], Column] = {}
    for (row_key, name, version, protocol), groups in per_cell.items():
        splits = groups[0][0] if len(groups) == 1 else ",".join(sorted({g[0] for g in groups}, key=_split_order))
        column = columns.get((name, version, splits, protocol))
        if column is None:
            column = columns[(name, version, splits, protocol)] = Column(name, version, splits, protocol)
        cell = rows[row_key].cells[column] = Cell()
        for _, n, total, squares, best in groups:
            cell.add(n, total or 0.0, squares or 0.0, best)


def _split_order(split: str) -> tuple[int, str]:
    return (int(split), "") if split.isdigit() else (1 << 30, split)


def _fill_pending(team: Team, rows: dict[str, Row]) -> None:
    """Evaluations queued or running, and those an active pretraining queues when it succeeds, in the column they
    will fill: the row's column of that name and version if it has one, else one of their own split."""
    active = Job.objects.filter(team=team, status__in=Job.ACTIVE)
    for key, name, cfg in active.filter(kind=Job.Kind.EVALUATE).values_list("board_row", "board_column", "config"):
        if key in rows:
            _pending_cell(rows[key], name, cfg)
    datasets = {d.pk: d for d in team.datasets.all()}
    for key, specs in active.filter(kind=Job.Kind.PRETRAIN).values_list("board_row", "evaluations"):
        for spec in (specs or []) if key in rows else []:
            data = datasets.get(spec.get("dataset"))
            cfg = {**spec, "benchmark": data.benchmark if data else "?"}
            _pending_cell(rows[key], column_name(cfg, data), cfg)


def _pending_cell(row: Row, name: str, cfg: dict[str, Any]) -> None:
    protocol = f"{cfg.get('protocol', '?')}-{cfg['preset']}" if cfg.get("preset") else str(cfg.get("protocol", "?"))
    version = str(cfg.get("version") or latest_versions().get(protocol, ""))
    column = next((c for c in row.cells if c.name == name and c.version == version), None)
    if column is None:
        column = Column(name, version, str(cfg.get("split", 1)), protocol)
    row.cells.setdefault(column, Cell()).pending += 1


def _pins(team: Team, rows: dict[str, Row], columns: list[Column]) -> dict[str, str]:
    """Each column's pinned row: the team's choice if that row has a value there, else the first random-init
    baseline that has one."""
    chosen = team.leaderboard_pins if isinstance(team.leaderboard_pins, dict) else {}
    pins = {}
    for column in columns:
        filled = [row for row in rows.values() if row.cells.get(column) and row.cells[column].n]
        pick = next((r for r in filled if r.key == chosen.get(column.key)), None)
        randoms = sorted((r for r in filled if r.kind == "baseline" and r.label.startswith("random")),
                         key=lambda r: (r.label, r.key))  # the same pick on every read
        pick = pick or (randoms[0] if randoms else None)
        if pick is not None:
            pins[column.key] = pick.key
    return pins


def _deltas(rows: dict[str, Row], pins: dict[str, str]) -> None:
    for row in rows.values():
        for column, cell in row.cells.items():
            pinned = rows[pins[column.key]].cells[column] if column.key in pins else None
            if cell.n and pinned is not None and row.key != pins[column.key]:
                cell.delta = cell.mean - pinned.mean


def _sorted(rows: list[Row], column: Column | None) -> list[Row]:
    if column is None:
        return sorted(rows, key=lambda r: (r.kind != "baseline", r.label, r.key))
    def value(row: Row) -> tuple[int, float, str]:
        cell = row.cells.get(column)
        return (0, -cell.mean, row.label) if cell is not None and cell.n else (1, 0.0, row.label)
    return sorted(rows, key=value)


def cell_html(cell: Cell | None, row: Row, column: Column, jobs_url: str) -> SafeString:
    """A cell of the page: mean ± std, n (a link to the jobs behind it), best, Δ to the pinned row, pending. Built
    here rather than in the template: a page holds a thousand of them."""
    if cell is None:
        return mark_safe('<td data-testid="leaderboard-cell" data-mean="" data-n="0" data-pending="0">'
                         '<span class="muted">—</span></td>')
    mean = "" if cell.mean is None else f"{cell.mean:.6f}"
    parts = [f'<td data-testid="leaderboard-cell" data-mean="{mean}" data-n="{cell.n}" data-pending="{cell.pending}">']
    if cell.n:
        spread = f" ± {cell.std:.3f}" if cell.n > 1 else ""
        parts.append(f'<strong>{cell.mean:.3f}</strong>{spread} <a class="small" href="{escape(jobs_url)}&amp;row='
                     f'{quote(row.key, safe=":")}&amp;column={column.quoted}&amp;version={quote(column.version, safe="")}'
                     f'&amp;status=succeeded">n={cell.n}</a>')
        if cell.n > 1:
            parts.append(f'<div class="small muted">best {cell.best:.3f}</div>')
        if cell.delta is not None:
            parts.append(f'<div class="small delta {"up" if cell.delta >= 0 else "down"}" data-testid="delta">'
                         f'Δ {cell.delta_text}</div>')
    if cell.pending:
        parts.append(f'<div class="pending" data-testid="pending"><span class="dot" aria-hidden="true"></span>'
                     f'{cell.pending} queued or running</div>')
    parts.append("</td>")
    return mark_safe("".join(parts))


# -- published numbers -------------------------------------------------------------------------------------------


@functools.cache
def references() -> tuple[dict[str, Any], ...]:
    """Published results (references.json): method, pretraining data, architecture, protocol, source and top-1 per
    benchmark, shown apart from the measured rows."""
    return tuple(json.loads(REFERENCES_FILE.read_text())["results"])


def reference_benchmarks() -> list[str]:
    return sorted({benchmark for ref in references() for benchmark in ref["top1"]})


def reference_table() -> list[tuple[dict[str, Any], list[float | None]]]:
    """Each published result with its top-1 per benchmark of `reference_benchmarks()`, for the page."""
    benchmarks = reference_benchmarks()
    return [(ref, [ref["top1"].get(b) for b in benchmarks]) for ref in references()]


# -- exports -----------------------------------------------------------------------------------------------------


def export_table(board: Board) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text: the measured rows, then the published ones marked as such."""
    header = ["checkpoint", "kind", *[column.title for column in board.columns]]
    body = [[row.label, row.kind, *[_cell_text(cell) for _, cell in cells]] for row, cells in board.matrix()]
    for ref in references():
        cells = [_reference_text(ref, column) for column in board.columns]
        body.append([f"{ref['method']} ({ref['pretraining']}, {ref['architecture']}) [{ref['source']}]",
                     "published", *cells])
    return header, body


def _cell_text(cell: Cell | None) -> str:
    if cell is None or not cell.n:
        return ""
    spread = f" ± {cell.std:.3f}" if cell.n > 1 else ""
    return f"{cell.mean:.3f}{spread} (n={cell.n})"


def _reference_text(ref: dict[str, Any], column: Column) -> str:
    benchmark, _, protocol = column.name.partition(" · ")
    value = ref["top1"].get(benchmark) if protocol == ref["protocol"] else None
    return f"{value / 100:.3f}" if value is not None else ""


def to_csv(board: Board) -> str:
    header, body = export_table(board)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([header, *body])
    return out.getvalue()


def to_markdown(board: Board) -> str:
    header, body = export_table(board)
    cell = (lambda text: escape(text, quote=False).replace("|", "\\|").replace("\n", " "))
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in body]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                 "·": r"$\cdot$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def to_latex(board: Board) -> str:
    """A booktabs table (\\usepackage{booktabs}); published rows below a \\midrule, in italics."""
    header, body = export_table(board)
    measured = [row for row in body if row[1] != "published"]
    published = [row for row in body if row[1] == "published"]
    spec = "l" + "c" * (len(header) - 2)
    line = (lambda cells: " & ".join(cells) + r" \\")
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             line([latex_escape(header[0]), *map(latex_escape, header[2:])]), r"\midrule"]
    lines += [line([latex_escape(r[0]), *map(latex_escape, r[2:])]) for r in measured]
    if published:
        lines.append(r"\midrule")
        lines += [line([r"\textit{" + latex_escape(r[0]) + "}", *map(latex_escape, r[2:])]) for r in published]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


EXPORTS = {"csv": (to_csv, "text/csv"), "md": (to_markdown, "text/markdown"), "tex": (to_latex, "application/x-tex")}


# -- staleness ---------------------------------------------------------------------------------------------------


def stale_evaluations(team: Team, column: Column) -> list[Job]:
    """The succeeded evaluations of a stale column that have no counterpart (same row, split, seed and data) under
    the protocol's latest version, succeeded or on its way: what a re-evaluation queues again."""
    done = (Job.objects.filter(team=team, kind=Job.Kind.EVALUATE, board_column=column.name,
                               status=Job.Status.SUCCEEDED, result__protocol_version=column.version)
            .filter(Q(result__split__in=column.splits.split(",")))
            .select_related("parent", "dataset").order_by("pk"))
    current = Job.objects.filter(team=team, kind=Job.Kind.EVALUATE, board_column=column.name).filter(
        Q(status__in=Job.ACTIVE) | Q(result__protocol_version=str(column.latest)))
    covered = {_identity(job) for job in current}
    queued, seen = [], set()
    for job in done:
        identity = _identity(job)
        if identity not in covered and identity not in seen:
            seen.add(identity)
            queued.append(job)
    return queued


def _identity(job: Job) -> tuple:
    cfg = job.config
    return (job.board_row, str(cfg.get("split")), cfg.get("seed"), cfg.get("checkpoint"), cfg.get("data"))

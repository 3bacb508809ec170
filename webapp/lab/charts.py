"""Curves of a job's MLflow run (loss per step, cluster metrics per round) and their rendering as inline SVG.

MLflow may be down or slow; a page then shows its text without the plots rather than hanging, so the client is
told to give up after one short try. A finished job's curves no longer change: they are read from MLflow once,
downsampled and kept in the database (`JobCurves`), so a page that draws many finished runs asks MLflow nothing.

A chart carries its colours as SVG attributes that no rule of the site's stylesheet targets (a `style` attribute
would be refused by the Content-Security-Policy, which allows only style blocks that carry the request's nonce), and
its hover values as `<title>` elements, so it needs no script and draws the same when a page swaps it in live.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

from webapp.lab.models import Job, JobCurves

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"
ROUND_KEY = "train/round"  # the round's index, logged at the global step where the round begins
SPEED_KEY = "train/epoch_clips_per_s"  # training clips per second over each epoch, all ranks together
ROUND_PREFIX = "cluster/"
ROUND_KEYS = ("nmi_", "stability_")  # cross-modal agreement, stability across rounds, NMI against labels
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777")
DASHES = ("", "6 3", "2 2")  # once the colours run out, lines repeat them dashed, then dotted
TEXT, MUTED, GRID, AXIS = "#1f2937", "#6b7280", "#eef0f3", "#9ca3af"
STORED_POINTS = 500  # per series of a finished job's stored curves, for its own page
PREVIEW_POINTS = 100  # per series of the preview stored beside them, for a page that overlays many runs
FETCHERS = 8  # MLflow runs read side by side
LEFT, RIGHT, TOP, BOTTOM = 56, 14, 26, 42  # the plot's margins inside the chart, legend apart
LEGEND_ROW, LABEL_MAX = 15, 44
LEGEND_MAX = len(COLOURS) * len(DASHES)  # past as many series as there are line styles, a legend tells none apart
DRAWN_POINTS, HOVER_POINTS = 15_000, 1_000  # points drawn and hover targets in one chart, shared by its series

Points = list[tuple[float, float]]
Curves = dict[str, Points]


@dataclass(frozen=True)
class Series:
    """One line of a chart: its legend label, its points, and for a group of seeds the (x, low, high) band it spans;
    `note` adds words to its hover text (the jobs behind it)."""

    name: str
    points: Points
    band: tuple[tuple[float, float, float], ...] = ()
    note: str = ""


# -- reading curves --------------------------------------------------------------------------------------------


def _client():
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def _charted(key: str) -> bool:
    if key in (LOSS_KEY, ROUND_KEY, SPEED_KEY):
        return True
    return key.startswith(ROUND_PREFIX) and key[len(ROUND_PREFIX):].startswith(ROUND_KEYS)


def run_curves(run_id: str) -> tuple[Curves, str]:
    """{metric key: [(step, value)]} for the loss, the round starts and the per-round cluster metrics of a run, and
    an error text."""
    if not run_id:
        return {}, ""
    try:
        client = _client()
        keys = [k for k in client.get_run(run_id).data.metrics if _charted(k)]
        return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}, ""
    except Exception as exc:  # an unreachable tracking server must not break the page
        log.info("MLflow curves of run %s unavailable: %s", run_id, exc)
        return {}, f"MLflow is not reachable at {settings.MLFLOW_TRACKING_URI} ({type(exc).__name__})"


def job_curves(job: Job) -> tuple[Curves, str]:
    """A job's curves and an error text: stored ones once it has finished, else its run's from MLflow."""
    found, error = curves_of([job])
    return found.get(job.pk, {}), error


def curves_of(jobs: list[Job], *, preview: bool = False) -> tuple[dict[int, Curves], str]:
    """Each job's curves ({job id: curves}) and the first error met. Finished jobs' come from the database (read from
    MLflow and stored the first time), as their preview if asked (PREVIEW_POINTS a series, enough to overlay many
    runs and still exact in its first, last, lowest and highest values); the others' from MLflow, several at once."""
    found = stored_curves(jobs, preview=preview)
    missing = [job for job in jobs if job.pk not in found and job.mlflow_run_id]
    errors = []
    for job, (curves, error) in zip(missing, _fetch([job.mlflow_run_id for job in missing])):
        errors.append(error)
        if not error:
            found[job.pk] = tidy_curves(curves)
            if job.status in Job.DONE:
                _store(job, found[job.pk])
    return found, next((e for e in errors if e), "")


def stored_curves(jobs: list[Job], *, preview: bool = False) -> dict[int, Curves]:
    """The stored curves (or their preview) of those jobs that finished and were read since ({job id: curves}), in
    one query that reads only the part asked for."""
    done = {job.pk: job for job in jobs if job.status in Job.DONE and job.mlflow_run_id}
    if not done:
        return {}
    rows = JobCurves.objects.filter(job_id__in=list(done)).values_list(
        "job_id", "finished_at", "curves__preview" if preview else "curves__series")
    return {job_id: curves for job_id, finished_at, curves in rows
            if curves is not None and finished_at == done[job_id].finished_at}


def stored_form(curves: Curves) -> dict[str, Curves]:
    """What JobCurves.curves holds: the tidy curves ("series") and their preview ("preview")."""
    return {"series": curves, "preview": {key: downsample(points, PREVIEW_POINTS) for key, points in curves.items()}}


def _store(job: Job, curves: Curves) -> None:
    # A cache of what MLflow holds, written on first read like any cache; the job's own state is not touched.
    JobCurves.objects.update_or_create(job_id=job.pk, defaults={"curves": stored_form(curves),
                                                                "finished_at": job.finished_at})


def _fetch(run_ids: list[str]) -> list[tuple[Curves, str]]:
    """run_curves of each run, FETCHERS at a time; once one fails the rest are not asked (each would wait as long)."""
    failed: list[str] = []

    def one(run_id: str) -> tuple[Curves, str]:
        if failed:
            return {}, failed[0]
        curves, error = run_curves(run_id)
        if error:
            failed.append(error)
        return curves, error

    if len(run_ids) <= 1:
        return [one(run_id) for run_id in run_ids]
    with ThreadPoolExecutor(max_workers=FETCHERS) as pool:
        return list(pool.map(one, run_ids))


def tidy_curves(curves: Curves) -> Curves:
    """Finite points only (a diverged run's nan/inf are not drawn, and JSON holds none), at most STORED_POINTS each,
    values to 7 significant digits (a float's 17 would double what a page of many runs reads and decodes)."""
    kept = {key: [(x, float(f"{y:.7g}")) for x, y in points if math.isfinite(x) and math.isfinite(y)]
            for key, points in curves.items()}
    return {key: downsample(points) for key, points in kept.items()}


def downsample(points: Points, limit: int = STORED_POINTS) -> Points:
    """At most `limit` (>= 4) points spread evenly over the series, keeping its first, last, lowest and highest (by
    their second item: y, or a band's low)."""
    if len(points) <= limit:
        return list(points)
    last, spread = len(points) - 1, limit - 2
    values = [point[1] for point in points]
    keep = {i * last // (spread - 1) for i in range(spread)} | {values.index(min(values)), values.index(max(values))}
    return [points[i] for i in sorted(keep)]


def split_curves(curves: Curves) -> tuple[Curves, Curves]:
    """(the loss, the per-round cluster metrics keyed without their 'cluster/' prefix)."""
    loss = {k: v for k, v in curves.items() if k == LOSS_KEY}
    rounds = {k.removeprefix(ROUND_PREFIX): v for k, v in curves.items() if k.startswith(ROUND_PREFIX)}
    return loss, rounds


def round_starts(curves: Curves) -> list[tuple[float, int]]:
    """(global step, round index) where each round began, from the `train/round` metric."""
    return [(step, int(value)) for step, value in curves.get(ROUND_KEY, ())
            if math.isfinite(step) and math.isfinite(value)]


def job_charts(job: Job) -> dict[str, str]:
    """The job page's charts (loss with its round starts, cluster metrics per round) and MLflow's error text."""
    curves, error = job_curves(job)
    loss, rounds = split_curves(curves)
    return {"loss_chart": svg_chart(loss, title="training loss", x_label="step", rounds=round_starts(curves)),
            "round_chart": svg_chart(rounds, title="cluster metrics per round", x_label="round"),
            "mlflow_error": error, "clips_per_s": last_value(curves, SPEED_KEY)}


def last_value(curves: Curves, key: str) -> float | None:
    points = curves.get(key) or []
    return points[-1][1] if points else None


# -- drawing ---------------------------------------------------------------------------------------------------


def svg_chart(series: dict[str, Points] | list[Series], *, title: str, x_label: str,
              rounds: list[tuple[float, int]] = (), width: int = 520, height: int = 230) -> SafeString:
    """Every series on shared axes with nice ticks and a light grid, a dashed line at each round start, and a
    legend below; empty string when there is nothing to draw. It scales to its container (viewBox, width 100%)."""
    lines = _drawable(series)
    if not lines:
        return mark_safe("")
    frame = _Frame.around(lines, width=width, height=height)
    legend, legend_height = _legend(lines, width=width, top=height)
    total = height + legend_height
    parts = [f'<svg class="chart" data-testid="chart" viewBox="0 0 {width} {total}" width="100%" '
             f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(title)}">',
             f'<text x="{LEFT}" y="16" class="chart-title" font-size="12" font-weight="600" fill="{TEXT}">'
             f'{escape(title)}</text>', *_axes(frame, x_label), *_round_lines(frame, rounds)]
    hover = max(4, min(60, HOVER_POINTS // len(lines)))
    for index, line in enumerate(lines):
        parts += _line(frame, line, index, hover=hover)
    parts += legend
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _drawable(series: dict[str, Points] | list[Series]) -> list[Series]:
    """The series thinned to what a chart shows (DRAWN_POINTS shared out, a series' extremes kept), their non-finite
    points dropped (a diverged run's nan/inf), empty ones left out."""
    if isinstance(series, dict):
        series = [Series(name, points) for name, points in series.items()]
    series = [line for line in series if line.points]
    drawn = max(PREVIEW_POINTS // 2, min(STORED_POINTS, DRAWN_POINTS // max(1, len(series))))
    lines = []
    for line in series:
        points = [(x, y) for x, y in downsample(line.points, drawn) if math.isfinite(x) and math.isfinite(y)]
        band = tuple(b for b in downsample(line.band, drawn) if all(math.isfinite(v) for v in b))
        if points:
            lines.append(Series(line.name, points, band, line.note))
    return lines


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart and its axes' ticks, which also bound the axes."""

    width: int
    height: int
    x_ticks: list[float]
    y_ticks: list[float]

    @classmethod
    def around(cls, lines: list[Series], *, width: int, height: int) -> _Frame:
        xs = [x for line in lines for x, _ in line.points] + [b[0] for line in lines for b in line.band]
        ys = [y for line in lines for _, y in line.points] + [v for line in lines for b in line.band for v in b[1:]]
        return cls(width, height, nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys)))

    @property
    def bottom(self) -> float:
        return self.height - BOTTOM

    def sx(self, x: float) -> float:
        low, high = self.x_ticks[0], self.x_ticks[-1]
        return LEFT + (x - low) / (high - low) * (self.width - LEFT - RIGHT)

    def sy(self, y: float) -> float:
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return self.bottom - (y - low) / (high - low) * (self.bottom - TOP)

    def coords(self, points: Points) -> list[str]:
        """'x,y' in the chart's units for each point (the hot loop of a chart of many runs)."""
        x0, y0, bottom = self.x_ticks[0], self.y_ticks[0], self.bottom
        kx = (self.width - LEFT - RIGHT) / (self.x_ticks[-1] - x0)
        ky = (bottom - TOP) / (self.y_ticks[-1] - y0)
        return [f"{LEFT + (x - x0) * kx:.1f},{bottom - (y - y0) * ky:.1f}" for x, y in points]


def nice_ticks(low: float, high: float, *, target: int = 5) -> list[float]:
    """4 to 6 round values from at or below `low` to at or above `high`, in steps of 1, 2 or 5 times a power of ten
    (2.5 where none of those gives 4 to 6)."""
    if not high > low:
        low, high = _around(low)
    if not math.isfinite(high - low):  # ends near the largest float
        return [low, high]
    exponent = math.floor(math.log10((high - low) / (target - 1)))
    choices = []
    for step in (m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5, 2.5)):
        first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
        count = last - first + 1
        if 2 <= count <= 12 and math.isfinite(first * step) and math.isfinite(last * step):
            choices.append((not 4 <= count <= 6, step / 10.0 ** math.floor(math.log10(step)) == 2.5,
                            abs(count - target), first, count, step))
    if not choices:  # a span a float cannot split into round steps
        return [low, high]
    *_, first, count, step = min(choices)
    return [(first + i) * step for i in range(count)]


def _around(value: float) -> tuple[float, float]:
    """A span for a flat series: its value ± half its size (at least ±0.5), within the floats even at their largest
    (where value + 1 == value)."""
    pad = max(1.0, abs(value)) / 2
    if abs(value) < 1e300:
        return value - pad, value + pad
    return (0.0, value) if value > 0 else (value, 0.0)


def _tick_text(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        return "0"
    if abs(value) >= 1e6 or step < 1e-4:
        return f"{value:.3g}"
    if step >= 1000:
        return f"{value / 1000:g}k"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(round(step, decimals) - step) > step * 1e-6:  # a step of 2.5 times a power of ten
        decimals += 1
    return f"{value:.{decimals}f}"


def _axes(frame: _Frame, x_label: str) -> list[str]:
    parts = []
    x_step, y_step = _step(frame.x_ticks), _step(frame.y_ticks)
    for x in frame.x_ticks:
        px = frame.sx(x)
        parts.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{frame.bottom}" class="grid" '
                     f'stroke="{GRID}"/><text x="{px:.1f}" y="{frame.bottom + 13}" text-anchor="middle" '
                     f'class="tick" data-axis="x" font-size="10" fill="{MUTED}">{_tick_text(x, x_step)}</text>')
    for y in frame.y_ticks:
        py = frame.sy(y)
        parts.append(f'<line x1="{LEFT}" y1="{py:.1f}" x2="{frame.width - RIGHT}" y2="{py:.1f}" class="grid" '
                     f'stroke="{GRID}"/><text x="{LEFT - 5}" y="{py + 3.5:.1f}" text-anchor="end" class="tick" '
                     f'data-axis="y" font-size="10" fill="{MUTED}">{_tick_text(y, y_step)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{frame.bottom}" x2="{frame.width - RIGHT}" y2="{frame.bottom}" '
                 f'class="axis" stroke="{AXIS}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{frame.bottom}" '
                 f'class="axis" stroke="{AXIS}"/><text x="{(LEFT + frame.width - RIGHT) / 2:.1f}" '
                 f'y="{frame.height - 8}" text-anchor="middle" class="tick" font-size="10" fill="{MUTED}">'
                 f'{escape(x_label)}</text>')
    return parts


def _step(ticks: list[float]) -> float:
    return ticks[1] - ticks[0] if len(ticks) > 1 else 1.0


def _round_lines(frame: _Frame, rounds: list[tuple[float, int]]) -> list[str]:
    parts = []
    for step, index in rounds:
        if not frame.x_ticks[0] <= step <= frame.x_ticks[-1]:
            continue
        px = frame.sx(step)
        parts.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{frame.bottom}" class="round" '
                     f'data-round="{index}" stroke="{AXIS}" stroke-dasharray="4 3"><title>round {index} starts at '
                     f'step {step:g}</title></line><text x="{px + 2:.1f}" y="{TOP + 8}" class="round-label" '
                     f'font-size="9" fill="{MUTED}">r{index}</text>')
    return parts


def _style(index: int) -> tuple[str, str]:
    """A series' colour and its dash attribute (empty for a solid line)."""
    dash = DASHES[index // len(COLOURS) % len(DASHES)]
    return COLOURS[index % len(COLOURS)], f' stroke-dasharray="{dash}"' if dash else ""


def _line(frame: _Frame, line: Series, index: int, *, hover: int) -> list[str]:
    colour, dash = _style(index)
    name, note = escape(line.name), escape(f" · {line.note}" if line.note else "")
    parts = []
    if line.band:
        edge = frame.coords([(x, high) for x, _, high in line.band])
        edge += frame.coords([(x, low) for x, low, _ in reversed(line.band)])
        parts.append(f'<polygon class="band" data-band="{name}" fill="{colour}" fill-opacity="0.15" stroke="none" '
                     f'points="{" ".join(edge)}"/>')
    coords = " ".join(frame.coords(line.points))
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{dash} points="{coords}" '
                 f'data-series="{name}"><title>{name}{note}</title></polyline>')
    shown = "1" if len(line.points) == 1 else "0"  # a lone point is drawn; the others show on hover
    points = downsample(line.points, hover)
    for (x, y), at in zip(points, frame.coords(points)):
        cx, cy = at.split(",")
        parts.append(f'<circle class="pt" cx="{cx}" cy="{cy}" r="3.5" fill="{colour}" opacity="{shown}"><title>'
                     f'{name}{note} · {x:g}: {y:.4g}</title></circle>')
    return parts


def _legend(lines: list[Series], *, width: int, top: int) -> tuple[list[str], int]:
    """The legend below the plot in as many aligned columns as fit, and the height it takes: per series a swatch in
    its colour and its label in dark text (the full label and the jobs behind it on hover)."""
    shown = lines[:LEGEND_MAX]
    labels = [line.name if len(line.name) <= LABEL_MAX else line.name[:LABEL_MAX - 1] + "…" for line in shown]
    usable = width - LEFT - RIGHT
    column = min(usable, max(24 + 5.8 * len(label) + 14 for label in labels))
    per_row = max(1, int(usable // column))
    parts = []
    for index, (line, label) in enumerate(zip(shown, labels)):
        colour, dash = _style(index)
        x, y = LEFT + index % per_row * column, top + 4 + index // per_row * LEGEND_ROW
        note = escape(f" · {line.note}" if line.note else "")
        parts.append(f'<g class="legend-item" data-legend="{escape(line.name)}"><title>{escape(line.name)}{note}'
                     f'</title><line x1="{x:.1f}" y1="{y + 7:.1f}" x2="{x + 18:.1f}" y2="{y + 7:.1f}" '
                     f'class="swatch" stroke="{colour}" stroke-width="3"{dash}/><text x="{x + 23:.1f}" '
                     f'y="{y + 10.5:.1f}" class="legend" font-size="10" fill="{TEXT}">{escape(label)}</text></g>')
    rows = math.ceil(len(shown) / per_row)
    if len(lines) > LEGEND_MAX:
        parts.append(f'<text x="{LEFT}" y="{top + 4 + rows * LEGEND_ROW + 10.5:.1f}" class="legend" font-size="10" '
                     f'fill="{MUTED}">and {len(lines) - LEGEND_MAX} more: hover a line for its name</text>')
        rows += 1
    return parts, 4 + rows * LEGEND_ROW + 6


# -- seed groups -----------------------------------------------------------------------------------------------


def seed_band(curves: list[Points], *, limit: int = STORED_POINTS) -> tuple[Points, tuple[tuple[float, float, float],
                                                                                            ...]]:
    """The mean of several runs' curves and their min–max band, on the union of their steps (each run interpolated
    linearly, and counted only within the steps it covers)."""
    curves = [c for c in curves if c]
    grid = downsample([(x, 0.0) for x in sorted({x for c in curves for x, _ in c})], limit)
    mean, band = [], []
    for x, _ in grid:
        values = [_at(c, x) for c in curves if c[0][0] <= x <= c[-1][0]]
        if values:
            mean.append((x, sum(values) / len(values)))
            band.append((x, min(values), max(values)))
    return mean, tuple(band)


def _at(curve: Points, x: float) -> float:
    """The curve's value at x (within its steps), interpolated linearly."""
    i = bisect.bisect_left(curve, x, key=lambda point: point[0])
    if curve[i][0] == x or i == 0:
        return curve[i][1]
    (x0, y0), (x1, y1) = curve[i - 1], curve[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def mlflow_compare_url(jobs) -> str:
    """MLflow's own comparison page for the jobs' runs (MLflow 3: #/compare-runs?runs=[…]&experiments=[…])."""
    runs = [j.mlflow_run_id for j in jobs if j.mlflow_run_id]
    experiments = sorted({j.mlflow_experiment_id for j in jobs if j.mlflow_run_id and j.mlflow_experiment_id})
    if not runs or not experiments or not settings.MLFLOW_UI_URL:
        return ""
    as_json = (lambda items: quote("[" + ",".join(f'"{i}"' for i in items) + "]", safe=""))
    return f"{settings.MLFLOW_UI_URL}/#/compare-runs?runs={as_json(runs)}&experiments={as_json(experiments)}"

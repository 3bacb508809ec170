"""Curves of a job's MLflow run (loss per step, cluster NMI per round) and their rendering as inline SVG.

MLflow may be down or slow; a page then shows its text without the plots rather than hanging, so the client is
told to give up after one short try.
"""

from __future__ import annotations

import logging
import math
import os
from html import escape
from urllib.parse import quote

from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"
ROUND_PREFIX = "cluster/"
ROUND_KEYS = ("nmi_", "stability_")  # cross-modal agreement, stability across rounds, NMI against labels
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777")


def _client():
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


def run_curves(run_id: str) -> tuple[dict[str, list[tuple[float, float]]], str]:
    """{metric key: [(step, value)]} for the loss and the per-round cluster metrics of a run, and an error text."""
    if not run_id:
        return {}, ""
    try:
        client = _client()
        keys = [k for k in client.get_run(run_id).data.metrics
                if k == LOSS_KEY or (k.startswith(ROUND_PREFIX) and k[len(ROUND_PREFIX):].startswith(ROUND_KEYS))]
        return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}, ""
    except Exception as exc:  # an unreachable tracking server must not break the page
        log.info("MLflow curves of run %s unavailable: %s", run_id, exc)
        return {}, f"MLflow is not reachable at {settings.MLFLOW_TRACKING_URI} ({type(exc).__name__})"


def split_curves(curves: dict[str, list[tuple[float, float]]]) -> tuple[dict, dict]:
    loss = {k: v for k, v in curves.items() if k == LOSS_KEY}
    rounds = {k.removeprefix(ROUND_PREFIX): v for k, v in curves.items() if k.startswith(ROUND_PREFIX)}
    return loss, rounds


def svg_chart(series: dict[str, list[tuple[float, float]]], *, title: str, x_label: str, width: int = 520,
              height: int = 220) -> SafeString:
    """Polylines of every series on shared axes, with a legend; empty string when there is nothing to draw."""
    series = {name: [(x, y) for x, y in values if math.isfinite(x) and math.isfinite(y)]
              for name, values in series.items()}  # a diverged run's nan/inf points are not drawn
    series = {name: values for name, values in series.items() if values}
    points = [p for values in series.values() for p in values]
    if not points:
        return mark_safe("")
    left, right, top, bottom = 48, 12, 24, 36
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = _upper(x0, x1), _upper(y0, y1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg class="chart" data-testid="chart" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" class="axis"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="tick">{y1:.3g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="tick">{y0:.3g}</text>',
             f'<text x="{left}" y="{height - bottom + 14}" class="tick">{x0:g}</text>',
             f'<text x="{width - right}" y="{height - bottom + 14}" text-anchor="end" class="tick">{x1:g}</text>',
             f'<text x="{(left + width) / 2}" y="{height - 4}" text-anchor="middle" class="tick">'
             f'{escape(x_label)}</text>']
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}" '
                     f'data-series="{escape(name)}"/>')
        if len(values) == 1:
            parts.append(f'<circle cx="{sx(values[0][0]):.1f}" cy="{sy(values[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{width - right}" y="{top + 12 * index + 4}" text-anchor="end" fill="{colour}" '
                     f'class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _upper(low: float, high: float) -> float:
    """The axis' upper end: `high`, or for a flat series one that makes a span even at 1e20 (where low + 1 == low)."""
    return high if high > low else low + max(1.0, abs(low))


def mlflow_compare_url(jobs) -> str:
    """MLflow's own comparison page for the jobs' runs (MLflow 3: #/compare-runs?runs=[…]&experiments=[…])."""
    runs = [j.mlflow_run_id for j in jobs if j.mlflow_run_id]
    experiments = sorted({j.mlflow_experiment_id for j in jobs if j.mlflow_run_id and j.mlflow_experiment_id})
    if not runs or not experiments or not settings.MLFLOW_UI_URL:
        return ""
    as_json = (lambda items: quote("[" + ",".join(f'"{i}"' for i in items) + "]", safe=""))
    return f"{settings.MLFLOW_UI_URL}/#/compare-runs?runs={as_json(runs)}&experiments={as_json(experiments)}"

"""An evaluation's per-class accuracy and confusion matrix as inline SVG, drawn from its stored record.

SVG presentation attributes carry the colours and sizes: the site's Content-Security-Policy allows no inline
style attributes, and the page needs no script to draw them.
"""

from __future__ import annotations

from html import escape
from typing import Any

from django.utils.safestring import SafeString, mark_safe

MAX_CONFUSION_CLASSES = 60  # beyond this a matrix is unreadable; the page lists the largest confusions instead


def per_class_svg(per_class: dict[str, float], *, width: int = 520) -> SafeString:
    """One bar per class, worst first, with its accuracy."""
    if not per_class:
        return mark_safe("")
    rows = sorted(per_class.items(), key=lambda item: (item[1], item[0]))
    label_w, height, line = 170, 16 * len(rows) + 24, 16
    bar_w = width - label_w - 60
    parts = [f'<svg class="figure" data-testid="per-class" viewBox="0 0 {width} {height}" width="{width}" '
             f'role="img" aria-label="per-class accuracy">',
             '<text x="0" y="12" class="chart-title">per-class accuracy (worst first)</text>']
    for index, (name, value) in enumerate(rows):
        y = 22 + index * line
        parts.append(f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end" class="tick" fill="#1f2937">'
                     f'{escape(name[:28])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{bar_w}" height="{line - 5}" fill="#e5e7eb"/>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{bar_w * max(0.0, min(value, 1.0)):.1f}" '
                     f'height="{line - 5}" fill="#2563eb"><title>{escape(name)}: {value:.3f}</title></rect>')
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 11}" class="tick" fill="#1f2937">{value:.2f}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def confusion_svg(matrix: list[list[int]], classes: list[str], *, cell: int = 18) -> SafeString:
    """Rows are true classes, columns predicted ones; a cell's shade is its share of the row."""
    n = len(matrix)
    if not n or n > MAX_CONFUSION_CLASSES or any(len(row) != n for row in matrix):
        return mark_safe("")
    names = [escape(str(c)[:20]) for c in (classes if len(classes) == n else range(n))]
    left, top = 130, 24
    size = left + cell * n + 4
    parts = [f'<svg class="figure" data-testid="confusion" viewBox="0 0 {size} {top + cell * n + 110}" '
             f'width="{size}" role="img" aria-label="confusion matrix">',
             '<text x="0" y="12" class="chart-title">confusion (rows: true, columns: predicted)</text>']
    for r, row in enumerate(matrix):
        total = sum(row) or 1
        parts.append(f'<text x="{left - 4}" y="{top + r * cell + cell * 0.7:.1f}" text-anchor="end" class="tick" '
                     f'fill="#1f2937">{names[r]}</text>')
        for c, count in enumerate(row):
            share = count / total
            colour = "#16a34a" if r == c else "#dc2626"
            parts.append(f'<rect x="{left + c * cell}" y="{top + r * cell}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{colour if count else "#f3f4f6"}" fill-opacity="{0.15 + 0.85 * share:.2f}">'
                         f'<title>true {names[r]}, predicted {names[c]}: {count}</title></rect>')
    for c in range(n):
        x, y = left + c * cell + cell * 0.7, top + n * cell + 4
        parts.append(f'<text x="{x:.1f}" y="{y}" transform="rotate(-60 {x:.1f} {y})" text-anchor="end" '
                     f'class="tick" fill="#1f2937">{names[c]}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def top_confusions(matrix: list[list[int]], classes: list[str], limit: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted) mistakes."""
    pairs = [(count, r, c) for r, row in enumerate(matrix) for c, count in enumerate(row) if r != c and count]
    name = (lambda i: str(classes[i]) if i < len(classes) else str(i))
    return [(name(r), name(c), count) for count, r, c in sorted(pairs, reverse=True)[:limit]]


def result_figures(record: dict[str, Any]) -> dict[str, Any]:
    per_class = record.get("per_class") or {}
    matrix = record.get("confusion") or []
    classes = (record.get("dataset") or {}).get("classes") or []
    valid = isinstance(per_class, dict) and isinstance(matrix, list) and all(isinstance(r, list) for r in matrix)
    if not valid:
        return {}
    return {"per_class_svg": per_class_svg({str(k): float(v) for k, v in per_class.items()}),
            "confusion_svg": confusion_svg(matrix, [str(c) for c in classes]),
            "top_confusions": top_confusions(matrix, classes)}

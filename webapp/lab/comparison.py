"""The compare page's reads: up to MAX_RUNS pretraining runs of the user's teams side by side. The config keys that
differ; the curves overlaid, runs that differ only in their seed drawn as one mean line in their min–max band; the
last and best value of each curve; what the runs' evaluations measured.

Finished runs' curves come from the database (`charts.curves_of`, their preview), so a large selection asks MLflow
only about the runs still going.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from html import escape

from django.utils.safestring import SafeString, mark_safe

from webapp.lab import charts, selectors
from webapp.lab.leaderboard import ROW_IGNORED_KEYS  # a seed group is a leaderboard row
from webapp.lab.models import Job, Result
from xdc.config import flatten

MAX_RUNS = 200
UNUSED_FIELDS = ("log_tail", "events", "error", "evaluations", "resources")  # long texts a comparison never shows
CANDIDATES = 100  # latest pretraining runs offered in the picker
HIDDEN_DIFF_KEYS = ("run_name",)
K_KEYS = ("cluster.k_video", "cluster.k_audio", "cluster.k_joint")
LABEL_PARTS = 4  # differing keys named in a label; the rest are in the parameter table


class Refused(Exception):
    """A selection the page does not compare; the message says why, to show as it is."""


@dataclass(frozen=True)
class CurveSummary:
    last: float
    best: float  # the lowest loss, the highest agreement so far

    @property
    def text(self) -> str:
        return f"{self.last:.4g} ({self.best:.4g})"


@dataclass(frozen=True)
class Downstream:
    """What one of a run's evaluations measured."""

    job_id: int
    benchmark: str
    protocol: str
    metric_name: str
    metric_value: float | None

    @property
    def text(self) -> str:
        value = "—" if self.metric_value is None else f"{self.metric_value:.4f}"
        return f"{self.benchmark} · {self.protocol} {self.metric_name} {value}"


@dataclass
class Run:
    job: Job
    label: str
    group: str  # its seed group's label; "" when no other selected run shares its config
    curves: dict[str, CurveSummary] = field(default_factory=dict)
    results: list[Downstream] = field(default_factory=list)
    cells: list[CurveSummary | None] = field(default_factory=list)  # its curves in the order of the table's columns
    diff: list = field(default_factory=list)  # its values of the keys that differ between the runs

    @cached_property
    def url(self) -> str:
        return self.job.get_absolute_url()

    @property
    def results_html(self) -> SafeString:
        """Its evaluations' results a line each, the job in the hover text (one string: a page of 200 runs lists
        some 2,000, too many for a template loop to render quickly)."""
        return mark_safe("<br>".join(f'<span title="job #{result.job_id:d}">{escape(result.text)}</span>'
                                     for result in self.results))


@dataclass
class Comparison:
    jobs: list[Job]
    diff: list[tuple[str, list]]
    runs: list[Run]
    columns: list[str]  # curve keys of the runs' table
    loss_chart: str
    round_chart: str
    mlflow_error: str
    mlflow_compare_url: str

    @property
    def headers(self) -> list[str]:
        """The curve columns' names without their section ('loss', 'nmi_video_audio')."""
        return [key.rsplit("/", 1)[-1] for key in self.columns]



def candidates(user) -> list[Job]:
    return list(selectors.visible_jobs(user).filter(kind=Job.Kind.PRETRAIN).select_related(None)
                .select_related("dataset").defer(*UNUSED_FIELDS)[:CANDIDATES])


def compare_runs(user, ids: list[int]) -> Comparison:
    """The comparison of the user's pretraining runs among `ids` (another team's id is not found, silently);
    Refused for more than MAX_RUNS ids or for jobs that are not pretraining runs."""
    jobs = selected_runs(user, ids)
    # Past this many runs the chart thins each series below what is stored: the stored preview is enough.
    curves, error = charts.curves_of(jobs, preview=len(jobs) > charts.DRAWN_POINTS // charts.STORED_POINTS)
    flats = {job.pk: flatten(job.config) for job in jobs}
    labels = run_labels(jobs, flats)
    groups = seed_groups(jobs, flats)
    group_of = {job.pk: group_label(members, labels) for members in groups if len(members) > 1 for job in members}
    results = _results(jobs)
    runs = [Run(job, labels[job.pk], group_of.get(job.pk, ""), _summaries(curves.get(job.pk, {})),
                results.get(job.pk, [])) for job in jobs]
    columns, diff = _columns(runs), param_diff(jobs, flats)
    for index, run in enumerate(runs):
        run.cells = [run.curves.get(key) for key in columns]
        run.diff = [values[index] for _, values in diff]
    return Comparison(
        jobs=jobs, diff=diff, runs=runs, columns=columns,
        loss_chart=charts.svg_chart(_loss_series(groups, curves, labels), title="training loss", x_label="step",
                                    rounds=_shared_rounds(curves)),
        round_chart=charts.svg_chart(_round_series(groups, curves, labels), title="cross-modal NMI per round",
                                     x_label="round"),
        mlflow_error=error, mlflow_compare_url=charts.mlflow_compare_url(jobs))


def selected_runs(user, ids: list[int]) -> list[Job]:
    if len(ids) > MAX_RUNS:
        raise Refused(f"compare takes at most {MAX_RUNS} runs at once; {len(ids)} were selected")
    jobs = list(selectors.visible_jobs(user).filter(pk__in=ids).select_related(None).select_related("dataset")
                .defer(*UNUSED_FIELDS).order_by("pk"))
    others = [job for job in jobs if job.kind != Job.Kind.PRETRAIN]
    if others:
        named = ", ".join(f"#{job.pk} ({job.kind})" for job in others)
        raise Refused(f"{named}: not {'a pretraining run' if len(others) == 1 else 'pretraining runs'}. Compare "
                      "takes pretraining runs only; an evaluation's page links the run it evaluated, and the "
                      "evaluations of the compared runs are listed with them.")
    return jobs


def param_diff(jobs: list[Job], flats: dict[int, dict]) -> list[tuple[str, list]]:
    """(dotted key, each run's value) for the config keys whose values differ between the runs."""
    keys = sorted({k for flat in flats.values() for k in flat} - set(HIDDEN_DIFF_KEYS))
    return [(k, [flats[job.pk].get(k, "—") for job in jobs]) for k in keys if _differs(k, flats)]


def _differs(key: str, flats: dict[int, dict]) -> bool:
    return len({repr(flat.get(key)) for flat in flats.values()}) > 1


def run_labels(jobs: list[Job], flats: dict[int, dict]) -> dict[int, str]:
    """{job id: 'xdc · K=32 · seed 0'}: the variant, the keys that set the runs apart, the seed."""
    differing = [k for k in sorted({k for flat in flats.values() for k in flat})
                 if k not in ROW_IGNORED_KEYS and k != "variant" and _differs(k, flats)]
    return {job.pk: " · ".join([*_parts(job, flats[job.pk], differing), f"seed {flats[job.pk].get('seed', 0)}"])
            for job in jobs}


def _parts(job: Job, flat: dict, differing: list[str]) -> list[str]:
    parts = [str(flat.get("variant", job.variant or "?"))]
    for key in differing:
        if key == "data.path":
            part = f"data={job.dataset.name if job.dataset else flat.get(key, '—')}"
        elif key in K_KEYS and len({repr(flat.get(k)) for k in K_KEYS}) == 1:
            part = f"K={flat.get(key)}"  # one K for all three spaces, as the grid's cluster.k sets it
        else:
            part = f"{key.rsplit('.', 1)[-1]}={flat.get(key, '—')}"
        if part not in parts:
            parts.append(part)
    return parts[:LABEL_PARTS + 1] + (["…"] if len(parts) > LABEL_PARTS + 1 else [])


def seed_groups(jobs: list[Job], flats: dict[int, dict]) -> list[list[Job]]:
    """The runs grouped by what they learn apart from the seed (runtime keys aside), in the order first seen."""
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        kept = {k: v for k, v in flats[job.pk].items() if k not in ROW_IGNORED_KEYS}
        groups[json.dumps(kept, sort_keys=True, default=str)].append(job)
    return list(groups.values())


def group_label(members: list[Job], labels: dict[int, str]) -> str:
    """'xdc · K=32 · seeds 0,1,2 · n=3' from its runs' labels."""
    base = labels[members[0].pk].rsplit(" · seed ", 1)[0]
    seeds = ",".join(labels[job.pk].rsplit(" · seed ", 1)[-1] for job in members)
    return f"{base} · seeds {seeds} · n={len(members)}"


def _jobs_note(members: list[Job]) -> str:
    return ("job " if len(members) == 1 else "jobs ") + ", ".join(f"#{job.pk}" for job in members)


def _series(members: list[Job], name: str, curves: list[charts.Points]) -> charts.Series | None:
    """One run's line, or a seed group's mean line in its band (of the members that have the curve)."""
    present = [c for c in curves if c]
    if not present:
        return None
    if len(members) == 1:
        return charts.Series(name, present[0], note=_jobs_note(members))
    mean, band = charts.seed_band(present)
    return charts.Series(name, mean, band, note=f"{_jobs_note(members)}; band: min–max over {len(present)} seeds")


def _name(members: list[Job], labels: dict[int, str]) -> str:
    return labels[members[0].pk] if len(members) == 1 else group_label(members, labels)


def _loss_series(groups: list[list[Job]], curves: dict[int, charts.Curves], labels: dict[int, str]) -> list:
    found = (_series(members, _name(members, labels), [curves.get(j.pk, {}).get(charts.LOSS_KEY) for j in members])
             for members in groups)
    return [s for s in found if s is not None]


def _round_series(groups: list[list[Job]], curves: dict[int, charts.Curves], labels: dict[int, str]) -> list:
    keys = sorted({k for c in curves.values() for k in c if _cross_modal(k)})
    found = (_series(members, _name(members, labels) + (f" · {key.removeprefix(charts.ROUND_PREFIX)}"
                                                          if len(keys) > 1 else ""),
                     [curves.get(j.pk, {}).get(key) for j in members])
             for members in groups for key in keys)
    return [s for s in found if s is not None]


def _cross_modal(key: str) -> bool:
    """A cluster NMI between two feature spaces (not against labels or a nuisance factor)."""
    name = key.removeprefix(charts.ROUND_PREFIX)
    return key.startswith(charts.ROUND_PREFIX) and name.startswith("nmi_") and not name.startswith(
        ("nmi_labels", "nmi_factor_"))


def _shared_rounds(curves: dict[int, charts.Curves]) -> list[tuple[float, int]]:
    """The round starts when every drawn run has the same ones (else they would crowd the chart)."""
    starts = {tuple(charts.round_starts(c)) for c in curves.values() if charts.LOSS_KEY in c}
    return list(starts.pop()) if len(starts) == 1 else []


def _summaries(curves: charts.Curves) -> dict[str, CurveSummary]:
    summaries = {}
    for key, points in curves.items():
        if key == charts.ROUND_KEY or not points:
            continue
        values = [y for _, y in points]
        summaries[key] = CurveSummary(last=values[-1], best=min(values) if key == charts.LOSS_KEY else max(values))
    return summaries


def _columns(runs: list[Run]) -> list[str]:
    keys = {k for run in runs for k in run.curves}
    return sorted(keys, key=lambda k: (k != charts.LOSS_KEY, not _cross_modal(k), k))


def _results(jobs: list[Job]) -> dict[int, list[Downstream]]:
    """{pretraining job id: what its evaluations measured}, in one query that reads no record."""
    found: dict[int, list[Downstream]] = defaultdict(list)
    rows = (Result.objects.filter(job__parent__in=[job.pk for job in jobs], team__in={job.team_id for job in jobs})
            .order_by("benchmark", "protocol", "job_id")
            .values_list("job__parent_id", "job_id", "benchmark", "protocol", "metric_name", "metric_value"))
    for parent_id, *fields in rows:
        found[parent_id].append(Downstream(*fields))
    return found

"""The lab's business logic. Views, the JSON API and the Celery workers call these functions; none of them writes
to the ORM elsewhere.

State changes of a job are conditional UPDATEs (`filter(id=…, status=…).update(…)` and a check that exactly one row
changed), so two workers never run one job, and a redelivered message or a double click changes nothing twice.
Messages to Celery are sent only after the transaction that made the job visible has committed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat, Right
from django.utils import timezone

from webapp.lab import leaderboard
from webapp.lab.models import Dataset, Job, Result, Team
from webapp.lab.selectors import parse_id
from xdc.config import PrepareConfig, PretrainConfig, check_text, flatten
from xdc.errors import ConfigError, DataError
from xdc.launch import Resources

log = logging.getLogger(__name__)

# Grid axes that set several config keys at once.
GRID_ALIASES = {"cluster.k": ("cluster.k_video", "cluster.k_audio", "cluster.k_joint")}
MAIN_METRIC = {"retrieval": "recall@1"}
DEFAULT_METRIC = "top1"


class LabError(Exception):
    """A request the lab refuses; `errors` maps a field name (or '__all__') to messages, as forms and the API show
    them."""

    def __init__(self, errors: dict[str, list[str]] | str):
        self.errors = {"__all__": [errors]} if isinstance(errors, str) else errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items()))


class InvalidTransition(LabError):
    """The job is not in a state where this action makes sense (cancel a finished job, retry a running one)."""


# -- configs ------------------------------------------------------------------------------------------------------


def eval_config_class():
    from xdc.evaluation import EvalConfig  # written alongside the lab; imported late so the lab loads without torch

    return EvalConfig


def config_class(kind: str) -> type:
    """xdc's typed config of a kind of job."""
    if kind == Job.Kind.PRETRAIN:
        return PretrainConfig
    if kind == Job.Kind.EVALUATE:
        return eval_config_class()
    if kind == Job.Kind.PREPARE:
        return PrepareConfig
    raise ConfigError(f"unknown job kind {kind!r}; known: {', '.join(Job.Kind.values)}")


def validate_config(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The normalised JSON form of a job's config; ConfigError when xdc refuses it."""
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    return config_class(kind).from_dict(raw).to_dict()


def set_dotted(tree: dict[str, Any], key: str, value: Any, *, _above: str = "") -> dict[str, Any]:
    """A copy of `tree` with the dotted `key` set to `value` (intermediate mappings created or copied); LabError
    when a section on the way holds something else (`{"data": "x"}` under 'data.path')."""
    head, _, rest = key.partition(".")
    copy = dict(tree)
    if not rest:
        copy[head] = value
        return copy
    below = copy.get(head)
    if below is not None and not isinstance(below, dict):
        name = f"{_above}{head}"
        raise LabError({f"config.{name}": [f"{name} must be a mapping of keys to values, got {below!r:.60}"]})
    copy[head] = set_dotted(below or {}, rest, value, _above=f"{_above}{head}.")
    return copy


def grid_keys(kind: str) -> set[str]:
    """The axes a grid of this kind of job may vary: its config's dotted keys and GRID_ALIASES."""
    from xdc.config import field_specs

    if kind == Job.Kind.PRETRAIN:
        return set(field_specs(PretrainConfig)) | set(GRID_ALIASES)
    return set(field_specs(config_class(kind)))


def expand_grid(base: dict[str, Any], axes: dict[str, Iterable[Any]], *, kind: str = Job.Kind.PRETRAIN,
                limit: int | None = None, base_count: int = 1) -> list[dict[str, Any]]:
    """One config per combination of the axes' values, in order (first axis slowest). An axis is a dotted config key
    or an alias in GRID_ALIASES ('cluster.k' sets k_video, k_audio and k_joint together). No axes: [base].

    LabError('grid') before anything is built when an axis is no key of the kind's config, or when base_count × the
    grid's size exceeds `limit` (LAB_MAX_GRID by default), so a request for millions of combinations costs
    nothing."""
    axes = {axis: list(values) for axis, values in axes.items()}
    known = grid_keys(kind)
    unknown = sorted(str(axis) for axis in axes if axis not in known)
    if unknown:
        raise LabError({"grid": [f"grid axis {unknown[0]!r:.80} is no config key of a {kind} job"]})
    limit = settings.LAB_MAX_GRID if limit is None else limit
    size = base_count * math.prod(len(values) or 1 for values in axes.values())
    if size > limit:
        raise LabError({"grid": [f"this grid makes {size} jobs; the limit is {limit} (LAB_MAX_GRID)"]})
    configs = [dict(base)]
    for axis, values in axes.items():
        if not values:
            continue
        keys = GRID_ALIASES.get(axis, (axis,))
        expanded = []
        for config in configs:
            for value in values:
                item = config
                for key in keys:
                    item = set_dotted(item, key, value)
                expanded.append(item)
        configs = expanded
    return configs


# -- submission --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a submission would create, checked: one job per config (config, dataset, parent), the evaluations each
    pretraining queues on success, and the shared priority, resources and name."""

    kind: str
    jobs: list[tuple[dict[str, Any], Dataset, Job | None]]
    evaluations: list[dict[str, Any]]
    priority: int
    resources: Resources
    name: str

    def describe(self) -> list[str]:
        """One line per job it queues (and the evaluations queued later), as a preview shows them."""
        lines = []
        for cfg, data, parent in self.jobs:
            job = Job(kind=self.kind, config=cfg, dataset=data, parent=parent)
            lines.append(f"{self.kind}: {job.summary} · {self.resources.describe()}")
        if self.evaluations:
            names = {d.pk: d.name for d in Dataset.objects.filter(pk__in={s["dataset"] for s in self.evaluations})}
            each = ", ".join(f"{s['protocol']}{'-' + s['preset'] if s['preset'] else ''} on "
                             f"{names.get(s['dataset'], s['dataset'])} split {s['split']}" for s in self.evaluations)
            lines.append(f"then, as each pretraining succeeds, {len(self.evaluations)} evaluation"
                         f"{'s' if len(self.evaluations) != 1 else ''}: {each}")
        return lines

    @property
    def total(self) -> int:
        return len(self.jobs) * (1 + len(self.evaluations))


def plan_jobs(user, team: Team, kind: str, configs: list[dict[str, Any]], *, dataset: Dataset | None = None,
              evaluations: list[dict[str, Any]] | None = None, parent: Job | None = None, priority: int = 5,
              resources: dict[str, Any] | None = None, name: str = "") -> Plan:
    """Check a submission without creating anything (the preview, and the first half of `submit_jobs`).

    Every part is checked before anything is refused, so one answer lists all that is wrong: the name and priority,
    the resources, each config (LabError maps 'config', or 'configs[i]' for grids, and 'config.<key>') and the
    evaluations. What a job reads must be its team's: a pretraining trains on a dataset of the team (`dataset`, or
    the one whose path its data.path names), an evaluation measures a benchmark dataset of the team with a
    baseline, a succeeded pretraining of the team (`parent`, or the job whose final.pt it names) or a file under one
    of the team's checkpoint roots."""
    if not configs:
        raise LabError({"config": ["no configuration to submit"]})
    if len(configs) > settings.LAB_MAX_GRID:
        raise LabError({"config": [f"{len(configs)} jobs is more than LAB_MAX_GRID={settings.LAB_MAX_GRID}"]})
    errors: dict[str, list[str]] = {}
    _collect(errors, lambda: _check_meta(priority=priority, name=name))
    spec = _collect(errors, lambda: check_resources(kind, resources or {}))
    parent = Job.objects.filter(pk=parent.pk).first() if parent is not None else None  # its status and run id now
    _check_links(team, kind, dataset=dataset, parent=parent)
    if parent is not None:  # an evaluation of a pretraining job runs on its checkpoint, whatever the config said
        configs = [{**raw, "checkpoint": parent.final_checkpoint, "pretrain_run_id": parent.mlflow_run_id}
                   if isinstance(raw, dict) else raw for raw in configs]
    many = len(configs) > 1
    planned = []
    for index, raw in enumerate(configs):
        where = f"configs[{index}]" if many else "config"
        planned.append(_collect(errors, lambda raw=raw, where=where: _plan_one(kind, raw, team, dataset, parent,
                                                                               where)))
    specs = _collect(errors, lambda: check_evaluations(evaluations or [], team)) if kind == Job.Kind.PRETRAIN else []
    if errors:
        raise LabError(errors)
    return Plan(kind, planned, specs, priority, spec, name)


def _collect(errors: dict[str, list[str]], check):
    """`check()`, or None with its LabError's messages added to `errors` (the first message of a key wins)."""
    try:
        return check()
    except LabError as exc:
        for key, messages in exc.errors.items():
            errors.setdefault(key, messages)
        return None


def _plan_one(kind: str, raw: Any, team: Team, dataset: Dataset | None, parent: Job | None,
              where: str) -> tuple[dict[str, Any], Dataset, Job | None]:
    if dataset is not None:
        raw = _follow_dataset(kind, raw, dataset, where)
    cfg = _checked_config(kind, raw, team, where)
    return (cfg, *_links(kind, cfg, team, dataset=dataset, parent=parent, where=where))


def submit_jobs(user, team: Team, kind: str, configs: list[dict[str, Any]], **options: Any) -> list[Job]:
    """Check the submission (`plan_jobs`: nothing is created if any part is refused), then create one queued job
    per config and enqueue them once committed. The team's MLflow experiment is written into each config, and each
    job gets its own output folder."""
    plan = plan_jobs(user, team, kind, configs, **options)
    with transaction.atomic():
        jobs = [_create_job(user, team, kind, cfg, dataset=data, evaluations=plan.evaluations, parent=source,
                            priority=plan.priority, resources=plan.resources.to_dict(), name=plan.name)
                for cfg, data, source in plan.jobs]
        if len(jobs) > 1 and not plan.name:  # a grid without a name is one sweep, named after its first job
            sweep = f"sweep-{jobs[0].pk}"
            Job.objects.filter(pk__in=[job.pk for job in jobs]).update(name=sweep)
            for job in jobs:
                job.name = sweep
    for job in jobs:
        transaction.on_commit(lambda job=job: enqueue(job))
    return jobs


def _check_meta(*, priority: int, name: str = "") -> None:
    errors: dict[str, list[str]] = {}
    longest = Job._meta.get_field("name").max_length
    if not isinstance(name, str):
        errors["name"] = [f"name must be text of at most {longest} characters"]
    else:
        try:
            _check_text("name", name, longest)
        except LabError as exc:
            errors |= exc.errors
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
        errors["priority"] = [f"priority must be an integer 0-9, got {priority!r}"]
    if errors:
        raise LabError(errors)


def check_resources(kind: str, raw: dict[str, Any]) -> Resources:
    """The job's typed resources (xdc.launch.Resources), or LabError on the key at fault: a bound the field declares,
    a combination it refuses, or what no worker of this lab can hold (more GPUs per node than
    LAB_GPUS_PER_HOST; an evaluation, which runs as one process, on several ranks)."""
    try:
        spec = Resources.from_dict(raw)
    except ConfigError as exc:
        raise LabError({exc.key or "resources": [str(exc)]}) from None
    if spec.launcher == "slurm":
        _check_slurm(spec)
    elif spec.resource == "gpu" and spec.gpus > settings.LAB_GPUS_PER_HOST:
        raise LabError({"gpus": [f"{spec.gpus} GPUs per node is more than a worker host holds here "
                                 f"(LAB_GPUS_PER_HOST={settings.LAB_GPUS_PER_HOST}); ask for more nodes"]})
    if kind in (Job.Kind.EVALUATE, Job.Kind.PREPARE) and spec.world_size > 1:
        key = "nodes" if spec.nodes > 1 else ("gpus" if spec.resource == "gpu" else "cpu_ranks")
        what = "an evaluation runs" if kind == Job.Kind.EVALUATE else "a prepare job runs"
        raise LabError({key: [f"{what} as one process; it asked for {spec.world_size} ranks"]})
    if kind == Job.Kind.PREPARE and spec.resource != "cpu":
        raise LabError({"resource": ["a prepare job decodes and encodes on CPU cores; ask for resource cpu"]})
    return spec


def _check_links(team: Team, kind: str, *, dataset: Dataset | None, parent: Job | None) -> None:
    """The dataset and parent a job points to must be its own team's; a parent is a finished pretraining, and only
    an evaluation has one (the leaderboard files an evaluation under its parent's row)."""
    if dataset is not None and dataset.team_id != team.pk:
        raise LabError({"dataset": [f"dataset {dataset.pk} is not in team {team.slug}"]})
    if dataset is not None and dataset.status != Dataset.Status.READY:
        state = "is still being listed" if dataset.status == Dataset.Status.LISTING else f"failed: {dataset.error}"
        raise LabError({"dataset": [f"dataset {dataset.name} {state}"[:500]]})
    if parent is None:
        return
    if parent.team_id != team.pk:
        raise LabError({"parent": [f"job {parent.pk} is not in team {team.slug}"]})
    if kind != Job.Kind.EVALUATE or parent.kind != Job.Kind.PRETRAIN or parent.status != Job.Status.SUCCEEDED:
        raise LabError({"parent": [f"the parent of an evaluation must be a succeeded pretraining job; job "
                                   f"{parent.pk} is a {parent.status} {parent.kind} job"]})


def _checked_config(kind: str, raw: dict[str, Any], team: Team, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        unchosen = (None, "", PretrainConfig().experiment, eval_config_class()().experiment,
                    PrepareConfig().experiment)  # the defaults
        if raw.get("experiment") not in (*unchosen, team.mlflow_experiment):
            message = f"experiment is the team's own, {team.mlflow_experiment}; got {raw['experiment']!r:.100}"
            raise _config_error(where, "experiment", message)
        raw = {**raw, "experiment": team.mlflow_experiment}
    try:
        return validate_config(kind, raw)
    except ConfigError as exc:
        raise _config_error(where, exc.key, str(exc)) from None


def _config_error(where: str, key: str | None, message: str) -> LabError:
    return LabError({where: [message], **({f"config.{key}": [message]} if key else {})})


def _follow_dataset(kind: str, raw: Any, dataset: Dataset, where: str) -> Any:
    """The config with its data taken from the chosen dataset. A config that names other data is refused, so a
    job never trains on a path while its row shows a dataset."""
    if not isinstance(raw, dict):
        return raw  # validation says what is wrong with it
    if kind == Job.Kind.PRETRAIN:
        wanted = {"data.path": dataset.path, "data.layout": dataset.layout}
    elif kind == Job.Kind.PREPARE:
        wanted = {"path": dataset.path, "layout": dataset.layout}
    else:
        wanted = {"data": dataset.path, "benchmark": dataset.benchmark}
    flat = flatten(raw)
    for key, value in wanted.items():
        given = flat.get(key)
        if given not in (None, "") and not _same_data(key, given, value):
            raise _config_error(where, key, f"{key} follows the chosen dataset {dataset.name} ({value}); "
                                            f"got {given!r:.100}")
        raw = set_dotted(raw, key, value)
    return raw


def _same_data(key: str, given: Any, value: str) -> bool:
    if key in ("data.path", "data", "path"):
        return isinstance(given, str) and _resolved(given) == value
    return given == value


def _resolved(path: str) -> str:
    """A path with `~`, `..` and symlinks resolved: what it really names, for comparing and checking roots."""
    return str(Path(path).expanduser().resolve())


def _links(kind: str, cfg: dict[str, Any], team: Team, *, dataset: Dataset | None, parent: Job | None,
           where: str) -> tuple[Dataset, Job | None]:
    """The team's dataset a checked config reads, and the pretraining job it evaluates (None for a baseline or a
    file under the team's checkpoint roots); LabError naming the key when the config reaches beyond its team."""
    if kind == Job.Kind.PREPARE:
        return _store_source(_registered(team, dataset, where, path=("path", cfg["path"]),
                                         layout=("layout", cfg["layout"])), where), None
    if kind == Job.Kind.PRETRAIN:
        return _registered(team, dataset, where, path=("data.path", cfg["data"]["path"]),
                           layout=("data.layout", cfg["data"]["layout"])), None
    source = parent or _checkpoint_source(team, cfg["checkpoint"], where)
    data = dataset or _team_dataset(team, cfg["data"])
    if data is None:
        raise _config_error(where, "data", f"data {cfg['data']!r:.200} is no dataset of team {team.slug}; "
                                           f"register it on the Datasets page first")
    if data.benchmark != cfg["benchmark"]:
        raise _config_error(where, "benchmark", f"dataset {data.name} is the {data.benchmark} benchmark's layout, "
                                                f"not {cfg['benchmark']}'s")
    if cfg["supervised_data"]:
        labelled = _team_dataset(team, cfg["supervised_data"])
        if labelled is None or not labelled.labeled:
            raise _config_error(where, "supervised_data", f"supervised_data must be a labelled dataset of team "
                                                          f"{team.slug}; got {cfg['supervised_data']!r:.200}")
    return data, source


def _registered(team: Team, dataset: Dataset | None, where: str, *, path: tuple[str, str],
                layout: tuple[str, str]) -> Dataset:
    """The team's dataset a config's (key, path) names (or the chosen one), registered with its (key, layout)."""
    data = dataset or _team_dataset(team, path[1])
    if data is None:
        raise _config_error(where, path[0], f"{path[0]} {path[1]!r:.200} is no dataset of team {team.slug}; "
                                            f"register it on the Datasets page first")
    if data.layout != layout[1]:
        raise _config_error(where, layout[0], f"dataset {data.name} is registered as {data.layout}, not {layout[1]}")
    return data


def _store_source(data: Dataset, where: str) -> Dataset:
    """The team's video dataset a prepare job reads: not a sound-only benchmark, not itself a store."""
    from xdc.data.layouts import STORE_MANIFEST
    from xdc.data.store import AUDIO_ONLY_LAYOUTS

    if data.layout in AUDIO_ONLY_LAYOUTS:
        raise _config_error(where, "path", f"dataset {data.name} holds sound files ({data.layout}), which are read "
                                           f"as fast as they are; a clip store holds videos")
    if data.prepared_from_id is not None or Path(data.path, STORE_MANIFEST).is_file():
        raise _config_error(where, "path", f"dataset {data.name} is itself a clip store; prepare its source")
    return data


def _team_dataset(team: Team, path: str) -> Dataset | None:
    return Dataset.objects.usable().filter(team=team, path=_resolved(path)).first() if path else None


def _checkpoint_source(team: Team, checkpoint: str, where: str) -> Job | None:
    """A checkpoint is a baseline, the final.pt of a succeeded pretraining of the team (that job, returned, becomes
    the evaluation's parent), or an xdc checkpoint file under one of the team's checkpoint roots (the admin's
    allowance for models trained elsewhere); never a free path."""
    if checkpoint in leaderboard.BASELINES:
        return None
    path = Path(_resolved(checkpoint))
    if path.name == "final.pt":
        source = Job.objects.filter(team=team, kind=Job.Kind.PRETRAIN, status=Job.Status.SUCCEEDED,
                                    out_dir__in=[str(path.parent), str(Path(checkpoint).parent)]).first()
        if source is not None:
            return source
    if any(path.is_relative_to(root) for root in team.checkpoint_root_paths()):
        if not path.is_file() or not zipfile.is_zipfile(path):
            raise _config_error(where, "checkpoint", f"checkpoint {checkpoint!r:.200} is not an xdc checkpoint "
                                                     f"file (the final.pt that `xdc pretrain` writes)")
        return None
    raise _config_error(where, "checkpoint", f"checkpoint {checkpoint!r:.200} is neither a baseline (random, "
                                             f"supervised) nor a succeeded pretraining of team {team.slug}, nor "
                                             f"under one of the team's checkpoint roots")


def _create_job(user, team: Team, kind: str, cfg: dict[str, Any], **fields: Any) -> Job:
    variant = cfg.get("variant", "") if kind == Job.Kind.PRETRAIN else ""
    board = leaderboard.board_fields(kind, cfg, dataset=fields.get("dataset"), parent=fields.get("parent"))
    job = Job.objects.create(team=team, creator=user, kind=kind, config=cfg, variant=variant,
                             queued_at=timezone.now(), **board, **fields)
    job.out_dir = str(Path(settings.LAB_RUNS_DIR) / team.slug / f"job-{job.pk}")
    job.name = job.name or f"{kind}-{job.pk}"
    if not cfg.get("run_name"):
        job.config = {**cfg, "run_name": f"job-{job.pk}"}
    job.save(update_fields=["out_dir", "name", "config"])
    return job


@dataclass(frozen=True)
class EvaluationSpec:
    """An evaluation a pretraining job queues when it succeeds: a protocol on a dataset of the job's team (by id),
    one split, one seed, one protocol preset. The job row stores `to_dict()`; forms and the API build it through
    `from_dict`, which refuses unknown fields."""

    dataset: int
    protocol: str
    split: int = 1
    seed: int = 0
    preset: str = ""

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "evaluations") -> EvaluationSpec:
        if not isinstance(raw, dict):
            raise LabError({"evaluations": [f"{where} must be an object"]})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in set(raw) - fields)
        if unknown:
            raise LabError({"evaluations": [f"{where}: unknown field {unknown[0]!r:.80}; a spec has "
                                            f"{', '.join(sorted(fields))}"]})
        dataset = parse_id(raw.get("dataset"))
        if dataset is None:
            raise LabError({"evaluations": [f"{where}: dataset must be a dataset id, got {raw.get('dataset')!r:.80}"]})
        return cls(dataset=dataset, protocol=raw.get("protocol", ""), split=raw.get("split", 1),
                   seed=raw.get("seed", 0), preset=raw.get("preset", ""))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config(self, dataset: Dataset, *, checkpoint: str, **extra: Any) -> dict[str, Any]:
        """The evaluation's config on `dataset` (the spec's, looked up in the job's team)."""
        return {"checkpoint": checkpoint, "benchmark": dataset.benchmark, "data": dataset.path, "split": self.split,
                "protocol": self.protocol, "seed": self.seed, "preset": self.preset, **extra}


def check_evaluations(specs: list[Any], team: Team) -> list[dict[str, Any]]:
    """The stored form of the evaluation specs a pretraining job queues on success. Each is checked now, as an
    evaluation of a random encoder on its dataset, so a bad spec is refused at submission."""
    if not isinstance(specs, list):
        raise LabError({"evaluations": ["evaluations must be a list of objects"]})
    checked, problems = [], []
    for index, raw in enumerate(specs):
        try:
            checked.append(_checked_evaluation(raw, team, f"evaluations[{index}]"))
        except LabError as exc:
            problems += exc.errors["evaluations"]
    if problems:  # every bad spec at once
        raise LabError({"evaluations": problems})
    return checked


def _checked_evaluation(raw: Any, team: Team, where: str) -> dict[str, Any]:
    spec = EvaluationSpec.from_dict(raw, where=where)
    dataset = Dataset.objects.usable().filter(team=team, pk=spec.dataset).first()
    if dataset is None:
        raise LabError({"evaluations": [f"{where}: no dataset {spec.dataset} in this team"]})
    try:
        cfg = validate_config(Job.Kind.EVALUATE, spec.config(dataset, checkpoint="random"))
    except ConfigError as exc:
        raise LabError({"evaluations": [f"{where} ({spec.protocol} on {dataset.name}): {exc}"]}) from None
    return dataclasses.replace(spec, split=cfg["split"], seed=cfg["seed"], protocol=cfg["protocol"],
                               preset=cfg["preset"]).to_dict()  # as typed by the config


def enqueue(job: Job, *, countdown: float = 0) -> str | None:
    """Send the job's id to its Celery queue (LAB_ENQUEUE=celery) and record the task id and when the broker took
    it; a no-op with 'none'. An unreachable broker is logged, not raised: the row stays queued with no
    message_sent_at, and `resend_unsent` sends it when the broker is back."""
    if settings.LAB_ENQUEUE == "none":
        return None
    from workers.tasks import run_job  # the workers package imports this module; import late to avoid a cycle

    try:
        result = run_job.apply_async(args=[job.pk], queue=job.queue_name, priority=job.priority,
                                     countdown=countdown or None, retry=False)
    except Exception:  # kombu's OperationalError, a refused connection, a DNS failure: the broker is not there
        log.warning("job %s: the broker did not take its message; it is re-sent later", job.pk, exc_info=True)
        return None
    Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(celery_task_id=result.id,
                                                                   message_sent_at=timezone.now())
    return result.id


def unsent(jobs: Iterable[Job]) -> list[Job]:
    """Those of `jobs` (just submitted or requeued) whose message the broker has not taken, as the database says."""
    if settings.LAB_ENQUEUE == "none":
        return []
    pks = [job.pk for job in jobs]
    return list(Job.objects.filter(pk__in=pks, status=Job.Status.QUEUED, message_sent_at__isnull=True))


def resend_unsent(older_than_s: float = 30.0) -> list[int]:
    """Send again every queued job whose message never reached the broker (it was down at submission, retry or
    requeue) and that has waited `older_than_s`; the ids sent. A second message for one job is harmless: only one
    attempt can claim it."""
    if settings.LAB_ENQUEUE == "none":
        return []
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    sent = []
    for job in Job.objects.filter(status=Job.Status.QUEUED, message_sent_at__isnull=True, queued_at__lt=cutoff):
        if not enqueue(job):
            break  # the broker is still away: the next sweep tries again, instead of timing out once per job
        sent.append(job.pk)
    return sent


# -- the worker's side -------------------------------------------------------------------------------------------


def local_gpus(job_id: int) -> int:
    """The GPUs a job takes on the worker that runs it: its GPUs per node for a local GPU job, else none."""
    spec = Job.objects.filter(pk=job_id).values_list("resources", flat=True).first() or {}
    local_gpu = spec.get("resource") == "gpu" and spec.get("launcher", "local") == "local"
    return int(spec.get("gpus", 1)) if local_gpu else 0


def send_back(job_id: int) -> None:
    """A queued job's message reached a worker that cannot run it now (its GPUs were taken meanwhile): send it to its
    queue again, for this worker later or another one now."""
    if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(message_sent_at=None):
        enqueue(Job.objects.get(pk=job_id))  # if the broker does not take it, resend_unsent will


def claim_job(job_id: int, *, worker: str, task_id: str) -> Job | None:
    """Move a queued job to running for this worker; None when it is not queued (claimed, cancelled, done)."""
    now = timezone.now()
    changed = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, cancel_requested=False).update(
        status=Job.Status.RUNNING, attempt=F("attempt") + 1, worker=worker[:200], celery_task_id=task_id[:100],
        started_at=now, heartbeat_at=now, finished_at=None, stage="starting", error="", eta_seconds=None)
    return Job.objects.get(pk=job_id) if changed == 1 else None


def heartbeat(job_id: int, *, progress: float, eta: float | None, stage: str, worker: str | None = None,
              attempt: int | None = None) -> bool:
    """Record progress of a running job; True means stop now (cancel requested, or the job is no longer this
    attempt's: requeued as stale, claimed again (perhaps by the same worker, which runs several jobs at once) or
    finished elsewhere)."""
    rows = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING)
    if worker is not None:
        rows = rows.filter(worker=worker[:200])
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    changed = rows.update(progress=max(0.0, min(1.0, float(progress))), eta_seconds=eta, stage=stage[:300],
                          heartbeat_at=timezone.now())
    if changed != 1:
        return True
    return Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def append_log(job_id: int, text: str) -> None:
    """Append the trainer's output to the job's log tail, keeping the last LAB_LOG_TAIL_CHARS characters (one
    UPDATE, no race)."""
    if not text:
        return
    limit = settings.LAB_LOG_TAIL_CHARS
    Job.objects.filter(pk=job_id).update(log_tail=Right(Concat(F("log_tail"), Value(text[-limit:])), limit))


def append_event(job_id: int, text: str) -> None:
    """A line of the lab's or the worker's own (started, requeued, resumed, cancelled): into the log tail, in its
    place among the trainer's lines, and into the job's events, which only such lines fill."""
    if not text:
        return
    limit = settings.LAB_LOG_TAIL_CHARS
    text = text[-limit:]
    Job.objects.filter(pk=job_id).update(log_tail=Right(Concat(F("log_tail"), Value(text)), limit),
                                         events=Right(Concat(F("events"), Value(text)), limit))


def set_run(job_id: int, *, run_id: str, experiment_id: str) -> None:
    Job.objects.filter(pk=job_id).update(mlflow_run_id=run_id or "", mlflow_experiment_id=experiment_id or "")


def _active(job_id: int, owner: dict[str, Any] | None):
    """The job's row while it is queued or running; with an owner ({worker, attempt}), only while it is still that
    attempt's, so an attempt that lost its row (requeued as stale, claimed again) cannot end the new attempt."""
    rows = Job.objects.filter(pk=job_id, status__in=Job.ACTIVE)
    if owner:
        rows = rows.filter(status=Job.Status.RUNNING, worker=owner["worker"][:200], attempt=owner["attempt"])
    return rows


def still_owned(job_id: int, owner: dict[str, Any]) -> bool:
    """Whether the attempt `owner` ({worker, attempt}) still holds the job's row."""
    return _active(job_id, owner).exists()


def finish_job(job_id: int, *, record: dict[str, Any] | None = None, owner: dict[str, Any] | None = None) -> Job | None:
    """Mark the job succeeded; an evaluation stores its Result, a pretraining queues its evaluations.
    Idempotent: a job already finished is returned unchanged (None if it does not exist)."""
    with transaction.atomic():
        changed = _active(job_id, owner).update(
            status=Job.Status.SUCCEEDED, progress=1.0, eta_seconds=None, stage="done", finished_at=timezone.now(),
            cancel_requested=False)
        job = Job.objects.filter(pk=job_id).first()
        if changed != 1 or job is None:
            return job
        if job.kind == Job.Kind.EVALUATE and record is not None:
            store_result(job, record)
        if job.kind == Job.Kind.PRETRAIN:
            on_job_succeeded(job)
        if job.kind == Job.Kind.PREPARE:
            register_store(job)
    return job


def fail_job(job_id: int, *, error: str, owner: dict[str, Any] | None = None) -> Job | None:
    now = timezone.now()
    _active(job_id, owner).update(
        status=Job.Status.FAILED, error=(error or "failed")[:20000], eta_seconds=None, finished_at=now,
        stage="failed")
    return Job.objects.filter(pk=job_id).first()


def mark_cancelled(job_id: int, *, owner: dict[str, Any] | None = None, reason: str = "") -> Job | None:
    """The job ends cancelled: on a user's request, or (`reason`) stopped from outside the lab, e.g. scancel."""
    changed = _active(job_id, owner).update(
        status=Job.Status.CANCELLED, cancel_requested=False, eta_seconds=None, finished_at=timezone.now(),
        stage=f"cancelled: {reason}"[:300] if reason else "cancelled", **({"error": reason[:20000]} if reason else {}))
    if changed and reason:
        append_event(job_id, f"\n[lab] cancelled: {reason}\n")
    return Job.objects.filter(pk=job_id).first()


def requeue_job(job_id: int, *, owner: dict[str, Any], reason: str) -> Job | None:
    """Put a running job that stopped on its own worker's request (a shutdown) or on the cluster's warning back in
    the queue at once; its next attempt resumes from the checkpoint it just wrote. Not a worker loss: the count of
    those is unchanged. A cancel that came in meanwhile wins: the job ends cancelled instead."""
    with transaction.atomic():
        changed = _active(job_id, owner).filter(cancel_requested=False).update(
            status=Job.Status.QUEUED, worker="", stage=f"requeued: {reason}", eta_seconds=None,
            queued_at=timezone.now(), message_sent_at=None)
        if changed:
            transaction.on_commit(lambda: enqueue(Job.objects.get(pk=job_id)))
    return Job.objects.filter(pk=job_id).first() if changed else mark_cancelled(job_id, owner=owner)


def store_result(job: Job, record: dict[str, Any]) -> Result:
    """Save an xdc evaluation record (schema xdc-eval-result/1) with the leaderboard's columns pulled out."""
    protocol = record.get("protocol") or {}
    protocol_name = protocol.get("name", "") if isinstance(protocol, dict) else str(protocol)
    metrics = record.get("metrics") or {}
    metric_name = MAIN_METRIC.get(protocol_name, DEFAULT_METRIC)
    if metric_name not in metrics and metrics:
        metric_name = next(iter(metrics))
    value = metrics.get(metric_name)
    checkpoint = record.get("checkpoint") or {}
    result, _ = Result.objects.update_or_create(job=job, defaults=dict(
        team=job.team, record=record, benchmark=str(record.get("benchmark", "")), split=str(record.get("split", "")),
        protocol=protocol_name, protocol_version=str(protocol.get("version", "")) if isinstance(protocol, dict) else "",
        seed=int(record.get("seed", 0) or 0), checkpoint_kind=str(checkpoint.get("kind", "")),
        metric_name=metric_name, metric_value=float(value) if isinstance(value, (int, float)) else None))
    return result


def on_job_succeeded(job: Job) -> list[Job]:
    """Queue the evaluations a finished pretraining job carries, each on its final checkpoint. A spec that no longer
    validates (its dataset was deleted) is noted in the log and skipped; the others still run."""
    children = []
    for stored in job.evaluations or []:
        try:
            spec = EvaluationSpec.from_dict(stored)
            dataset = Dataset.objects.filter(team=job.team, pk=spec.dataset).first()
            if dataset is None:
                raise LabError(f"dataset {spec.dataset} no longer exists")
            cfg = spec.config(dataset, checkpoint=job.final_checkpoint, pretrain_run_id=job.mlflow_run_id)
            children += submit_jobs(job.creator, job.team, Job.Kind.EVALUATE, [cfg], dataset=dataset, parent=job,
                                    priority=job.priority, resources=_one_rank(job.resources))
        except LabError as exc:
            append_event(job.pk, f"\n[lab] evaluation {stored} not queued: {exc}\n")
    return children


def _check_slurm(spec: Resources) -> None:
    """A SLURM job must fit a partition of the cluster as `sinfo` describes it now (asked at most once a minute)."""
    from xdc.launch import SlurmError, check_slurm_fit, slurm_partitions

    now = timezone.now()
    if _SLURM_CACHE.get("until", now) <= now or "partitions" not in _SLURM_CACHE:
        try:
            _SLURM_CACHE.update(partitions=slurm_partitions(), until=now + timedelta(seconds=60))
        except SlurmError as exc:
            raise LabError({"launcher": [f"the slurm launcher is not available here: {exc}"]}) from None
    try:
        check_slurm_fit(spec, _SLURM_CACHE["partitions"])
    except ConfigError as exc:
        raise LabError({exc.key or "launcher": [str(exc)]}) from None


_SLURM_CACHE: dict[str, Any] = {}


def _one_rank(resources: dict[str, Any]) -> dict[str, Any]:
    """An evaluation of a pretraining runs as one process where the pretraining ran (its kind of worker, or its SLURM
    partition), on one GPU of a GPU job."""
    cpu = resources.get("resource") == "cpu"
    spec = {"resource": "cpu" if cpu else "gpu", "gpus": 0 if cpu else 1}
    if resources.get("launcher") == "slurm":
        spec |= {"launcher": "slurm", "partition": resources.get("partition", "")}
    return spec


# -- the user's side ---------------------------------------------------------------------------------------------


def cancel_job(job: Job) -> Job:
    """A queued job is cancelled at once (its message revoked); a running one is asked to stop and the worker
    marks it cancelled after saving a checkpoint."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELLED, finished_at=now, stage="cancelled", eta_seconds=None):
        _revoke(job.celery_task_id)
    elif not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True,
                                                                             stage="cancelling"):
        job.refresh_from_db()
        raise InvalidTransition(f"job #{job.pk} is {job.status}; only queued or running jobs can be cancelled")
    job.refresh_from_db()
    return job


def _revoke(task_id: str) -> None:
    if not task_id or settings.LAB_ENQUEUE == "none":
        return
    try:
        from workers.tasks import run_job

        run_job.app.control.revoke(task_id)
    except Exception:  # the claim refuses a cancelled job anyway; revoking only saves the worker a wake-up
        log.warning("could not revoke task %s", task_id, exc_info=True)


def retry_job(job: Job) -> Job:
    """Queue a failed or cancelled job again as a new attempt of the same row: same config and output folder, so
    the trainer resumes from its last checkpoint and continues the same MLflow run."""
    with transaction.atomic():
        changed = Job.objects.filter(pk=job.pk, status__in=(Job.Status.FAILED, Job.Status.CANCELLED)).update(
            status=Job.Status.QUEUED, cancel_requested=False, error="", finished_at=None, eta_seconds=None,
            heartbeat_at=None, stage="queued (retry)", worker="", worker_losses=0, queued_at=timezone.now(),
            message_sent_at=None)
        job.refresh_from_db()
        if changed != 1:
            raise InvalidTransition(f"job #{job.pk} is {job.status}; only failed or cancelled jobs can be retried")
        transaction.on_commit(lambda: enqueue(job))
    return job


def requeue_stale_jobs(timeout_s: float | None = None) -> list[int]:
    """Put running jobs whose worker stopped sending heartbeats back in the queue (or mark them cancelled when a
    cancel was pending). Each row changes under a condition on its old heartbeat, so a job that beats in between,
    or that another sweeper got first, is left alone.

    A job whose worker vanished LAB_MAX_WORKER_LOSSES times (it kills its worker: a full disk, a decoder that
    crashes; a user's retry counts afresh) fails with that reason instead, its MLflow run marked FAILED; the requeues before wait
    LAB_REQUEUE_BACKOFF_SECONDS, doubling each time, so a poisonous job does not take down every worker at once."""
    cutoff = timezone.now() - timedelta(seconds=settings.LAB_STALE_SECONDS if timeout_s is None else timeout_s)
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    requeued = []
    for job in Job.objects.filter(stale, status=Job.Status.RUNNING).only(
            "pk", "heartbeat_at", "cancel_requested", "worker_losses", "stage", "mlflow_run_id"):
        rows = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, heartbeat_at=job.heartbeat_at)
        if job.cancel_requested:
            rows.update(status=Job.Status.CANCELLED, cancel_requested=False, finished_at=timezone.now(),
                        stage="cancelled (worker lost)")
        elif _requeue_lost(rows, job, "worker lost", f"no heartbeat since {job.heartbeat_at}"):
            requeued.append(job.pk)
    return requeued


def requeue_after_loss(job_id: int, *, owner: dict[str, Any], reason: str) -> Job | None:
    """Requeue a running job whose attempt lost part of its machinery (a node of a multi-node job; a rank's peers)
    rather than failing on its own: counted like a vanished worker, with the same back-off and limit."""
    job = _active(job_id, owner).only("pk", "worker_losses", "stage", "mlflow_run_id", "cancel_requested").first()
    if job is not None and job.cancel_requested:  # a cancel came in meanwhile: it wins
        return mark_cancelled(job_id, owner=owner)
    if job is not None:
        _requeue_lost(_active(job_id, owner).filter(cancel_requested=False), job, reason, reason)
    return Job.objects.filter(pk=job_id).first()


def _requeue_lost(rows, job: Job, short: str, detail: str) -> bool:
    """Requeue `rows` (the job, under the caller's condition) after a loss with a doubling back-off, or fail it once
    it has been lost LAB_MAX_WORKER_LOSSES times; whether it was requeued."""
    losses = job.worker_losses + 1
    if losses >= settings.LAB_MAX_WORKER_LOSSES:
        reason = (f"{short} {losses} times during {job.stage or 'its run'}; not retried again "
                  f"(LAB_MAX_WORKER_LOSSES={settings.LAB_MAX_WORKER_LOSSES})")
        if rows.update(status=Job.Status.FAILED, error=reason, worker_losses=losses, finished_at=timezone.now(),
                       eta_seconds=None, stage="failed"):
            append_event(job.pk, f"\n[lab] {detail}; {reason}\n")
            _mark_run_failed(job.mlflow_run_id, reason)
        return False
    if not rows.update(status=Job.Status.QUEUED, worker="", stage=f"requeued: {short}", eta_seconds=None,
                       worker_losses=losses, queued_at=timezone.now(), message_sent_at=None):
        return False
    delay = min(settings.LAB_REQUEUE_BACKOFF_SECONDS * 2 ** (losses - 1), 3600)
    append_event(job.pk, f"\n[lab] {detail}; requeued ({short} {losses} times; starts again in {delay:.0f} s or "
                       f"later)\n")
    transaction.on_commit(lambda pk=job.pk, delay=delay: enqueue(Job.objects.get(pk=pk), countdown=delay))
    return True


def _mark_run_failed(run_id: str, reason: str) -> None:
    """End a job's MLflow run FAILED with the reason, when the attempt that owned it can no longer do so."""
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.MLFLOW_TRACKING_URI)
        client.set_tag(run_id, "error", reason[:5000])
        client.set_terminated(run_id, status="FAILED")
    except Exception:  # the row says why; an unreachable tracking server must not stop the sweep
        log.warning("could not mark MLflow run %s FAILED", run_id, exc_info=True)


def waiting_reason(job: Job) -> str:
    """Why a queued job has not started, in words: the broker has not taken it yet, or how many jobs are ahead of
    it on its queue (lower priority numbers first, then the earlier queued), and whether any worker serves that
    queue now (`live_queues`)."""
    if job.status != Job.Status.QUEUED:
        return ""
    if settings.LAB_ENQUEUE != "none" and job.message_sent_at is None:
        return "not sent yet: the message broker did not answer; it is sent again when it does"
    since = job.queued_at or job.created_at  # rows queued before queued_at existed have none
    queued = Job.objects.filter(status=Job.Status.QUEUED).exclude(pk=job.pk).values_list(
        "priority", "queued_at", "resources", "pk")
    ahead = sum(1 for priority, queued_at, resources, pk in queued
                if Job(resources=resources).queue_name == job.queue_name
                and (priority, queued_at or since, pk) < (job.priority, since, job.pk))
    position = f"{ahead} job{'s' if ahead != 1 else ''} ahead of it on queue {job.queue_name}"
    serving = live_queues()
    if serving is not None and job.queue_name not in serving:
        offered = ", ".join(sorted(serving)) or "none"
        return f"{position}; no worker serves queue {job.queue_name} now (queues served: {offered})"
    return position


LIVE_QUEUES_KEY = "lab:live-queues"


def live_queues() -> set[str] | None:
    """The queues some running worker consumes now, as workers announce them in the broker (workers/presence.py);
    None when that cannot be read (no broker, LAB_ENQUEUE=none)."""
    if settings.LAB_ENQUEUE == "none":
        return None
    from django.core.cache import cache

    served = cache.get(LIVE_QUEUES_KEY)
    if served is not None:
        return set(served)
    try:
        from workers.presence import served_queues

        served = served_queues()
    except Exception:  # an unreachable broker: say nothing about workers rather than something wrong
        log.info("could not read which queues workers serve", exc_info=True)
        return None
    cache.set(LIVE_QUEUES_KEY, sorted(served), 5)  # job pages poll; the broker is asked once per 5 s at most
    return served


# -- datasets ----------------------------------------------------------------------------------------------------


def register_dataset(*, team: Team, name: str, layout: str, path: str, user=None, background: bool = False) -> Dataset:
    """Register a folder for the team: check the name, the layout and that the folder is an existing one under the
    team's data roots, then read it with xdc's layout reader (every split of every fold) and store its file and
    class counts. LabError naming the field at fault when any of that fails, and nothing is stored.

    With `background` (the site and the API) and a broker (LAB_ENQUEUE=celery), the reading is a worker's: the row is
    stored at once as `listing` and becomes `ready` with its counts, or `failed` with the reader's reason
    (`list_dataset`); only ready datasets are offered to jobs. A listing of a large tree then never holds a request."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise LabError({"name": ["a dataset needs a name"]})
    _check_text("name", name, Dataset._meta.get_field("name").max_length)
    _check_text("path", path if isinstance(path, str) else "", Dataset._meta.get_field("path").max_length)
    if Dataset.objects.filter(team=team, name=name).exists():
        raise LabError({"name": [f"the team already has a dataset named {name!r}"]})
    folder = _registrable_folder(team, layout, path)
    later = background and settings.LAB_ENQUEUE != "none"
    counts = {} if later else _listing_counts(layout, folder)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(team=team, name=name, layout=layout, path=str(folder), created_by=user,
                                             status=Dataset.Status.LISTING if later else Dataset.Status.READY,
                                             listed_at=None if later else timezone.now(), **counts)
    except IntegrityError:  # registered by someone else between the check above and now
        raise LabError({"name": [f"the team already has a dataset named {name!r}"]}) from None
    if later:
        transaction.on_commit(lambda: enqueue_listing(dataset))
    return dataset


def register_store(job: Job) -> Dataset | None:
    """Offer the clip store a prepare job wrote as a dataset of its team (ready, read with its source's layout, named
    after the source and the store's short side), so the forms and the API offer it like any dataset. None, with a
    line in the job's log, when the store cannot be read back."""
    source = job.dataset
    store = store_folder(job)
    try:
        counts = _listing_counts(job.config["layout"], store)
    except LabError as exc:
        append_event(job.pk, f"\n[lab] the store at {store} is not offered as a dataset: {exc}\n")
        return None
    base = f"{source.name if source else Path(job.config['path']).name} store {job.config['store']['short_side']}px"
    name = base if not Dataset.objects.filter(team=job.team, name=base).exists() else f"{base} (job {job.pk})"
    name = name[:Dataset._meta.get_field("name").max_length]
    return Dataset.objects.create(team=job.team, name=name, layout=job.config["layout"], path=str(store),
                                  created_by=job.creator, status=Dataset.Status.READY, listed_at=timezone.now(),
                                  prepared_from=source, **counts)


def store_folder(job: Job) -> Path:
    """Where a prepare job writes its store: inside its own output folder, under the team's runs."""
    return Path(job.out_dir) / "store"


def _registrable_folder(team: Team, layout: str, path: str) -> Path:
    """The resolved folder of a registration, after the cheap checks: a known layout, an absolute path to an existing
    folder under the team's data roots."""
    from xdc.data.layouts import LAYOUTS

    if layout not in LAYOUTS:
        raise LabError({"layout": [f"unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}"]})
    folder = Path(path or "").expanduser()
    if not str(path or "").strip() or not folder.is_absolute():
        raise LabError({"path": [f"{path!r:.200} is not an absolute path"]})
    _check_data_root(team, folder.resolve())
    if not folder.is_dir():
        raise LabError({"path": [f"{path!r:.200} is not an existing folder on the lab's machines"]})
    return folder.resolve()


def _listing_counts(layout: str, folder: Path) -> dict[str, Any]:
    from xdc.data.layouts import read_every_split

    try:
        listing = read_every_split(layout, folder)
    except DataError as exc:
        raise LabError({"path": [str(exc)]}) from None
    return {"files": len(listing.samples), "classes": len(listing.classes), "labeled": listing.labeled}


def enqueue_listing(dataset: Dataset) -> bool:
    """Send a dataset's listing to a worker (queue cpu, ahead of jobs); whether the broker took it. A broker that is
    down is logged, and `resend_listings` sends it again."""
    from workers.tasks import list_dataset  # the workers package imports this module; import late to avoid a cycle

    try:
        list_dataset.apply_async(args=[dataset.pk], queue="cpu", priority=9, retry=False)
    except Exception:
        log.warning("dataset %s: the broker did not take its listing; it is re-sent later", dataset.pk, exc_info=True)
        return False
    Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.LISTING).update(listing_sent_at=timezone.now())
    return True


def list_dataset(dataset_id: int) -> Dataset | None:
    """Read a `listing` dataset's folder (what a worker does): `ready` with its counts, or `failed` with the reason.
    Reading twice (a message sent again) gives the same row; a dataset no longer listing is left as it is."""
    dataset = Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.LISTING).select_related("team").first()
    if dataset is None:
        return None
    try:
        folder = _registrable_folder(dataset.team, dataset.layout, dataset.path)  # the tree may have changed since
        changes = {**_listing_counts(dataset.layout, folder), "status": Dataset.Status.READY, "error": ""}
    except LabError as exc:
        changes = {"status": Dataset.Status.FAILED, "error": " ".join(sum(exc.errors.values(), []))[:5000]}
    Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.LISTING).update(listed_at=timezone.now(), **changes)
    dataset.refresh_from_db()
    return dataset


def resend_listings(older_than_s: float = 30.0) -> list[int]:
    """Send again the listings whose message never reached the broker (it was down at registration) and that have
    waited `older_than_s`; the dataset ids sent. A second message is harmless: the first to finish lists it."""
    waiting = Dataset.objects.filter(status=Dataset.Status.LISTING, listing_sent_at__isnull=True,
                                     created_at__lt=timezone.now() - timedelta(seconds=older_than_s))
    return [dataset.pk for dataset in waiting if enqueue_listing(dataset)]


def _check_data_root(team: Team, folder: Path) -> None:
    """A dataset lies under LAB_DATA_ROOTS (open to every team) or under one of the team's own data roots, and not
    under another team's; `folder` has its symlinks resolved, so a link cannot lead out of a root."""
    roots = [*settings.LAB_DATA_ROOTS, *team.data_root_paths()]
    if not any(folder.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots) or "none"
        raise LabError({"path": [f"{folder} is outside the folders team {team.slug} may register datasets from "
                                 f"({shown}); an admin adds a team's roots"]})
    for other in Team.objects.exclude(pk=team.pk).exclude(data_roots=""):
        if any(folder.is_relative_to(root) for root in other.data_root_paths()):
            raise LabError({"path": [f"{folder} lies in a data root of another team"]})


def _check_text(field_name: str, value: str, longest: int) -> None:
    """Text a column holds on every database: at most `longest` characters, no NUL, no lone surrogate."""
    if len(value) > longest:
        raise LabError({field_name: [f"{field_name} must be at most {longest} characters, got {len(value)}"]})
    try:
        check_text(field_name, value)
    except ConfigError as exc:
        raise LabError({field_name: [str(exc)]}) from None


# -- the leaderboard -------------------------------------------------------------------------------------------


def pin_baseline(team: Team, *, column: str, row: str) -> None:
    """Pin `row` as the baseline of the leaderboard column `column` (a Column key), or unpin with an empty row. The
    pins are the team's; the page shows every cell's delta to its column's pin."""
    if not isinstance(column, str) or not column or len(column) > 400 or "\x00" in column:
        raise LabError({"column": ["no such leaderboard column"]})
    if row and not (isinstance(row, str) and len(row) <= 80 and "\x00" not in row
                    and Job.objects.filter(team=team, board_row=row).exists()):
        raise LabError({"row": ["no such leaderboard row in this team"]})
    with transaction.atomic():
        locked = Team.objects.select_for_update().get(pk=team.pk)
        pins = dict(locked.leaderboard_pins) if isinstance(locked.leaderboard_pins, dict) else {}
        if row:
            pins[column] = row
        else:
            pins.pop(column, None)
        Team.objects.filter(pk=team.pk).update(leaderboard_pins=pins)
    team.leaderboard_pins = pins


def reevaluate_stale(user, team: Team, column) -> list[Job]:
    """Queue, under the protocol's latest version, every evaluation of a stale leaderboard column that has no
    counterpart there yet (same row, split, seed and data): one job each, with the same checkpoint, data and
    resources. LabError when the column is not stale."""
    if not column.stale:
        raise LabError({"column": [f"{column.title} is under the latest version of its protocol"]})
    stale = leaderboard.stale_evaluations(team, column)
    if len(stale) > settings.LAB_MAX_GRID:
        raise LabError({"column": [f"{len(stale)} re-evaluations is more than LAB_MAX_GRID={settings.LAB_MAX_GRID}"]})
    created = []
    with transaction.atomic():  # all of them or, if one is refused, none
        for old in stale:
            cfg = {k: v for k, v in old.config.items() if k not in ("run_name", "pretrain_run_id")}
            parent = old.parent if old.parent and old.parent.status == Job.Status.SUCCEEDED else None
            created += submit_jobs(user, team, Job.Kind.EVALUATE, [{**cfg, "version": 0}], dataset=old.dataset,
                                   parent=parent, priority=old.priority, resources=old.resources)
    return created

"""The JSON API: small function views with token authentication (`Authorization: Token <key>`).

A GET may also use the browser's session (the jobs page polls /api/jobs); a POST needs a token, so no CSRF token
is involved. A refused payload is a 400 with {"errors": {field: [messages]}} and creates nothing.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from webapp.lab import leaderboard as board_module
from webapp.lab import selectors, services
from webapp.lab.models import ApiToken, Dataset, Job, hash_key
from xdc.launch import RESOURCE_KEYS

MAX_JOBS = 500
TOKEN_KEY = re.compile(r"[0-9a-f]{40}")  # what ApiToken issues
# The fields a job submission may carry; anything else ('confg') is refused rather than ignored.
# The job's resources are given flat, by the names of xdc.launch.Resources' fields (resource, gpus, nodes, ...).
SUBMIT_FIELDS = {"kind", "config", "configs", "grid", "team", "dataset", "evaluations", "parent", "priority",
                 "name", *RESOURCE_KEYS}


def job_json(job: Job, *, full: bool = True) -> dict[str, Any]:
    data = {
        "id": job.pk, "kind": job.kind, "name": job.name, "status": job.status, "progress": job.progress,
        "eta_seconds": job.eta_seconds, "stage": job.stage, "variant": job.variant, "team": job.team.slug,
        "creator": job.creator.get_username() if job.creator else None, "attempt": job.attempt,
        "priority": job.priority, **(job.resources if isinstance(job.resources, dict) else {}),
        "placement": job.placement, "parent": job.parent_id,
        "dataset": job.dataset_id, "cancel_requested": job.cancel_requested, "error": job.error,
        "mlflow_run_id": job.mlflow_run_id, "mlflow_experiment_id": job.mlflow_experiment_id,
        "mlflow_url": job.mlflow_url, "summary": job.summary, "url": job.get_absolute_url(),
        "created_at": job.created_at.isoformat(), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "heartbeat_at": _iso(job.heartbeat_at),
        "elapsed_seconds": job.elapsed_seconds,  # this attempt's: from its start to its end, or to now
    }
    if full:
        data |= {"config": job.config, "evaluations": job.evaluations, "out_dir": job.out_dir,
                 "worker": job.worker, "log_tail": job.log_tail, "events": job.events,
                 "result": job.result.record if hasattr(job, "result") else None}
    return data


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.pk, "team": dataset.team.slug, "name": dataset.name, "layout": dataset.layout,
            "path": dataset.path, "files": dataset.files, "classes": dataset.classes, "labeled": dataset.labeled,
            "benchmark": dataset.benchmark, "status": dataset.status, "error": dataset.error,
            "listed_at": _iso(dataset.listed_at)}


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def error(status: int, errors: dict[str, list[str]] | str) -> JsonResponse:
    if isinstance(errors, str):
        errors = {"__all__": [errors]}
    return JsonResponse({"errors": errors}, status=status)


def api_view(*methods: str):
    """Allow `methods`, authenticate by token (or session for GET), and hand the view a user."""

    def decorate(view):
        @functools.wraps(view)
        @csrf_exempt
        @login_not_required
        def wrapper(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                return error(405, f"method {request.method} not allowed; use {', '.join(methods)}")
            user = _token_user(request)
            if user is None and request.method == "GET" and request.user.is_authenticated:
                user = request.user
            if user is None:
                response = error(401, "authentication required: send 'Authorization: Token <key>'")
                response["WWW-Authenticate"] = "Token"
                return response
            request.api_user = user
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _token_user(request: HttpRequest):
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "token" or not TOKEN_KEY.fullmatch(key):
        return None  # not a key we issue (NUL bytes and other junk never reach the database)
    now = timezone.now()
    token = (ApiToken.objects.select_related("user").filter(key_hash=hash_key(key), user__is_active=True)
             .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).first())
    if token is None:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise services.LabError({"__all__": ["the body is not valid JSON"]}) from None
    except RecursionError:
        raise services.LabError({"__all__": ["the body nests too deeply to be a lab request"]}) from None
    if not isinstance(data, dict):
        raise services.LabError({"__all__": ["the body must be a JSON object"]})
    return data


@api_view("GET", "POST")
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _submit(request)
    params = request.GET
    found = selectors.filter_jobs(selectors.visible_jobs(request.api_user),
                                  ids=selectors.parse_ids([params.get("ids", "")]),
                                  **{name: params.get(name, "")[:400] for name in selectors.JOB_FILTERS})
    full = params.get("full") == "1"
    return JsonResponse({"jobs": [job_json(job, full=full) for job in found[:MAX_JOBS]]})


def _submit(request: HttpRequest) -> JsonResponse:
    """{"kind", "config" or "configs", optional "grid" {axis: [values]}, "team" (slug), "dataset" (id or name: the
    data a pretraining trains on or an evaluation measures), "evaluations", "parent", "priority", "name", and the
    resources: "resource", "gpus" (per node), "nodes", "launcher", "partition", "cpu_ranks"}."""
    try:
        body = _body(request)
        unknown = sorted(set(body) - SUBMIT_FIELDS)
        if unknown:
            name = unknown[0][:80]  # the client's text, echoed: bounded
            return error(400, {name: [f"unknown field {name!r}; a submission has {', '.join(sorted(SUBMIT_FIELDS))}"]})
        team = selectors.team_for(request.api_user, body.get("team"))
        if team is None:
            return error(400, {"team": ["you are in no team of that name"]})
        kind = body.get("kind", Job.Kind.PRETRAIN)
        if kind not in Job.Kind.values:
            return error(400, {"kind": [f"kind must be one of {', '.join(Job.Kind.values)}"]})
        if kind != Job.Kind.PRETRAIN and body.get("evaluations"):
            return error(400, {"evaluations": ["only a pretraining queues evaluations"]})
        configs = _configs(body, kind)
        dataset = _dataset(body, team)
        parent = _parent(body, team)
        meta = {k: body[k] for k in ("priority", "name") if k in body}
        resources = {k: body[k] for k in RESOURCE_KEYS if k in body}
        created = services.submit_jobs(request.api_user, team, kind, configs, dataset=dataset, parent=parent,
                                       evaluations=body.get("evaluations") or [], resources=resources, **meta)
    except services.LabError as exc:
        return error(400, exc.errors)
    body = {"jobs": [job_json(job) for job in created]}
    waiting = services.unsent(created)
    if waiting:  # recorded, but the broker is down: 202, and the lab sends the messages when it is back
        body["warning"] = (f"jobs {', '.join(f'#{job.pk}' for job in waiting)} are queued, but the message broker "
                           "is unreachable; the lab sends them when it is back")
        return JsonResponse(body, status=202)
    return JsonResponse(body, status=201)


def _configs(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    if ("config" in body) == ("configs" in body):
        raise services.LabError({"config": ["give the job's settings as config (an object) or configs (a list of "
                                            "objects), one of the two"]})
    if "configs" in body:
        configs = body["configs"]
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise services.LabError({"configs": ["configs must be a list of objects"]})
    else:
        config = body["config"]
        if not isinstance(config, dict):
            raise services.LabError({"config": ["config must be an object"]})
        configs = [config]
    grid = body.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise services.LabError({"grid": ["grid must map config keys to lists of values"]})
    return [cfg for base in configs
            for cfg in services.expand_grid(base, grid, kind=kind, base_count=len(configs))]


def _dataset(body: dict[str, Any], team) -> Dataset | None:
    if body.get("dataset") in (None, ""):
        return None
    pk = selectors.parse_id(body["dataset"])
    if pk is not None:
        dataset = Dataset.objects.filter(team=team, pk=pk).first()
    elif isinstance(body["dataset"], str) and "\x00" not in body["dataset"]:
        dataset = Dataset.objects.filter(team=team, name=body["dataset"]).first()
    else:
        dataset = None
    if dataset is None:
        raise services.LabError({"dataset": [f"no dataset {body['dataset']!r} in team {team.slug}"]})
    return dataset


def _parent(body: dict[str, Any], team) -> Job | None:
    if body.get("parent") in (None, ""):
        return None
    pk = selectors.parse_id(body["parent"])
    parent = Job.objects.filter(team=team, pk=pk).first() if pk else None
    if parent is None:
        raise services.LabError({"parent": [f"no job {body['parent']!r} in team {team.slug}"]})
    return parent


@api_view("GET")
def job_detail(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(job_json(selectors.get_job(request.api_user, pk)))


@api_view("POST")
def job_cancel(request: HttpRequest, pk: int) -> JsonResponse:
    return _transition(request, pk, services.cancel_job)


@api_view("POST")
def job_retry(request: HttpRequest, pk: int) -> JsonResponse:
    return _transition(request, pk, services.retry_job)


def _transition(request: HttpRequest, pk: int, action) -> JsonResponse:
    job = selectors.get_job(request.api_user, pk)
    try:
        return JsonResponse(job_json(action(job)))
    except services.InvalidTransition as exc:
        return error(409, exc.errors)


@api_view("GET")
def leaderboard(request: HttpRequest) -> JsonResponse:
    """The team's whole board (the page's filters and sort), columns with their version, split set, staleness and
    pinned row; cells with mean, std, n, best, delta to the pin and pending; the published results apart."""
    team = selectors.team_for(request.api_user, request.GET.get("team"))
    if team is None:
        return error(404, "no such team")
    query = {**board_module.query_from(request.GET), "page": 1}
    board = board_module.build(team, **query, page_rows=None)
    columns = [{"key": c.key, "name": c.name, "protocol": c.protocol, "version": c.version, "splits": c.splits,
                "stale": c.stale, "latest_version": c.latest, "pinned_row": board.pins.get(c.key)}
               for c in board.columns]
    return JsonResponse({"team": team.slug, "columns": columns,
                         "rows": [_row_json(row, cells) for row, cells in board.matrix()],
                         "references": list(board_module.references())})


def _row_json(row: board_module.Row, cells) -> dict[str, Any]:
    filled = {column.key: {"mean": cell.mean, "std": cell.std, "n": cell.n, "best": cell.best, "delta": cell.delta,
                           "pending": cell.pending}
              for column, cell in cells if cell is not None}
    return {"key": row.key, "label": row.label, "kind": row.kind, "pretrain_jobs": row.pretrain_jobs,
            "cells": filled}


@api_view("GET", "POST")
def datasets(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"datasets": [dataset_json(d) for d in selectors.visible_datasets(request.api_user)]})
    try:
        body = _body(request)
        team = selectors.team_for(request.api_user, body.get("team"))
        if team is None:
            return error(400, {"team": ["you are in no team of that name"]})
        dataset = services.register_dataset(team=team, name=str(body.get("name", "")),
                                            layout=str(body.get("layout", "")), path=str(body.get("path", "")),
                                            user=request.api_user, background=True)
    except services.LabError as exc:
        return error(400, exc.errors)
    # 202 while a worker lists it: GET /api/datasets says when it is ready (or why it failed).
    return JsonResponse(dataset_json(dataset), status=201 if dataset.status == Dataset.Status.READY else 202)

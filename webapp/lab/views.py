"""Pages of the lab: small function views that validate with a form and call one service."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.lab import charts, selectors, services
from webapp.lab.forms import DatasetForm, EvaluateForm, PrepareForm, PretrainForm, add_lab_error
from webapp.lab.models import Job
from xdc.config import flatten

log = logging.getLogger(__name__)


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the deploy scripts."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # the point is to report any database failure, not to crash
        log.exception("healthz: the database does not answer")  # the driver's words stay in the server's log
        return JsonResponse({"status": "error", "database": "error"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_POST
def switch_team(request: HttpRequest) -> HttpResponse:
    team_id = selectors.parse_id(request.POST.get("team"))
    team = selectors.user_teams(request.user).filter(pk=team_id).first() if team_id else None
    if team is not None:
        request.session["team_id"] = team.pk
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = "lab:jobs"  # never bounce a user to another site
    return redirect(target)


@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    from xdc.variants import VARIANTS

    filters = {k: request.GET.get(k, "") for k in ("status", "variant", "user", "kind")}
    jobs = selectors.filter_jobs(selectors.visible_jobs(request.user), **filters)[:300]
    users = sorted(set(selectors.visible_jobs(request.user).exclude(creator=None)
                       .values_list("creator__username", flat=True)))
    return render(request, "lab/jobs.html", {
        "jobs": jobs, "filters": filters, "statuses": Job.Status.values, "variants": list(VARIANTS),
        "users": users, "kinds": Job.Kind.values})


@require_http_methods(["GET", "POST"])
def submit_pretrain(request: HttpRequest) -> HttpResponse:
    return _submit(request, PretrainForm, Job.Kind.PRETRAIN)


@require_http_methods(["GET", "POST"])
def submit_evaluate(request: HttpRequest) -> HttpResponse:
    return _submit(request, EvaluateForm, Job.Kind.EVALUATE)


def _submit(request: HttpRequest, form_class, kind: str) -> HttpResponse:
    team = selectors.current_team(request)
    clone = None
    if request.GET.get("clone"):
        clone = selectors.get_job(request.user, request.GET["clone"])
    initial = form_class.initial_from(clone) if clone is not None and clone.kind == kind else {}
    form = form_class(request.POST or None, user=request.user, team=team, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            created = services.submit_jobs(request.user, form.cleaned_data["team"], kind, form.configs,
                                           dataset=form.cleaned_data["dataset"], parent=getattr(form, "parent", None),
                                           evaluations=getattr(form, "evaluations", None), **form.meta())
        except services.LabError as exc:
            add_lab_error(form, exc)
        else:
            messages.success(request, f"queued {len(created)} job{'s' if len(created) != 1 else ''}: "
                                      + ", ".join(f"#{j.pk}" for j in created))
            if services.unsent(created):
                messages.warning(request, "the message broker is unreachable: the jobs wait in the queue and are "
                                          "sent when it is back")
            return redirect(created[0] if len(created) == 1 else "lab:jobs")
    return render(request, "lab/submit.html", {"form": form, "kind": kind, "clone": clone},
                  status=400 if form.errors else 200)


@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_job(request.user, pk)
    curves, mlflow_error = charts.run_curves(job.mlflow_run_id)
    loss, rounds = charts.split_curves(curves)
    return render(request, "lab/job.html", {
        "job": job, "config_rows": sorted(flatten(job.config).items()),
        "loss_chart": charts.svg_chart(loss, title="training loss", x_label="step"),
        "round_chart": charts.svg_chart(rounds, title="cluster NMI per round", x_label="round"),
        "mlflow_error": mlflow_error, "children": job.children.all(),
        "result": getattr(job, "result", None)})


@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _transition(request, pk, services.cancel_job, "cancel requested")


@require_POST
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _transition(request, pk, services.retry_job, "queued again")


def _transition(request: HttpRequest, pk: int, action, done: str) -> HttpResponse:
    job = selectors.get_job(request.user, pk)
    try:
        action(job)
        messages.success(request, f"job #{job.pk}: {done}")
    except services.InvalidTransition as exc:
        messages.error(request, str(exc.errors["__all__"][0]))
    return redirect(job)


@require_GET
def job_clone(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_job(request.user, pk)
    if job.kind == Job.Kind.PREPARE:  # its form is on its dataset's page
        return redirect("lab:dataset", pk=job.dataset_id) if job.dataset_id else redirect("lab:datasets")
    target = "lab:submit_pretrain" if job.kind == Job.Kind.PRETRAIN else "lab:submit_evaluate"
    return redirect(f"{reverse(target)}?clone={job.pk}")


@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ids = selectors.parse_ids(request.GET.getlist("ids") + [request.GET.get("id_list", "")])
    jobs = list(selectors.visible_jobs(request.user).filter(pk__in=ids).order_by("pk"))
    flats = [flatten(job.config) for job in jobs]
    keys = sorted({k for flat in flats for k in flat})
    diff = [(k, [flat.get(k, "—") for flat in flats]) for k in keys
            if len({repr(flat.get(k)) for flat in flats}) > 1 and k not in ("run_name",)]
    loss, rounds = {}, {}
    errors = set()
    for job in jobs:
        curves, err = charts.run_curves(job.mlflow_run_id)
        errors.add(err)
        job_loss, job_rounds = charts.split_curves(curves)
        loss |= {f"#{job.pk}": v for v in job_loss.values()}
        rounds |= {f"#{job.pk} {k}": v for k, v in job_rounds.items() if k.startswith("nmi_") and "labels" not in k}
    return render(request, "lab/compare.html", {
        "jobs": jobs, "diff": diff, "mlflow_compare_url": charts.mlflow_compare_url(jobs),
        "loss_chart": charts.svg_chart(loss, title="training loss", x_label="step"),
        "round_chart": charts.svg_chart(rounds, title="cross-modal NMI per round", x_label="round"),
        "mlflow_error": next((e for e in errors if e), ""),
        "candidates": selectors.visible_jobs(request.user).filter(kind=Job.Kind.PRETRAIN)[:100]})


@require_GET
def leaderboard(request: HttpRequest) -> HttpResponse:
    from xdc.variants import VARIANTS

    team = selectors.current_team(request)
    variant = request.GET.get("variant", "")
    dataset_id = request.GET.get("dataset", "")
    board = services.leaderboard(team, variant=variant or None,
                                 dataset=selectors.parse_id(dataset_id)) if team else None
    rows = [(row, [row.cells.get(column) for column in board.columns]) for row in board.rows] if board else []
    return render(request, "lab/leaderboard.html", {
        "board": board, "rows": rows, "team": team, "variants": list(VARIANTS),
        "datasets": team.datasets.all() if team else [], "variant": variant, "dataset_id": dataset_id})


@require_http_methods(["GET", "POST"])
def datasets(request: HttpRequest) -> HttpResponse:
    team = selectors.current_team(request)
    form = DatasetForm(request.POST or None, user=request.user, team=team)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.register_dataset(team=form.cleaned_data["team"], name=form.cleaned_data["name"],
                                                layout=form.cleaned_data["layout"], path=form.cleaned_data["path"],
                                                user=request.user, background=True)
        except services.LabError as exc:
            add_lab_error(form, exc)
        else:
            if dataset.status == dataset.Status.READY:
                messages.success(request, f"registered {dataset.name}: {dataset.files} files, {dataset.classes} "
                                          "classes")
            else:
                messages.success(request, f"registered {dataset.name}; a worker is listing its files (this page "
                                          "shows when it is ready)")
            return redirect("lab:datasets")
    return render(request, "lab/datasets.html", {"form": form, "datasets": selectors.visible_datasets(request.user)},
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A dataset, its jobs and clip stores, and the form that queues a prepare job for it (a POST here)."""
    dataset = selectors.get_dataset(request.user, pk)
    form = PrepareForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job, = services.submit_jobs(request.user, dataset.team, Job.Kind.PREPARE, [form.config()],
                                        dataset=dataset, resources={"resource": "cpu"},
                                        priority=form.cleaned_data["priority"])
        except services.LabError as exc:
            add_lab_error(form, exc)
        else:
            messages.success(request, f"job #{job.pk} prepares a clip store of {dataset.name}; it is offered as a "
                                      "dataset of its own when it succeeds")
            return redirect(job)
    jobs = selectors.visible_jobs(request.user).filter(dataset=dataset, team=dataset.team)[:100]
    return render(request, "lab/dataset.html", {"dataset": dataset, "jobs": jobs, "form": form,
                                                "stores": dataset.stores.all()},
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def mlflow_access(request: HttpRequest) -> HttpResponse:
    """The user's MLflow account: which teams' runs it reads, and a new password on request (shown once)."""
    from webapp.lab import mlflow_access as access

    context = {"enabled": access.enabled(), "ui_url": settings.MLFLOW_UI_URL, "password": None,
               "teams": selectors.user_teams(request.user)}
    status = 200
    if request.method == "POST" and context["enabled"]:
        try:
            context["password"] = access.issue_password(request.user)
        except services.LabError as exc:
            messages.error(request, exc.errors["__all__"][0])
            status = 503
    response = render(request, "lab/mlflow_access.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the password must not stay in a cache
    return response

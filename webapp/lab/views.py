"""Pages of the lab: small function views that validate with a form and call one service."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.lab import charts, comparison, figures, gallery, selectors, services
from webapp.lab import leaderboard as board_module
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


FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           'fill="#111827"/><circle cx="12" cy="16" r="6" fill="#60a5fa"/><circle cx="20" cy="16" r="6" '
           'fill="#f472b6" fill-opacity=".8"/></svg>')


@login_not_required
@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Two overlapping circles, the two modalities (so tabs of the lab are told apart)."""
    response = HttpResponse(FAVICON, content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


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

    filters = {k: request.GET.get(k, "")[:400] for k in selectors.JOB_FILTERS}
    jobs = selectors.filter_jobs(selectors.visible_jobs(request.user).select_related("result"), **filters)[:300]
    users = sorted(set(selectors.visible_jobs(request.user).exclude(creator=None)
                       .values_list("creator__username", flat=True)))
    return render(request, "lab/jobs.html", {
        "jobs": jobs, "filters": filters, "statuses": Job.Status.values, "variants": list(VARIANTS),
        "users": users, "kinds": Job.Kind.values, "filtered": any(filters.values()),
        "many_teams": selectors.user_teams(request.user).count() > 1,
        "board_row": next((j.board_label for j in jobs if filters["row"]), "")})


@require_http_methods(["GET", "POST"])
def submit_pretrain(request: HttpRequest) -> HttpResponse:
    return _submit(request, PretrainForm, Job.Kind.PRETRAIN)


@require_http_methods(["GET", "POST"])
def submit_evaluate(request: HttpRequest) -> HttpResponse:
    return _submit(request, EvaluateForm, Job.Kind.EVALUATE)


def _submit(request: HttpRequest, form_class, kind: str) -> HttpResponse:
    """A submission form; its 'preview' button checks everything and lists the jobs it would queue, 'queue'
    queues them."""
    team = selectors.current_team(request)
    clone = None
    if request.GET.get("clone"):
        clone = selectors.get_job(request.user, request.GET["clone"])
    initial = form_class.initial_from(clone) if clone is not None and clone.kind == kind else {}
    form = form_class(request.POST or None, user=request.user, team=team, initial=initial)
    preview = None
    if request.method == "POST" and form.is_valid():
        options = dict(dataset=form.cleaned_data["dataset"], parent=getattr(form, "parent", None),
                       evaluations=getattr(form, "evaluations", None), **form.meta())
        try:
            if request.POST.get("action") == "preview":
                preview = services.plan_jobs(request.user, form.cleaned_data["team"], kind, form.configs, **options)
            else:
                created = services.submit_jobs(request.user, form.cleaned_data["team"], kind, form.configs,
                                               **options)
        except services.LabError as exc:
            add_lab_error(form, exc)
        else:
            if preview is None:
                _report_queued(request, created)
                return redirect(created[0] if len(created) == 1 else "lab:jobs")
    elif request.method == "POST":
        _add_config_errors(request, form, kind)
    return render(request, "lab/submit.html", {"form": form, "kind": kind, "clone": clone, "preview": preview},
                  status=400 if form.errors else 200)


def _add_config_errors(request: HttpRequest, form, kind: str) -> None:
    """A form with field errors still has its configs checked, so one submit shows the field errors and what the
    configs and evaluations get wrong together."""
    cleaned = form.cleaned_data
    if not getattr(form, "configs", None) or cleaned.get("team") is None:
        return
    try:
        services.plan_jobs(request.user, cleaned["team"], kind, form.configs, dataset=cleaned.get("dataset"),
                           parent=getattr(form, "parent", None), evaluations=getattr(form, "evaluations", None))
    except services.LabError as exc:
        add_lab_error(form, exc)


def _report_queued(request: HttpRequest, created: list[Job]) -> None:
    messages.success(request, f"queued {len(created)} job{'s' if len(created) != 1 else ''}: "
                              + ", ".join(f"#{j.pk}" for j in created))
    if services.unsent(created):
        messages.warning(request, "the message broker is unreachable: the jobs wait in the queue and are sent when "
                                  "it is back")


@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_job(request.user, pk)
    result = getattr(job, "result", None)
    names = dict(job.team.datasets.values_list("pk", "name"))
    return render(request, "lab/job.html", {
        "job": job, "config_rows": sorted(flatten(job.config).items()), **charts.job_charts(job),
        "children": job.children.select_related("result", "dataset").order_by("pk"),
        "planned": [{**spec, "dataset_name": names.get(spec.get("dataset"), f"dataset {spec.get('dataset')}")}
                    for spec in job.evaluations or []],
        "waiting": services.waiting_reason(job), "result": result,
        "gallery_rounds": gallery.rounds(job.out_dir) if job.kind == Job.Kind.PRETRAIN else [],
        **(figures.result_figures(result.record) if result is not None else {})})


@require_GET
def job_gallery(request: HttpRequest, pk: int) -> HttpResponse:
    """A pretraining's clusters per round and space: size, purity, majority label and member clips (frames and the
    sound of the window the trainer used), a second round beside the first, and the round's 2-D feature map."""
    job = selectors.get_job(request.user, pk)
    available = gallery.rounds(job.out_dir)
    chosen = _gallery_choice(request.GET, available)
    shown = []
    for round_index in chosen["rounds"]:
        data = gallery.load(job.out_dir, round_index)
        if data is None:
            continue
        spaces = list(data["spaces"])
        space = chosen["space"] if chosen["space"] in spaces else (spaces[0] if spaces else "")
        try:
            shown.append({"round": round_index, "data": data, "space": space, "spaces": spaces,
                          "clusters": gallery.clusters(data, space, sort=chosen["sort"], view=chosen["view"]),
                          "map": gallery.map_svg(data, space, colour_by=chosen["colour"])})
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError, IndexError):
            log.warning("job %s: gallery round %s is damaged; not shown", job.pk, round_index)
    return render(request, "lab/gallery.html", {"job": job, "available": available, "shown": shown, **chosen,
                                                "sorts": gallery.SORTS, "views": gallery.VIEWS})


def _gallery_choice(params, available: list[int]) -> dict:
    """Which rounds (the one asked, else the last; and one beside it), space, order, members and map colour."""
    def pick(name: str, default: int | None) -> int | None:
        value = selectors.parse_id(params.get(name, "")) if params.get(name, "") != "0" else 0
        return value if value in available else default
    first = pick("round", available[-1] if available else None)
    beside = pick("beside", None)
    rounds = [r for r in (first, beside) if r is not None]
    return {"rounds": list(dict.fromkeys(rounds)), "round": first, "beside": beside,
            "space": str(params.get("space", ""))[:20],
            "sort": params.get("sort") if params.get("sort") in gallery.SORTS else "size",
            "view": params.get("view") if params.get("view") in gallery.VIEWS else "random",
            "colour": "label" if params.get("colour") == "label" else "cluster"}


@require_GET
def job_gallery_media(request: HttpRequest, pk: int, round_index: int, name: str) -> HttpResponse:
    """One frame strip or sound excerpt of a gallery, to members of the job's team only (another team's job is a
    404, as everywhere)."""
    job = selectors.get_job(request.user, pk)
    found = gallery.media_file(job.out_dir, round_index, name,
                               within=Path(settings.LAB_RUNS_DIR).resolve() / job.team.slug)
    if found is None:
        raise Http404("no such gallery file")
    path, content_type = found
    response = FileResponse(open(path, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


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
    """Up to comparison.MAX_RUNS pretraining runs side by side; a selection it refuses comes back with the reason."""
    ids = selectors.parse_ids(request.GET.getlist("ids") + [request.GET.get("id_list", "")])
    context = {"ids": ids, "candidates": comparison.candidates(request.user)}
    try:
        result = comparison.compare_runs(request.user, ids)
    except comparison.Refused as exc:
        return render(request, "lab/compare.html", context | {"refusal": str(exc)}, status=400)
    return render(request, "lab/compare.html", context | {
        "comparison": result, "jobs": result.jobs, "diff": result.diff,
        "mlflow_compare_url": result.mlflow_compare_url})


@require_GET
def job_curves(request: HttpRequest, pk: int) -> JsonResponse:
    """The job page's charts as SVG and MLflow's error text, which the page polls while the job is active."""
    job = selectors.get_job(request.user, pk)
    return JsonResponse({"status": job.status, "active": job.is_active, **charts.job_charts(job)})


@require_GET
def leaderboard(request: HttpRequest) -> HttpResponse:
    from xdc.variants import VARIANTS

    team = selectors.current_team(request)
    query = board_module.query_from(request.GET)
    board = board_module.build(team, **query) if team else None
    jobs_url = reverse("lab:job_list")
    team_jobs = f"{jobs_url}?team={quote(team.slug)}" if team else jobs_url  # a cell counts its board's team only
    return render(request, "lab/leaderboard.html", {
        "board": board, "rendered": board.rendered(team_jobs) if board else [], "team": team, "variants": list(VARIANTS),
        "datasets": team.datasets.all() if team else [], "query": query, "references": board_module.reference_table(),
        "reference_benchmarks": board_module.reference_benchmarks(), "exports": list(board_module.EXPORTS),
        "filters": request.GET.urlencode(), "jobs_url": jobs_url, "team_jobs": team_jobs})


@require_GET
def leaderboard_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The board of the page's filters and order, every row, as CSV, Markdown or LaTeX (booktabs)."""
    team = selectors.current_team(request)
    if team is None or fmt not in board_module.EXPORTS:
        raise Http404("no such export")
    render_text, content_type = board_module.EXPORTS[fmt]
    board = board_module.build(team, **{**board_module.query_from(request.GET), "page": 1}, page_rows=None)
    response = HttpResponse(render_text(board), content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="leaderboard-{team.slug}.{fmt}"'
    return response


@require_POST
def leaderboard_pin(request: HttpRequest) -> HttpResponse:
    team = selectors.current_team(request)
    if team is None:
        raise Http404("you are in no team")
    columns = {c.key for c in board_module.build(team, page_rows=None).columns}
    try:
        if request.POST.get("column", "") not in columns:
            raise services.LabError({"column": ["no such leaderboard column"]})
        services.pin_baseline(team, column=request.POST.get("column", ""), row=request.POST.get("row", ""))
    except services.LabError as exc:
        messages.error(request, " ".join(sum(exc.errors.values(), [])))
    return _back_to_board(request)


@require_POST
def leaderboard_reevaluate(request: HttpRequest) -> HttpResponse:
    """Queue the re-evaluations of a stale column under its protocol's latest version."""
    team = selectors.current_team(request)
    if team is None:
        raise Http404("you are in no team")
    board = board_module.build(team, page_rows=None)
    column = next((c for c in board.columns if c.key == request.POST.get("column")), None)
    try:
        if column is None:
            raise services.LabError({"column": ["no such leaderboard column"]})
        created = services.reevaluate_stale(request.user, team, column)
    except services.LabError as exc:
        messages.error(request, " ".join(sum(exc.errors.values(), [])))
    else:
        messages.success(request, f"queued {len(created)} evaluation{'s' if len(created) != 1 else ''} of "
                                  f"{column.name} under v{column.latest}" if created else
                                  f"every evaluation of {column.title} is already queued under v{column.latest}")
    return _back_to_board(request)


def _back_to_board(request: HttpRequest) -> HttpResponse:
    query = QueryDict(request.POST.get("filters", "")).urlencode()  # re-encoded: only a query, never a header
    return redirect(f"{reverse('lab:leaderboard')}?{query}")


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

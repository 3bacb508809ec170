"""Reads scoped to the teams a user belongs to. Another team's object is a 404, never a 403, so ids leak nothing."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from webapp.lab.models import Dataset, Job, Team


def user_teams(user) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).distinct()


def current_team(request) -> Team | None:
    """The team chosen in the session (switcher in the header), else the user's first team."""
    teams = user_teams(request.user)
    chosen = teams.filter(pk=request.session.get("team_id")).first() if request.session.get("team_id") else None
    return chosen or teams.first()


def team_for(user, slug: str | None) -> Team | None:
    """The named team if the user is in it (None otherwise); without a slug, the user's first team."""
    teams = user_teams(user)
    return teams.filter(slug=slug).first() if slug else teams.first()


def visible_jobs(user) -> QuerySet[Job]:
    return Job.objects.filter(team__in=user_teams(user)).select_related("team", "creator", "dataset", "parent")


def visible_datasets(user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team__in=user_teams(user)).select_related("team")


def get_job(user, pk: int) -> Job:
    try:
        return visible_jobs(user).get(pk=pk)
    except Job.DoesNotExist:
        raise Http404("no such job") from None


def get_dataset(user, pk: int) -> Dataset:
    try:
        return visible_datasets(user).get(pk=pk)
    except Dataset.DoesNotExist:
        raise Http404("no such dataset") from None


def filter_jobs(jobs: QuerySet[Job], *, status: str = "", variant: str = "", user: str = "", kind: str = "",
                ids: list[int] | None = None) -> QuerySet[Job]:
    if status:
        jobs = jobs.filter(status=status)
    if variant:
        jobs = jobs.filter(variant=variant)
    if user:
        jobs = jobs.filter(creator__username=user)
    if kind:
        jobs = jobs.filter(kind=kind)
    if ids:
        jobs = jobs.filter(pk__in=ids)
    return jobs


"""Reads scoped to the teams a user belongs to. Another team's object is a 404, never a 403, so ids leak nothing."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from webapp.lab.models import Dataset, Job, Team

ID_MAX = 2**63 - 1  # the largest key every database holds (SQLite and PostgreSQL bigint)


def parse_id(value) -> int | None:
    """A primary key from user input (query string, form, JSON): a positive integer or plain ASCII decimal that
    every database can hold; None for anything else ('²' passes str.isdigit(), 30 digits overflow SQLite)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= ID_MAX:
        return value
    return None


def parse_ids(values) -> list[int]:
    """Every valid id among `values` (strings or comma lists), in order, others dropped."""
    found = (parse_id(item.strip()) for value in values for item in str(value).split(","))
    return list(dict.fromkeys(i for i in found if i is not None))


def user_teams(user) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).distinct()


def current_team(request) -> Team | None:
    """The team chosen in the session (switcher in the header), else the user's first team."""
    teams = user_teams(request.user)
    team_id = parse_id(request.session.get("team_id"))
    chosen = teams.filter(pk=team_id).first() if team_id else None
    return chosen or teams.first()


def team_for(user, slug: str | None) -> Team | None:
    """The named team if the user is in it (None otherwise); without a slug, the user's first team."""
    teams = user_teams(user)
    if slug and (not isinstance(slug, str) or "\x00" in slug):
        return None
    return teams.filter(slug=slug).first() if slug else teams.first()


def visible_jobs(user) -> QuerySet[Job]:
    return Job.objects.filter(team__in=user_teams(user)).select_related("team", "creator", "dataset", "parent")


def visible_datasets(user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team__in=user_teams(user)).select_related("team", "prepared_from")


def get_job(user, pk: int) -> Job:
    job = visible_jobs(user).filter(pk=parse_id(pk)).first() if parse_id(pk) else None
    if job is None:
        raise Http404("no such job")
    return job


def get_dataset(user, pk: int) -> Dataset:
    dataset = visible_datasets(user).filter(pk=parse_id(pk)).first() if parse_id(pk) else None
    if dataset is None:
        raise Http404("no such dataset")
    return dataset


# The jobs list's filters and the column each one matches: `name` is a job's name or a sweep's (the jobs of one
# grid); `row` and `column` a leaderboard row key and column name (the jobs behind a row or a cell).
JOB_FILTERS = {"status": "status", "variant": "variant", "user": "creator__username", "kind": "kind", "name": "name",
               "row": "board_row", "column": "board_column", "version": "result__protocol_version",
               "team": "team__slug"}


def filter_jobs(jobs: QuerySet[Job], *, ids: list[int] | None = None, **filters: str) -> QuerySet[Job]:
    """The jobs matching every non-empty filter of JOB_FILTERS (and `ids`)."""
    chosen = {JOB_FILTERS[name]: value for name, value in filters.items() if value}
    if any("\x00" in value for value in chosen.values()):
        return jobs.none()  # no stored name holds a NUL, and PostgreSQL refuses one in a query
    jobs = jobs.filter(**chosen)
    return jobs.filter(pk__in=ids) if ids else jobs

"""Who may read what in MLflow: the lab's teams, mirrored into MLflow's basic-auth app.

A team deployment runs `mlflow server --app-name basic-auth` with `default_permission = NO_PERMISSIONS`
(deploy/mlflow-auth.ini). The lab and its workers sign in as MLflow's admin (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, which MLflow's own client reads); every lab user has an MLflow account of the same name
with READ on the experiments of the teams they belong to (`lab-<team slug>`) and nothing else, so another team's
experiments, runs, metrics and artifacts (checkpoints) answer 403 and are left out of every listing. A user takes a
password from the lab's MLflow page, shown once. The lab makes a new team's experiment when the team is saved (an
experiment a user made under that name beforehand is renamed away). Membership changes are mirrored when they are
saved, by the workers' watchdog every LAB_MLFLOW_SYNC_SECONDS and by `manage.py sync_mlflow_access`.

Without MLFLOW_TRACKING_USERNAME the deployment has no MLflow accounts (the demo: MLflow on loopback only) and
nothing here runs.
"""

from __future__ import annotations

import logging
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model

from webapp.lab.models import Team
from webapp.lab.services import LabError

log = logging.getLogger(__name__)

EXPERIMENT = "experiment"  # MLflow's resource type for a grant
READ = "READ"
NO_PERMISSIONS = "NO_PERMISSIONS"


def enabled() -> bool:
    """True when the lab signs in to an MLflow server that has accounts."""
    return bool(os.environ.get("MLFLOW_TRACKING_USERNAME")) and settings.MLFLOW_TRACKING_URI.startswith("http")


def sync_user(user, experiments: dict[str, str] | None = None) -> list[str]:
    """Give `user`'s MLflow account READ on their teams' experiments (created if none yet) and nothing on any other
    team's; the names of the experiments they may read. `experiments` (name -> id, every team's) is looked up here
    unless the caller has it. LabError when MLflow refuses or cannot be reached."""
    auth, client = _clients()
    try:
        _ensure_account(auth, user.username)
        mine = {team.mlflow_experiment for team in Team.objects.filter(members=user)} if user.is_active else set()
        if experiments is None or not mine <= experiments.keys():
            experiments = _team_experiments(client, create=mine)
        readable = []
        for name, experiment_id in experiments.items():
            current = auth.get_user_permission(user.username, EXPERIMENT, experiment_id).permission
            if name in mine:
                if current != READ:
                    _revoke(auth, user.username, experiment_id)
                    auth.grant_user_permission(user.username, EXPERIMENT, experiment_id, READ)
                readable.append(name)
            elif current != NO_PERMISSIONS:
                _revoke(auth, user.username, experiment_id)
        return sorted(readable)
    except LabError:
        raise
    except Exception as exc:
        raise LabError(f"MLflow at {settings.MLFLOW_TRACKING_URI} did not take the change: {_reason(exc)}") from exc


def issue_password(user) -> str:
    """Bring `user`'s MLflow account up to date and give it a new password, returned once (not stored by the lab)."""
    sync_user(user)
    password = secrets.token_urlsafe(18)
    auth, _ = _clients()
    try:
        auth.update_user_password(user.username, password)
    except Exception as exc:
        raise LabError(f"MLflow at {settings.MLFLOW_TRACKING_URI} did not take the password: {_reason(exc)}") from exc
    return password


def claim_experiment(team: Team) -> str:
    """Create a new team's experiment as the lab; its id. An experiment that already holds the name was made before
    the team existed, by a user squatting the name (its creator manages it) or by a deleted team of the same slug:
    it is renamed away, so neither its owner nor its runs ever become the new team's."""
    _, client = _clients()
    try:
        existing = client.get_experiment_by_name(team.mlflow_experiment)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                client.restore_experiment(existing.experiment_id)
            name = team.mlflow_experiment
            client.rename_experiment(existing.experiment_id, f"{name}-before-{existing.experiment_id}")
            log.warning("MLflow experiment %s existed before team %s; renamed away", name, team.slug)
        return client.create_experiment(team.mlflow_experiment)
    except Exception as exc:
        raise LabError(f"MLflow at {settings.MLFLOW_TRACKING_URI} did not take the change: {_reason(exc)}") from exc


def sync_all() -> tuple[int, list[str]]:
    """Mirror every lab user; the number brought up to date and one line per user that could not be."""
    try:  # every team's experiment, looked up once for all users (made for teams that have members)
        manned = {team.mlflow_experiment for team in Team.objects.filter(members__isnull=False)}
        experiments = _team_experiments(_clients()[1], create=manned)
    except Exception as exc:
        return 0, [f"MLflow at {settings.MLFLOW_TRACKING_URI} could not be read: {_reason(exc)}"]
    done, failed = 0, []
    for user in get_user_model().objects.order_by("pk"):
        try:
            sync_user(user, experiments)
            done += 1
        except LabError as exc:
            failed.append(f"{user.username}: {exc}")
    return done, failed


def remove_account(username: str) -> None:
    """Delete the MLflow account of a deleted lab user (nothing when there is none)."""
    from mlflow.exceptions import RestException

    auth, _ = _clients()
    if username == os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return
    try:
        auth.delete_user(username)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _clients():
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a page waits seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    return AuthServiceClient(settings.MLFLOW_TRACKING_URI), MlflowClient(settings.MLFLOW_TRACKING_URI)


def _ensure_account(auth, username: str) -> None:
    """Create the account with a password nobody knows (usable once the user takes one); refuse the lab's own
    account and any MLflow administrator, whose password and rights the lab must never change."""
    from mlflow.exceptions import RestException

    if username == os.environ.get("MLFLOW_TRACKING_USERNAME"):
        raise LabError(f"{username!r} is the lab's own MLflow account; give this person another user name")
    try:
        account = auth.get_user(username)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(username, secrets.token_urlsafe(24))
        return
    if account.is_admin:
        raise LabError(f"{username!r} is an MLflow administrator; the lab manages only its users' accounts")


def _team_experiments(client, *, create: set[str]) -> dict[str, str]:
    """Experiment ids of every team's experiment that exists, and of those in `create`, made if missing."""
    from mlflow.entities import ViewType

    names = {team.mlflow_experiment for team in Team.objects.all()}
    found = {}
    for name in sorted(names):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            found[name] = experiment.experiment_id
        elif name in create:
            found[name] = client.create_experiment(name)
    # Experiments of teams that no longer exist keep their runs: nobody but the admin reads them any more.
    for experiment in client.search_experiments(view_type=ViewType.ALL, filter_string="name LIKE 'lab-%'"):
        found.setdefault(experiment.name, experiment.experiment_id)
    return found


def _revoke(auth, username: str, experiment_id: str) -> None:
    from mlflow.exceptions import RestException

    try:
        auth.revoke_user_permission(username, EXPERIMENT, experiment_id)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__


def connect_signals() -> None:
    """Mirror membership, activation and deletion of users as they are saved (the admin, the shell), after the
    transaction commits; MLflow being away is logged and repaired by the next periodic sync."""
    from django.db import transaction
    from django.db.models.signals import post_delete, post_save

    from webapp.lab.models import Membership

    def later(user) -> None:
        if enabled():
            transaction.on_commit(lambda: _quietly(sync_user, user))

    def membership_changed(sender, instance, **kwargs) -> None:
        later(instance.user)

    def user_saved(sender, instance, update_fields=None, **kwargs) -> None:
        if update_fields is None or set(update_fields) != {"last_login"}:  # not at every log-in
            later(instance)

    def team_saved(sender, instance, created=False, **kwargs) -> None:
        if created and enabled():
            transaction.on_commit(lambda: _quietly(claim_experiment, instance))

    def user_deleted(sender, instance, **kwargs) -> None:
        if enabled():
            transaction.on_commit(lambda: _quietly(remove_account, instance.username))

    user_model = get_user_model()
    post_save.connect(membership_changed, sender=Membership, weak=False, dispatch_uid="mlflow-membership-saved")
    post_delete.connect(membership_changed, sender=Membership, weak=False, dispatch_uid="mlflow-membership-deleted")
    post_save.connect(team_saved, sender=Team, weak=False, dispatch_uid="mlflow-team-saved")
    post_save.connect(user_saved, sender=user_model, weak=False, dispatch_uid="mlflow-user-saved")
    post_delete.connect(user_deleted, sender=user_model, weak=False, dispatch_uid="mlflow-user-deleted")


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except Exception:
        log.warning("MLflow accounts not brought up to date (%s); the periodic sync will", action.__name__,
                    exc_info=True)

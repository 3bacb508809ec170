"""Requeues jobs whose worker vanished: a thread in every worker's main process sweeps every
`LAB_WATCHDOG_SECONDS` for running jobs without a heartbeat for `LAB_STALE_SECONDS`, and sends again queued jobs
whose message the broker never took; every `LAB_MLFLOW_SYNC_SECONDS` it also mirrors the teams into MLflow's accounts
(webapp.lab.mlflow_access), and a worker with a GPU set re-sends which queues it consumes (workers/gpus.py).

It lives in the main process, not in a task, so a sweep still runs while every pool slot is busy with a long job;
every worker sweeps, and `services.requeue_stale_jobs` is atomic per row, so sweeps never requeue a job twice.
A requeued job's new attempt resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings
from django.db import connection

from webapp.lab import services

log = logging.getLogger(__name__)
_stop = threading.Event()


def sweep() -> list[int]:
    """Requeue the stale jobs once, and send again the queued jobs and dataset listings whose message never reached
    the broker; the ids of the jobs requeued."""
    try:
        requeued = services.requeue_stale_jobs(timeout_s=settings.LAB_STALE_SECONDS)
        resent = services.resend_unsent(older_than_s=settings.LAB_RESEND_SECONDS)
        relisted = services.resend_listings(older_than_s=settings.LAB_RESEND_SECONDS)
    finally:
        connection.close()  # hold no connection between sweeps (the pool forks children from this process)
    if requeued:
        log.warning("requeued jobs %s: no heartbeat for %s s", requeued, settings.LAB_STALE_SECONDS)
    if resent:
        log.warning("sent jobs %s again: the broker had not taken their messages", resent)
    if relisted:
        log.warning("sent the listings of datasets %s again: the broker had not taken their messages", relisted)
    return requeued


def sync_mlflow_accounts() -> None:
    """Mirror the teams into MLflow's accounts (a membership change made while MLflow was away included)."""
    from webapp.lab import mlflow_access

    if not mlflow_access.enabled():
        return
    try:
        _, failed = mlflow_access.sync_all()
    finally:
        connection.close()
    for line in failed:
        log.warning("MLflow account not brought up to date: %s", line)


def _watch(hostname: str) -> None:
    from workers import gpus, presence

    synced_at = 0.0
    presence.announce(hostname)
    while not _stop.wait(settings.LAB_WATCHDOG_SECONDS):
        try:
            sweep()
        except Exception:
            log.exception("stale-job sweep failed; retrying in %ss", settings.LAB_WATCHDOG_SECONDS)
        gpus.follow_free_gpus(hostname)  # a worker with a GPU set: its queues follow its free GPUs
        presence.announce(hostname)  # which queues it reads now, for the site's "why does my job wait"
        if time.monotonic() - synced_at >= settings.LAB_MLFLOW_SYNC_SECONDS:
            synced_at = time.monotonic()
            try:
                sync_mlflow_accounts()
            except Exception:
                log.exception("MLflow account sync failed; retrying in %ss", settings.LAB_MLFLOW_SYNC_SECONDS)


@worker_ready.connect
def start_watchdog(sender=None, **_) -> None:
    from workers import presence

    _stop.clear()
    presence.track(sender)
    hostname = getattr(sender, "hostname", "")
    threading.Thread(target=_watch, args=(hostname,), name="stale-job-watchdog", daemon=True).start()


@worker_shutdown.connect
def stop_watchdog(sender=None, **_) -> None:
    from workers import presence

    _stop.set()
    presence.withdraw(getattr(sender, "hostname", ""))


@worker_shutting_down.connect
def pass_shutdown_on(**_) -> None:
    """A warm shutdown (SIGTERM) reaches the running job: it checkpoints and is requeued (workers/runner.py)."""
    from workers.runner import SHUTTING_DOWN

    SHUTTING_DOWN.set()

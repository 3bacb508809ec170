"""The stale-job watchdog that runs in every worker's main process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.workers.conftest import team_with_dataset
from webapp.lab import services
from webapp.lab.models import Job
from workers import watchdog


@pytest.fixture
def two_running_jobs(transactional_db, settings, django_user_model, tmp_path):
    settings.LAB_ENQUEUE = "none"
    user, team = team_with_dataset(django_user_model, settings, tmp_path, "team")
    config = {"rounds": 1}
    jobs = services.submit_jobs(user, team, "pretrain", [config, config], dataset=team.datasets.get(),
                                resources={"resource": "cpu"})
    for job in jobs:
        services.claim_job(job.pk, worker=f"w{job.pk}@host", task_id=f"t{job.pk}")
    return jobs


def test_it_requeues_only_the_job_whose_heartbeat_stopped(two_running_jobs, settings):
    settings.LAB_STALE_SECONDS = 60
    silent, alive = two_running_jobs
    Job.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))

    assert watchdog.sweep() == [silent.pk]
    assert watchdog.sweep() == []

    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses == {silent.pk: "queued", alive.pk: "running"}


def test_it_sweeps_from_a_thread_started_when_the_worker_is_ready(two_running_jobs, settings):
    settings.LAB_STALE_SECONDS = 60
    settings.LAB_WATCHDOG_SECONDS = 0.05
    silent, _ = two_running_jobs
    Job.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))

    watchdog.start_watchdog()
    try:
        for _ in range(100):
            if Job.objects.get(pk=silent.pk).status == "queued":
                break
            watchdog._stop.wait(0.05)
    finally:
        watchdog.stop_watchdog()
    assert Job.objects.get(pk=silent.pk).status == "queued"


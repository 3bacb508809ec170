"""Faults between the lab and its broker and workers, against a real Redis: a submission while the broker is down
is recorded and answered honestly (202), and the sweep sends it once the broker is back; a job that keeps killing
its worker fails with the reason instead of taking down every worker in turn."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from tests.workers.conftest import team_with_dataset
from webapp.lab import services
from webapp.lab.models import ApiToken, Job

pytestmark = pytest.mark.django_db(transaction=True)

DOWN = "redis://127.0.0.1:9/0"  # nothing listens on the discard port: connections are refused at once


@pytest.fixture
def team(django_user_model, settings, tmp_path):
    return team_with_dataset(django_user_model, settings, tmp_path, "delivery")


@pytest.fixture
def broker(private_broker):
    return private_broker


def messages(url: str) -> int:
    client = redis.Redis.from_url(url)
    return sum(client.llen(key) for key in client.keys("cpu*") if client.type(key) == b"list")


def test_a_submission_while_the_broker_is_down_is_202_and_is_sent_when_it_is_back(client, team, broker):
    from tests.conftest import _use_broker

    user, _ = team
    app, url = broker
    _, key = ApiToken.issue(user)
    _use_broker(app, DOWN)
    body = {"config": {"rounds": 1}, "dataset": "data", "resource": "cpu", "gpus": 0}
    response = client.post("/api/jobs", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 202, response.content
    assert "broker is unreachable" in response.json()["warning"]
    job = Job.objects.get()
    assert job.status == "queued" and job.message_sent_at is None

    assert services.resend_unsent(older_than_s=0) == []  # still down: nothing sent, nothing raised
    _use_broker(app, url)
    assert services.resend_unsent(older_than_s=3600) == []  # too recent: its own on_commit may still be sending
    assert services.resend_unsent(older_than_s=0) == [job.pk]
    job.refresh_from_db()
    assert job.message_sent_at is not None and job.celery_task_id
    assert messages(url) == 1
    assert services.resend_unsent(older_than_s=0) == []  # sent once, not again


def test_a_dataset_registered_while_the_broker_is_down_is_listed_once_it_is_back(team, broker, tmp_path):
    from tests.conftest import _use_broker

    user, group = team
    app, url = broker
    _use_broker(app, DOWN)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "clip.mp4").write_bytes(b"")
    dataset = services.register_dataset(team=group, name="more", layout="folder", path=str(tmp_path / "more"),
                                        user=user, background=True)
    dataset.refresh_from_db()
    assert dataset.status == "listing" and dataset.listing_sent_at is None  # recorded, nothing raised
    assert services.resend_listings(older_than_s=0) == []  # still down
    _use_broker(app, url)
    assert services.resend_listings(older_than_s=0) == [dataset.pk]
    assert messages(url) == 1
    assert services.resend_listings(older_than_s=0) == []  # sent once, not again


def test_a_retry_while_the_broker_is_down_is_sent_later(team, broker):
    from tests.conftest import _use_broker

    user, group = team
    app, url = broker
    _use_broker(app, url)
    [job] = services.submit_jobs(user, group, "pretrain", [{"rounds": 1}], dataset=group.datasets.get(),
                                 resources={"resource": "cpu"})
    services.fail_job(job.pk, error="x")
    _use_broker(app, DOWN)
    services.retry_job(job)
    job.refresh_from_db()
    assert job.status == "queued" and job.message_sent_at is None
    _use_broker(app, url)
    assert services.resend_unsent(older_than_s=0) == [job.pk]
    assert messages(url) == 2  # the first submission's and the retry's


def test_a_job_that_keeps_killing_its_worker_fails_with_the_reason(team, settings):
    settings.LAB_ENQUEUE = "none"
    settings.LAB_MAX_WORKER_LOSSES = 3
    user, group = team
    [job] = services.submit_jobs(user, group, "pretrain", [{"rounds": 1}], dataset=group.datasets.get(),
                                 resources={"resource": "cpu"})
    for loss in (1, 2, 3):
        services.claim_job(job.pk, worker="w@host", task_id=f"t{loss}")
        services.heartbeat(job.pk, progress=0.1, eta=None, stage="round 1/1: extracting features")
        Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        requeued = services.requeue_stale_jobs(timeout_s=60)
        job.refresh_from_db()
        assert requeued == ([job.pk] if loss < 3 else [])
    assert job.status == "failed" and job.worker_losses == 3
    assert job.error.startswith("worker lost 3 times during round 1/1: extracting features")
    assert "requeued (worker lost 2 times; starts again in 60 s" in job.log_tail
    services.retry_job(job)
    job.refresh_from_db()
    assert job.status == "queued" and job.worker_losses == 0  # a person's retry starts the count afresh

"""Workers announce the queues they consume in the broker, so the site can say why a queued job waits."""

from __future__ import annotations

import time

import pytest

from tests.conftest import _use_broker
from tests.workers.conftest import team_with_dataset
from webapp.lab import services
from webapp.lab.models import Job
from workers import presence


@pytest.fixture
def broker(private_broker):
    app, url = private_broker
    _use_broker(app, url)
    return url


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("the condition did not come true in time")


def test_a_worker_announces_its_queues_and_withdraws_them_when_it_stops(start_worker, broker):
    from tests.conftest import stop_process_group

    process, _ = start_worker("present")
    served = wait_for(presence.served_queues)
    assert {"cpu", "gpu1"} <= served
    stop_process_group(process)
    wait_for(lambda: not presence.served_queues())


def test_a_queued_job_says_how_many_are_ahead_and_that_no_worker_serves_its_queue(start_worker, broker, settings,
                                                                                   django_user_model, tmp_path):
    start_worker("cpu-only", QUEUES="cpu")
    wait_for(presence.served_queues)
    settings.LAB_ENQUEUE = "celery"
    user, team = team_with_dataset(django_user_model, settings, tmp_path, "waits")
    dataset = team.datasets.get()
    first, second = services.submit_jobs(user, team, "pretrain", [{"rounds": 1}, {"rounds": 1, "seed": 1}],
                                         dataset=dataset, resources={"resource": "gpu", "gpus": 4}, priority=9)
    second = Job.objects.get(pk=second.pk)
    reason = services.waiting_reason(second)
    assert reason.startswith("1 job ahead of it on queue gpu4") and "no worker serves queue gpu4" in reason
    assert "cpu" in reason.rsplit("queues served: ", 1)[1]

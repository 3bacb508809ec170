"""A worker's SIGTERM (a deploy restart) reaches its running job: the job checkpoints, goes back to the queue at
once and resumes on the next worker in the same MLflow run. A worker's SIGKILL leaves no trainer behind. Real workers
(`deploy/worker.sh`) of their own, on a broker database no other test's worker reads."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import _use_broker, running_in

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(private_broker):
    app, url = private_broker
    _use_broker(app, url)
    return url


def test_sigterm_checkpoints_the_job_and_requeues_it_to_resume_elsewhere(start_worker, own_jobs, videos,
                                                                          mlflow_server):
    first, log = start_worker("first")
    job = own_jobs.submit(videos, "rounds=12")
    checkpoints = Path(job.out_dir, "checkpoints")
    own_jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()))

    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=120)
    job.refresh_from_db()
    assert job.status == "queued" and job.stage == "requeued: worker shutting down", log.read_text()[-2000:]
    assert job.message_sent_at is not None and job.worker_losses == 0
    assert "is shutting down: checkpointed, back in the queue" in job.log_tail
    assert Path(job.out_dir, "final.pt").exists() is False  # it did not wait for the 12 rounds

    start_worker("second")
    job = own_jobs.wait(job, "succeeded", timeout=400)
    assert job.attempt == 2 and "attempt 2 resumed from the checkpoint" in job.log_tail
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert len(runs) == 1  # the same MLflow run continues


def test_a_killed_worker_leaves_no_trainer_holding_its_device(start_worker, own_jobs, videos):
    worker, log = start_worker("killed")
    job = own_jobs.submit(videos, "rounds=50", "data.num_workers=1", resources={"resource": "cpu", "cpu_ranks": 2})
    job = own_jobs.wait(job, "running", until=lambda j: j.progress > 0)
    attempt = Path(job.out_dir, "attempts", "1")
    assert len(running_in(attempt)) >= 3  # torchrun's agent and two ranks

    os.kill(worker.pid, signal.SIGKILL)  # worker.sh execs the worker: this is the Celery process itself
    worker.wait()
    deadline = time.monotonic() + 30
    while running_in(attempt) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running_in(attempt), log.read_text()[-2000:]

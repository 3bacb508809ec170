"""A worker's SIGTERM (a deploy restart) reaches its running job: the job checkpoints, goes back to the queue at
once and resumes on the next worker in the same MLflow run. Real workers (`deploy/worker.sh`) of their own, on a
broker database no other test's worker reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, _database_url, _use_broker, _wait_until, stop_process_group

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(private_broker):
    app, url = private_broker
    _use_broker(app, url)
    return url


@pytest.fixture
def start_worker(broker, mlflow_server, transactional_db, settings, tmp_path, tmp_path_factory):
    from django.db import connections

    settings.LAB_RUNS_DIR = tmp_path / "runs"
    settings.LAB_DATA_ROOTS = [tmp_path_factory.getbasetemp().resolve()]
    settings.MLFLOW_TRACKING_URI = mlflow_server
    started = []

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        env = {**os.environ, "DATABASE_URL": _database_url(connections["default"].settings_dict),
               "CELERY_BROKER_URL": broker, "MLFLOW_TRACKING_URI": mlflow_server,
               "LAB_RUNS_DIR": str(tmp_path / "runs"), "LAB_VAR_DIR": str(tmp_path / "var"),
               "XDC_CACHE": str(tmp_path / "cache"), "LAB_HEARTBEAT_SECONDS": "1", "LAB_WATCHDOG_SECONDS": "3600",
               "CELERY": str(Path(sys.executable).with_name("celery"))}
        log = tmp_path / f"{name}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(["bash", str(REPO / "deploy" / "worker.sh"), "-n", f"{name}@%h"], cwd=REPO,
                                       env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        _wait_until(lambda: " ready." in log.read_text() or process.poll() is not None, name)
        return process, log

    yield start
    for process in started:
        stop_process_group(process)


class Logs:
    """What `Jobs.wait` shows when a job does not reach its state: these workers' logs."""

    def __init__(self, folder: Path):
        self.folder = folder

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(log.read_text(errors="replace")[-chars:] for log in sorted(self.folder.glob("*.log")))


@pytest.fixture
def jobs(start_worker, django_user_model, tmp_path):
    from webapp.lab.models import Membership, Team
    from tests.workers.conftest import Jobs

    user = django_user_model.objects.create_user("ida")
    team = Team.objects.create(name="Restarts", slug="restarts")
    Membership.objects.create(user=user, team=team)
    return Jobs(Logs(tmp_path), (user, team))


def test_sigterm_checkpoints_the_job_and_requeues_it_to_resume_elsewhere(start_worker, jobs, videos,
                                                                          mlflow_server):
    first, log = start_worker("first")
    job = jobs.submit(videos, "rounds=12")
    checkpoints = Path(job.out_dir, "checkpoints")
    jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()))

    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=120)
    job.refresh_from_db()
    assert job.status == "queued" and job.stage == "requeued: worker shutting down", log.read_text()[-2000:]
    assert job.message_sent_at is not None and job.worker_losses == 0
    assert "is shutting down: checkpointed, back in the queue" in job.log_tail
    assert Path(job.out_dir, "final.pt").exists() is False  # it did not wait for the 12 rounds

    start_worker("second")
    job = jobs.wait(job, "succeeded", timeout=400)
    assert job.attempt == 2 and "attempt 2 resumed from the checkpoint" in job.log_tail
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert len(runs) == 1  # the same MLflow run continues

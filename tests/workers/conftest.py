"""Fixtures for the worker tests: a team member, a small dataset, and job helpers. The worker itself, the broker and
the shared test database are `lab_worker`/`lab` in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO, _database_url, _wait_until, stop_process_group
from xdc.config import load_config
from xdc.data.synthetic import make_synthetic

JOB_TIMEOUT = 180.0


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """8 H.264/AAC videos of 4 classes, 2 s each: a tiny pretraining takes seconds on a CPU."""
    root = tmp_path_factory.mktemp("worker-videos")
    make_synthetic(root, videos=8, classes=4, seed=3, duration=2.0, layouts=False)
    return root


@pytest.fixture
def private_broker(lab_broker, settings):
    """(app, url): the Celery app on the database below the session's of the test Redis (14 beside 15), flushed, which no session worker reads; the app
    goes back to its broker afterwards. A test chooses when the app uses it (`_use_broker`)."""
    from tests.conftest import _use_broker
    from workers.celery import app

    base, db = lab_broker.rsplit("/", 1)
    url = f"{base}/{int(db) - 1}"
    redis.Redis.from_url(url).flushdb()
    settings.LAB_ENQUEUE = "celery"
    previous = app.conf.broker_url
    yield app, url
    _use_broker(app, previous)


def team_with_dataset(user_model, settings, tmp_path: Path, slug: str):
    """(user, team) with one registered `folder` dataset of one empty file under tmp_path (registration lists
    files; nothing here decodes them), runs and data roots under tmp_path."""
    from webapp.lab import services
    from webapp.lab.models import Membership, Team

    settings.LAB_RUNS_DIR = tmp_path / "runs"
    settings.LAB_DATA_ROOTS = [tmp_path.resolve()]
    user = user_model.objects.create_user(f"{slug}-user")
    team = Team.objects.create(name=slug.title(), slug=slug)
    Membership.objects.create(user=user, team=team)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.mp4").write_bytes(b"")
    services.register_dataset(team=team, name="data", layout="folder", path=str(tmp_path / "data"))
    return user, team


@pytest.fixture
def member(lab, django_user_model):
    from webapp.lab.models import Membership, Team

    user = django_user_model.objects.create_user("ada", password="pw-ada-12345")
    team = Team.objects.create(name="Vision", slug="vision")
    Membership.objects.create(user=user, team=team)
    return user, team


@pytest.fixture
def jobs(lab, member) -> Jobs:
    return Jobs(lab, member)


class Jobs:
    """Submit tiny pretrainings as the `member`, and wait for their rows to reach a state."""

    def __init__(self, lab, member):
        self.lab = lab
        self.user, self.team = member

    @staticmethod
    def tiny_config(data: Path, *overrides: str) -> dict:
        return load_config(preset="tiny", base={"data": {"path": str(data)}}, overrides=list(overrides)).to_dict()

    def submit(self, data: Path, *overrides: str, resources: dict | None = None):
        """A pretraining on `data` (a CPU job unless `resources` say otherwise), registered as a dataset of the
        member's team first if it is not one yet."""
        from webapp.lab import services
        from webapp.lab.models import Dataset

        dataset = Dataset.objects.filter(team=self.team, path=str(data.resolve())).first() or \
            services.register_dataset(team=self.team, name=data.name, layout="folder", path=str(data), user=self.user)
        [job] = services.submit_jobs(self.user, self.team, "pretrain", [self.tiny_config(data, *overrides)],
                                     dataset=dataset, resources=resources or {"resource": "cpu"})
        return job

    def wait(self, job, *statuses: str, until=None, timeout: float = JOB_TIMEOUT):
        """Poll the row until its status is one of `statuses` (and `until(job)` holds); fail with the worker log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status in statuses and (until is None or until(job)):
                return job
            time.sleep(0.3)
        pytest.fail(f"job #{job.pk} is {job.status} ({job.stage!r}, error {job.error!r}) after {timeout:.0f} s, "
                    f"not {'/'.join(statuses)}\n--- worker log ---\n{self.lab.log_tail()}")


# -- workers of a test's own, on the broker URL its module's `broker` fixture gives -------------------------------


@pytest.fixture
def start_worker(broker, mlflow_server, transactional_db, settings, tmp_path, tmp_path_factory):
    """start(name, **env) -> (process, log): a real worker (`deploy/worker.sh`, with `env` added) on `broker`, sharing
    the test database and `mlflow_server`; every one started is stopped after the test."""
    from django.db import connections

    settings.LAB_RUNS_DIR = tmp_path / "runs"
    settings.LAB_DATA_ROOTS = [tmp_path_factory.getbasetemp().resolve()]
    settings.MLFLOW_TRACKING_URI = mlflow_server
    started = []

    def start(name: str, **extra_env: str) -> tuple[subprocess.Popen, Path]:
        env = {**os.environ, "DATABASE_URL": _database_url(connections["default"].settings_dict),
               "CELERY_BROKER_URL": broker, "MLFLOW_TRACKING_URI": mlflow_server,
               "LAB_RUNS_DIR": str(tmp_path / "runs"), "LAB_VAR_DIR": str(tmp_path / "var"),
               "XDC_CACHE": str(tmp_path / "cache"), "LAB_HEARTBEAT_SECONDS": "1", "LAB_WATCHDOG_SECONDS": "3600",
               "CELERY": str(Path(sys.executable).with_name("celery")),
               "LAB_DATA_ROOTS": str(tmp_path_factory.getbasetemp().resolve()), **extra_env}
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
def own_jobs(start_worker, django_user_model, tmp_path):
    """Jobs of a team of their own for the workers `start_worker` starts (on the test module's `broker`)."""
    from webapp.lab.models import Membership, Team

    user = django_user_model.objects.create_user("ida")
    team = Team.objects.create(name="Restarts", slug="restarts")
    Membership.objects.create(user=user, team=team)
    return Jobs(Logs(tmp_path), (user, team))

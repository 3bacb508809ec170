"""Redis with an append-only file, killed (SIGKILL) and restarted on the same folder, loses no job and runs none
twice: a queued job's message survives the kill, and a job running through a broker outage finishes once, in one
MLflow run, whether the outage cut its consumer or only the acknowledgement of its message. A private redis-server and real workers (`deploy/worker.sh`) of their own."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import redis
from mlflow.tracking import MlflowClient

from tests.conftest import _free_port, _use_broker, _wait_until

pytestmark = pytest.mark.slow


class AofRedis:
    """redis-server with `appendonly yes` and `appendfsync always` in its own folder and port; `kill` is SIGKILL."""

    def __init__(self, folder, port: int):
        self.folder, self.port, self.process = folder, port, None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.folder)], stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        _wait_until(lambda: redis.Redis.from_url(self.url).ping(), "redis-server", timeout=20,
                    errors=(redis.exceptions.ConnectionError,))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def messages(self, queue: str) -> int:
        """Messages waiting in `queue` (Celery keeps one Redis list per priority step of it)."""
        client = redis.Redis.from_url(self.url)
        return sum(client.llen(key) for key in client.keys(f"{queue}*") if client.type(key) == b"list")


@pytest.fixture
def aof_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server to start a Redis of its own")
    server = AofRedis(tmp_path / "redis", _free_port())
    server.folder.mkdir()
    server.start()
    yield server
    if server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=20)


@pytest.fixture
def broker(aof_redis):
    from workers.celery import app

    previous = app.conf.broker_url
    _use_broker(app, aof_redis.url)
    yield aof_redis.url
    _use_broker(app, previous)


def test_a_queued_job_survives_a_killed_broker_and_runs_once(aof_redis, broker, settings, start_worker, own_jobs,
                                                             videos):
    settings.LAB_ENQUEUE = "celery"
    job = own_jobs.submit(videos)
    job.refresh_from_db()
    assert job.message_sent_at is not None and aof_redis.messages("cpu") == 1

    aof_redis.kill()  # no worker has taken it yet
    aof_redis.start()
    assert aof_redis.messages("cpu") == 1  # replayed from the append-only file

    start_worker("after-restart")
    job = own_jobs.wait(job, "succeeded")
    assert job.attempt == 1


def test_a_job_running_through_a_broker_outage_finishes_once_in_one_run(aof_redis, broker, settings, start_worker,
                                                                        own_jobs, videos, mlflow_server):
    settings.LAB_ENQUEUE = "celery"
    _, log = start_worker("through-outage")
    job = own_jobs.submit(videos, "rounds=6")
    own_jobs.wait(job, "running", until=lambda j: j.progress > 0)

    aof_redis.kill()
    time.sleep(5)  # the worker loses its broker connection while the job trains
    aof_redis.start()

    job = own_jobs.wait(job, "succeeded", timeout=400)
    # The outage reached the worker: its consumer lost the connection, or the job ended while Redis was down and
    # its message could not be acknowledged (it stays in Redis and, handed out again, finds nothing to claim).
    text = log.read_text()
    assert "Connection to broker lost" in text or "Couldn't ack" in text, text[-3000:]
    assert job.attempt == 1 and job.worker_losses == 0
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    time.sleep(3)
    job.refresh_from_db()
    assert (job.status, job.attempt) == ("succeeded", 1)

"""Shared fixtures: a generated dataset of real media files, an isolated index cache, and a real MLflow server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from xdc.data.synthetic import make_synthetic


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDC_CACHE", str(tmp_path_factory.getbasetemp() / "xdc-cache"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """24 H.264/AAC videos of 4 classes (2 s each), with UCF101 and ESC-50 copies."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, videos=24, classes=4, seed=0, duration=2.0)
    return root


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """A SQLite test database in a file rather than in memory, so the Celery workers and web servers that
    tests/workers and tests/e2e start as subprocesses open the same database as the test process."""
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        settings_dict.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on loopback with a SQLite store; yields its tracking URI."""
    root = tmp_path_factory.mktemp("mlflow")
    uri, process = start_mlflow(root, _free_port())
    try:
        yield uri
    finally:
        stop_mlflow(process)


def start_mlflow(root: Path, port: int, *, app_name: str | None = None,
                 env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """`mlflow server` on 127.0.0.1:`port` with its SQLite store and artifacts under `root` (a restart on the same
    root and port continues where it stopped), run from `root`, with `--app-name` and more environment if given;
    once healthy, its URI and process."""
    mlflow = Path(sys.executable).with_name("mlflow")
    app = ["--app-name", app_name] if app_name else []
    with open(root / "server.log", "a") as log:
        process = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *app,
             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": "", **(env or {})},
            cwd=root, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    _wait_healthy(uri, process, root / "server.log")
    return uri, process


def stop_mlflow(process: subprocess.Popen) -> None:
    """Stop the server and the gunicorn/uvicorn workers it started."""
    stop_process_group(process, timeout=20)


def _wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not become healthy: {log.read_text()[-2000:]}")


# -- the platform's processes: a broker and one Celery worker for the session (tests/workers, tests/e2e) ---------

REPO = Path(__file__).resolve().parent.parent
# Two test sessions side by side (two checkouts, or helpers) take other databases: XDC_TEST_REDIS_DB=13 uses 13 and
# 12 (the private broker is the one below), so neither flushes the other's queues.
TEST_REDIS_DB = int(os.environ.get("XDC_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session")
def lab_broker(tmp_path_factory) -> str:
    """A Redis broker URL: database 15 of the local Redis (flushed) when it answers, else a private redis-server."""
    import redis

    url = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.exceptions.ConnectionError:
        url = None
    if url:
        yield url
        return
    if not shutil.which("redis-server"):
        pytest.skip("needs Redis: none answers on 127.0.0.1:6379 and redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/{TEST_REDIS_DB}"
    try:
        _wait_until(lambda: redis.Redis.from_url(url).ping(), "redis-server", timeout=20,
                    errors=(redis.exceptions.ConnectionError,))
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@dataclass
class LabWorker:
    env: dict[str, str]
    log: Path
    runs_dir: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def lab_worker(django_db_setup, lab_broker, mlflow_server, tmp_path_factory) -> LabWorker:
    """`deploy/worker.sh` (a solo-pool Celery worker on queues cpu and gpu) sharing the test database, on the test
    broker, logging to the `mlflow_server`. Heartbeats every second; the stale-job watchdog is left to the tests."""
    from django.db import connections

    root = tmp_path_factory.mktemp("worker")
    env = {**os.environ, "DATABASE_URL": _database_url(connections["default"].settings_dict),
           "CELERY_BROKER_URL": lab_broker, "MLFLOW_TRACKING_URI": mlflow_server, "LAB_RUNS_DIR": str(root / "runs"),
           "LAB_VAR_DIR": str(root / "var"), "XDC_CACHE": str(root / "xdc-cache"), "LAB_HEARTBEAT_SECONDS": "1",
           "LAB_WATCHDOG_SECONDS": "3600", "CELERY": str(Path(sys.executable).with_name("celery")),
           "LAB_DATA_ROOTS": str(tmp_path_factory.getbasetemp().resolve())}  # as the `lab` fixture's site has
    log_path = root / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(["bash", str(REPO / "deploy" / "worker.sh")], cwd=REPO,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = LabWorker(env=env, log=log_path, runs_dir=root / "runs")
    try:
        _wait_until(lambda: " ready." in log_path.read_text() or process.poll() is not None, "celery worker")
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited: {worker.log_tail()}")
        yield worker
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the group a process leads (it was started with start_new_session), SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def running_in(folder: Path) -> list[int]:
    """The live processes whose command line names the attempt folder: the agent, the ranks and what they forked
    (a zombie has ended: only its parent's wait is missing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder).encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


def _database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def _wait_until(condition, what: str, *, timeout: float = 120.0, errors: tuple = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except errors:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


@pytest.fixture
def lab(lab_worker, lab_broker, settings, transactional_db, tmp_path_factory) -> LabWorker:
    """Jobs submitted in this test go to `lab_worker` through Celery; committed rows, so the worker sees them."""
    from workers.celery import app

    settings.LAB_ENQUEUE = "celery"
    settings.LAB_RUNS_DIR = lab_worker.runs_dir
    settings.LAB_DATA_ROOTS = [tmp_path_factory.getbasetemp().resolve()]
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_UI_URL = lab_worker.env["MLFLOW_TRACKING_URI"]
    previous = app.conf.broker_url
    _use_broker(app, lab_broker)
    yield lab_worker
    _use_broker(app, previous)


def _use_broker(app, url: str) -> None:
    app.conf.broker_url = url
    app._after_fork()  # drops the app's connection and producer pools, so the next message goes to `url`


# -- a real SLURM cluster of two nodes on loopback (deploy/slurm_loopback.py) -----------------------------------------------


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The loopback cluster, up for the session; skipped with the reason only where slurm-wlm or munge is missing
    (deploy/system-packages.sh installs them)."""
    from deploy.slurm_loopback import LoopbackCluster, missing

    if missing():
        pytest.skip(f"needs slurm-wlm and munge: {', '.join(missing())} not found (deploy/system-packages.sh)")
    cluster = LoopbackCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

"""Experiment tracking behind a small interface: MLflow for real runs, an in-memory tracker for tests.

Only rank 0 of a distributed job holds a real tracker. Params are flattened and truncated; metrics are buffered and
sent in batches; a known run id continues the same run (resume); a run ends FINISHED, FAILED (with the reason as a
tag) or KILLED (stopped on request, resumable).

With a spool (`MLflowTracker.open_spool(folder)`, which the trainer opens next to its checkpoints) nothing logged
is lost and tracking never blocks training: every param, metric, tag and artifact is appended to
`folder/ops.jsonl` first, and a background thread sends the log to MLflow in order, retrying through an outage of
any length; `sent.json` says how far MLflow has it. A resumed run sends what the killed attempt could not, and
skips the metrics of steps it already logged, so its history holds one value per step, as an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from xdc.errors import XDCError

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
FLUSH_SECONDS = 10.0
OPS_PER_SEND = 200  # spool lines per attempt to send (each a few metrics)
RETRY_SECONDS = (1, 2, 5, 10, 30)  # waits between attempts while MLflow is away
FINISH_WAIT_SECONDS = float(os.environ.get("XDC_TRACKING_FINISH_WAIT", "300"))


class TrackingError(XDCError):
    """MLflow could not be reached when the run ended; what it lacks waits in the spool for the next attempt."""


class Tracker(Protocol):
    run_id: str | None

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str = "") -> None: ...  # a file, or a folder and its files
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str, *, error: str = "") -> None: ...


class NullTracker:
    """Keeps everything in memory, so tests can read what a run logged."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.params: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: list[str] = []
        self.tags: dict[str, str] = {}
        self.status = ""
        self.starts = 0

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str:
        self.starts += 1
        self.run_id = run_id or f"memory-{os.getpid()}-{time.time_ns()}"
        self.tags.update(tags)
        self.status = "RUNNING"
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update({k: _param_value(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def log_artifact(self, path: Path, artifact_path: str = "") -> None:
        path = Path(path)
        if path.is_dir():  # as MLflow's log_artifacts: the folder's files under artifact_path, laid out as they are
            self.artifacts += [f"{artifact_path}/{p.relative_to(path).as_posix()}".lstrip("/")
                               for p in sorted(path.rglob("*")) if p.is_file()]
            return
        self.artifacts.append(f"{artifact_path}/{path.name}".lstrip("/"))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def finish(self, status: str, *, error: str = "") -> None:
        self.status = status
        if error:
            self.tags["error"] = error


class MLflowTracker:
    """Logs to an MLflow tracking server (or local store) through MlflowClient; no global mlflow state is used, so
    several trackers can live in one process (the platform's workers). `tags` are added to every run it starts or
    resumes (the platform's job id, user and team)."""

    def __init__(self, tracking_uri: str | None = None, *, tags: dict[str, str] | None = None):
        self._uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self._client = None
        self.extra_tags = dict(tags or {})
        self.run_id: str | None = None
        self._buffer: list = []
        self._last_flush = time.monotonic()
        self.spool: Spool | None = None
        self._sender: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._abandoned = threading.Event()  # a finish gave up waiting: the next attempt sends the rest
        self.last_error = ""

    @property
    def client(self):
        """Created on first use: a default local store (./mlflow.db) must not appear when input errors stop a run
        before it starts."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._uri)
        return self._client

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def open_spool(self, folder: Path) -> None:
        """Log through a durable spool in `folder` from now on (see the module docstring)."""
        self.spool = Spool(Path(folder))

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str:
        tags = {**tags, **self.extra_tags}
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            experiment_id = self._experiment_id(experiment)
            self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=run_name or None).info.run_id
        if self.spool is not None:
            self._sender = threading.Thread(target=self._send_loop, name=f"mlflow-sender-{self.run_id}",
                                            daemon=True)
            self._sender.start()
        self.set_tags(tags)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        values = {key: _param_value(value) for key, value in params.items()}
        if self.spool is not None:
            self.spool.append({"op": "params", "values": values})
            return
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in values.items()]
        for begin in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[begin:begin + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        now = int(time.time() * 1000)
        if self.spool is not None:
            fresh = {key: float(value) for key, value in metrics.items() if step > self.spool.logged.get(key, -1)}
            if fresh:  # a resumed run redoing a step it logged before keeps the first value
                self.spool.append({"op": "metrics", "step": step, "time": now, "values": fresh})
                self.spool.logged.update(dict.fromkeys(fresh, step))
            if time.monotonic() - self._last_flush > FLUSH_SECONDS:
                self.flush()
            return
        from mlflow.entities import Metric

        self._buffer.extend(Metric(key, float(value), now, step) for key, value in metrics.items())
        if len(self._buffer) >= METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send what is buffered: with a spool, wake the sender (never blocks); without, send now."""
        self._last_flush = time.monotonic()
        if self.spool is not None:
            self._wake.set()
            return
        while self._buffer:
            batch, self._buffer = self._buffer[:METRICS_PER_BATCH], self._buffer[METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str = "") -> None:
        if self.spool is not None:
            self.spool.append({"op": "artifact", "path": str(path), "artifact_path": artifact_path})
            self._wake.set()
            return
        _upload(self.client, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not tags:
            return
        if self.spool is not None:
            self.spool.append({"op": "tags", "values": {k: str(v) for k, v in tags.items()}})
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str, *, error: str = "") -> None:
        """End the run. With a spool, first wait (at most XDC_TRACKING_FINISH_WAIT seconds, 300) until MLflow holds
        everything; TrackingError if it stays away: the run is left for the next attempt to end."""
        if error:
            self.set_tags({"error": error[:5000]})
        if self.spool is None:
            self.flush()
            self.client.set_terminated(self.run_id, status=status)
            return
        self._drain()
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise self._unreachable(0) from None

    def _drain(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(FINISH_WAIT_SECONDS)
        waiting = self.spool.unsent()
        if waiting:
            self._abandoned.set()
            raise self._unreachable(waiting)

    def _unreachable(self, waiting: int) -> TrackingError:
        return TrackingError(f"MLflow at {self._uri or 'the default store'} is unreachable ({self.last_error}); "
                             f"{waiting} tracking records wait in {self.spool.folder} and are sent when the run is "
                             "resumed")

    # -- the sender thread ---------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        failures = 0
        while not self._abandoned.is_set():
            ops, end = self.spool.pending(OPS_PER_SEND)
            if not ops:
                if self._closing.is_set():
                    return
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
                continue
            try:
                self._send(ops)
            except Exception as exc:  # an outage: keep everything, wait, try again; training goes on meanwhile
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                wait = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("MLflow unreachable (%s); retrying in %s s", self.last_error, wait)
                self._abandoned.wait(wait)
                continue
            failures = 0
            self.spool.mark_sent(end)

    def _send(self, ops: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(key, value, op["time"], op["step"]) for op in ops if op["op"] == "metrics"
                   for key, value in op["values"].items()]
        for begin in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[begin:begin + METRICS_PER_BATCH])
        for op in ops:
            if op["op"] == "params":
                items = [Param(k, v) for k, v in op["values"].items()]
                for begin in range(0, len(items), PARAMS_PER_BATCH):
                    self.client.log_batch(self.run_id, params=items[begin:begin + PARAMS_PER_BATCH])
            elif op["op"] == "tags":
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["values"].items()])
            elif op["op"] == "artifact" and Path(op["path"]).exists():
                _upload(self.client, self.run_id, op["path"], op["artifact_path"])

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, created if needed, marked as model training so that MLflow 3's UI opens its runs
        in the training view (metrics, parameters, artifacts) rather than the GenAI traces view."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
            except Exception:  # another worker created it between our two calls
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id


def _upload(client, run_id: str, path: str, artifact_path: str) -> None:
    """A file, or a folder with everything under it (kept as laid out), as artifacts of the run."""
    if Path(path).is_dir():
        client.log_artifacts(run_id, path, artifact_path or None)
    else:
        client.log_artifact(run_id, path, artifact_path or None)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by MLflow 3's UI to choose an experiment's view
TRAINING_KIND = "custom_model_development"


class Spool:
    """The durable log of a run's tracking operations: `ops.jsonl` (one JSON object a line, appended and flushed
    at each call, so a killed process loses nothing the OS had) and `sent.json` (the byte offset MLflow holds).
    `logged` is the highest step spooled per metric key."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ops_path, self.sent_path = folder / "ops.jsonl", folder / "sent.json"
        self.logged: dict[str, int] = {}
        self._lock = threading.Lock()
        self._keep_whole_lines()
        with self.ops_path.open("r", encoding="utf-8") as handle:
            for line in handle:
                op = json.loads(line)
                if op["op"] == "metrics":
                    self.logged.update(dict.fromkeys(op["values"], op["step"]))
        self.sent = json.loads(self.sent_path.read_text())["offset"] if self.sent_path.is_file() else 0
        self._file = self.ops_path.open("a", encoding="utf-8")

    def _keep_whole_lines(self) -> None:
        """Drop a line torn by a kill mid-write, so the log stays readable."""
        self.ops_path.touch()
        data = self.ops_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.ops_path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, op: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(op, allow_nan=True) + "\n")
            self._file.flush()

    def pending(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` unsent operations and the offset after them."""
        ops = []
        with self._lock, self.ops_path.open("rb") as handle:
            handle.seek(self.sent)
            offset = self.sent
            for line in handle:
                if len(ops) >= limit or not line.endswith(b"\n"):
                    break
                ops.append(json.loads(line))
                offset += len(line)
        return ops, offset

    def mark_sent(self, offset: int) -> None:
        self.sent = offset
        partial = self.sent_path.with_suffix(".partial")
        partial.write_text(json.dumps({"offset": offset}))
        partial.replace(self.sent_path)

    def unsent(self) -> int:
        return len(self.pending(1 << 30)[0])


def git_sha() -> str:
    """The commit of the xdc source in use, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _param_value(value: Any) -> str:
    return str(value)[:MAX_PARAM_LENGTH]

"""Experiment tracking behind a small interface: MLflow for real runs, an in-memory tracker for tests.

Only rank 0 of a distributed job holds a real tracker. Params are flattened and truncated; metrics are buffered and
sent in batches; a known run id continues the same run (resume); a run ends FINISHED, FAILED (with the reason as a
tag) or KILLED (stopped on request, resumable).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

MAX_PARAM_LENGTH = 6000
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
FLUSH_SECONDS = 10.0


class Tracker(Protocol):
    run_id: str | None

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str = "") -> None: ...
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
        self.artifacts.append(f"{artifact_path}/{Path(path).name}".lstrip("/"))

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

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str:
        tags = {**tags, **self.extra_tags}
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            experiment_id = self._experiment_id(experiment)
            self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=run_name or None).info.run_id
        self.set_tags(tags)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_value(value)) for key, value in params.items()]
        for begin in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[begin:begin + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(key, float(value), now, step) for key, value in metrics.items())
        if len(self._buffer) >= METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:METRICS_PER_BATCH], self._buffer[METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str = "") -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path or None)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str, *, error: str = "") -> None:
        self.flush()
        if error:
            self.set_tags({"error": error[:5000]})
        self.client.set_terminated(self.run_id, status=status)

    def _experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another worker created it between our two calls
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id


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

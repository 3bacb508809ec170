"""One attempt at a claimed job, inside a worker: build the job's config and tracker, call xdc, record the outcome.

The job row hears from the attempt three ways: `services.set_run` as soon as the MLflow run exists, a heartbeat
(progress, ETA, stage) at most every PROGRESS_SECONDS from xdc's progress callback and at least every
`settings.LAB_HEARTBEAT_SECONDS` from a thread of its own (so a long clustering step never looks like a dead
worker), and one final call: finish_job, fail_job or mark_cancelled. A heartbeat answers whether to stop (a cancel
was requested, or the row was requeued to another attempt); xdc sees that through `should_stop`, checkpoints and
returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from webapp.lab import services

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0
# Set when the worker is asked to shut down (SIGTERM of a deploy restart, Ctrl-C): the running job checkpoints,
# stops and goes back to the queue at once, instead of holding the restart until it ends.
SHUTTING_DOWN = threading.Event()


def run_attempt(job) -> None:
    """Run a job that `services.claim_job` handed to this worker, and leave its row in a final state, unless the
    row was taken from this attempt meanwhile (requeued as stale): then the new attempt owns it."""
    with team_cache(job.team.slug):
        _run(job)


@contextlib.contextmanager
def team_cache(slug: str):
    """xdc's cache (media index, trained baselines) of the job's team: `$XDC_CACHE/<team slug>`, so no team's job
    reads what another team's left there. One job runs at a time in a worker process, so the variable is its own."""
    from xdc.data.index import default_cache_dir

    base = os.environ.get("XDC_CACHE")
    os.environ["XDC_CACHE"] = str(default_cache_dir() / "teams" / slug)
    try:
        yield
    finally:
        if base is None:
            os.environ.pop("XDC_CACHE", None)
        else:
            os.environ["XDC_CACHE"] = base


def _run(job) -> None:
    services.append_log(job.id, f"[worker] attempt {job.attempt} started on {job.worker}\n")
    tracker = JobTracker(job.id, _mlflow_tracker(job))
    heartbeat = Heartbeat(job.id, worker=job.worker, interval=settings.LAB_HEARTBEAT_SECONDS)
    heartbeat.start()
    try:
        record, stopped = KINDS[job.kind](job, tracker, heartbeat)
    except Exception as exc:  # anything xdc or the data threw: the job fails, the worker lives on
        reason = one_line(exc)
        log.exception("job %s failed: %s", job.id, reason)
        tracker.close_failed(job, reason)
        services.fail_job(job.id, error=reason, owner=_owner(job))
        return
    finally:
        heartbeat.stop()
    if not services.still_owned(job.id, _owner(job)):
        log.warning("job %s attempt %s lost its row to another attempt; recording nothing", job.id, job.attempt)
    elif stopped and SHUTTING_DOWN.is_set() and not heartbeat.cancel_seen:
        services.append_log(job.id, f"[worker] {job.worker} is shutting down: checkpointed, back in the queue\n")
        services.requeue_job(job.id, owner=_owner(job), reason="worker shutting down")
    elif stopped:
        services.mark_cancelled(job.id, owner=_owner(job))
    else:
        services.finish_job(job.id, record=record or None, owner=_owner(job))


def _owner(job) -> dict:
    """The final UPDATE is itself conditional on this attempt still owning the row (the check before it only picks
    the log line): a stale-job sweep and another worker's claim could slip between a check and a write."""
    return {"worker": job.worker, "attempt": job.attempt}


def _pretrain(job, tracker, heartbeat) -> tuple[dict | None, bool]:
    from xdc.config import PretrainConfig
    from xdc.train import pretrain

    result = pretrain(PretrainConfig.from_dict(job.config), tracker, out_dir=job.out_dir,
                      on_progress=heartbeat.on_progress, should_stop=heartbeat.stop_requested)
    if result.resumed_from:
        where = result.resumed_from
        services.append_log(job.id, f"[worker] attempt {job.attempt} resumed from the checkpoint at round "
                                    f"{where['round']}, epoch {where['epoch']}, step {where['global_step']}\n")
    return None, result.stopped


def _evaluate(job, tracker, heartbeat) -> tuple[dict | None, bool]:
    from xdc.evaluation import EvalConfig, evaluate

    result = evaluate(EvalConfig.from_dict(job.config), tracker, out_dir=job.out_dir,
                      on_progress=heartbeat.on_progress, should_stop=heartbeat.stop_requested)
    return result.record, result.stopped


KINDS: dict[str, Callable[..., tuple[dict | None, bool]]] = {"pretrain": _pretrain, "evaluate": _evaluate}


def job_tags(job) -> dict[str, str]:
    """The platform's links on every MLflow run of a job: job, user, team, and for an evaluation its pretraining."""
    tags = {"job_id": str(job.id), "user": job.creator.get_username() if job.creator else "",
            "team": job.team.slug, "attempt": str(job.attempt)}
    if job.parent_id:
        tags.update(parent_job_id=str(job.parent_id), pretrain_run_id=job.parent.mlflow_run_id)
    return tags


def _mlflow_tracker(job):
    from xdc.tracking import MLflowTracker

    return MLflowTracker(settings.MLFLOW_TRACKING_URI, tags=job_tags(job))


def one_line(exc: BaseException) -> str:
    """xdc's own errors are written for users; anything else keeps its type, which is most of what it says."""
    from xdc.errors import XDCError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, XDCError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


class JobTracker:
    """xdc's tracker, plus: the job row learns the run id the moment the run exists, and a job that fails before
    or outside xdc's own error handling still ends with an MLflow run marked FAILED with the reason."""

    def __init__(self, job_id: int, inner):
        self.job_id = job_id
        self.inner = inner
        self.status = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str:
        run_id = self.inner.start(experiment=experiment, run_name=run_name, run_id=run_id, tags=tags)
        self.status = "RUNNING"
        experiment_id = self.inner.client.get_run(run_id).info.experiment_id
        services.set_run(self.job_id, run_id=run_id, experiment_id=experiment_id)
        return run_id

    def finish(self, status: str, *, error: str = "") -> None:
        self.inner.finish(status, error=error)
        self.status = status

    def close_failed(self, job, reason: str) -> None:
        """Mark this attempt's run FAILED: start one (continuing the job's run, if it has one) when xdc failed
        before starting its own, e.g. on data that went bad between submission and run."""
        if self.status not in ("", "RUNNING"):
            return
        try:
            if not self.status:
                self.start(experiment=job.config.get("experiment") or "Default", run_id=job.mlflow_run_id or None,
                           run_name=job.config.get("run_name") or job.name, tags={"kind": job.kind})
            self.finish("FAILED", error=reason)
        except Exception:  # the row still records the failure; a tracking outage must not hide it
            log.exception("job %s: could not mark its MLflow run FAILED", self.job_id)


class Heartbeat:
    """Tells the job row the attempt is alive and how far it is, and holds the answer to 'should it stop'."""

    def __init__(self, job_id: int, *, worker: str, interval: float):
        self.job_id = job_id
        self.worker = worker
        self.interval = interval
        self.state: dict[str, Any] = {"progress": 0.0, "eta": None, "stage": "starting"}
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._last = 0.0
        self._thread = threading.Thread(target=self._beat_periodically, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def on_progress(self, fraction: float, eta: float | None, stage: str) -> None:
        self.state = {"progress": fraction, "eta": eta, "stage": stage[:300]}
        if time.monotonic() - self._last >= PROGRESS_SECONDS:
            self.beat()

    def stop_requested(self) -> bool:
        return self._stop.is_set() or SHUTTING_DOWN.is_set()

    @property
    def cancel_seen(self) -> bool:
        """Whether the row asked this attempt to stop (a cancel, or the row went to another attempt)."""
        return self._stop.is_set()

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            try:
                if services.heartbeat(self.job_id, worker=self.worker, **self.state):
                    self._stop.set()
            except Exception:  # a database hiccup must not kill hours of training; the next beat retries
                log.exception("job %s: heartbeat failed", self.job_id)

    def _beat_periodically(self) -> None:
        try:
            while not self._done.wait(self.interval):
                close_old_connections()
                self.beat()
        finally:
            connection.close()  # this thread's own connection

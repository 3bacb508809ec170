"""One attempt at a claimed job: the worker supervises the trainer, which runs in processes of its own.

The attempt is started by the launcher the job's resources name (xdc.launch: one process, or torchrun's ranks, in
their own process group, dying with this worker) on a folder `<job out_dir>/attempts/<n>/` holding the spec; it
reports through that folder's `events.jsonl` (xdc.attempt says why a file). The supervisor polls the file and the
processes and turns them into what the job row hears: `services.set_run` as soon as the MLflow run exists, a
heartbeat (progress, ETA, stage) at most every PROGRESS_SECONDS and at least every `settings.LAB_HEARTBEAT_SECONDS`
from a thread of its own (so a long clustering step never looks like a dead worker), the trainer's own output in the
log tail, and one final call: finish_job, fail_job or mark_cancelled. A heartbeat answers whether to stop (a cancel
was requested, or the row was requeued to another attempt), as does a shutdown of the worker: the supervisor asks
the trainer to checkpoint and stop (SIGTERM to its process group) and kills it if it has not ended after
`settings.LAB_STOP_GRACE_SECONDS`. A trainer that crashes (a segfault, the OOM killer) fails the attempt with how it
ended and its last output line as the reason (the lines before it are in the log tail), and the worker lives on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from webapp.lab import services
from xdc.attempt import OUTPUT_FILE, AttemptSpec, EventReader, last_lines
from xdc.errors import XDCError, one_line
from xdc.launch import LAUNCHERS, Resources

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 2.0
POLL_SECONDS = 0.5
OUTPUT_SECONDS = 5.0  # the trainer's output reaches the log tail this often
# Set when the worker is asked to shut down (SIGTERM of a deploy restart, Ctrl-C): the running job checkpoints,
# stops and goes back to the queue at once, instead of holding the restart until it ends.
SHUTTING_DOWN = threading.Event()


def run_attempt(job, *, gpus: list[str] | None = None) -> None:
    """Run a job that `services.claim_job` handed to this worker (on `gpus` of the worker's set, when it owns one),
    and leave its row in a final state, unless the row was taken from this attempt meanwhile (requeued as stale):
    then the new attempt owns it."""
    on = f", GPUs {','.join(gpus)}" if gpus else ""
    services.append_event(job.id, f"[worker] attempt {job.attempt} started on {job.worker}{on}\n")
    heartbeat = Heartbeat(job.id, worker=job.worker, attempt=job.attempt, interval=settings.LAB_HEARTBEAT_SECONDS)
    heartbeat.start()
    supervisor = Supervisor(job, heartbeat, gpus=gpus)
    try:
        outcome = supervisor.run()
    except Exception as exc:  # the attempt did not start (its folder unwritable, sbatch refused) or supervision
        log.exception("job %s: the attempt failed outside its trainer", job.id)  # gave up (trainer ended)
        outcome = Outcome(error=one_line(exc), run_id=supervisor.outcome.run_id)
    finally:
        heartbeat.stop()
    owner = _owner(job)
    if outcome.error:
        log.error("job %s failed: %s", job.id, outcome.error)
        close_run(job, outcome.run_id, "FAILED", outcome.error)
        services.fail_job(job.id, error=outcome.error, owner=owner)
    elif not services.still_owned(job.id, owner):
        log.warning("job %s attempt %s lost its row to another attempt; recording nothing", job.id, job.attempt)
    elif outcome.lost:
        services.requeue_after_loss(job.id, owner=owner, reason=outcome.lost)
    elif outcome.stopped and SHUTTING_DOWN.is_set() and not heartbeat.cancel_seen:
        services.append_event(job.id, f"[worker] {job.worker} is shutting down: checkpointed, back in the queue\n")
        if outcome.run_id:  # a trainer killed after the grace left its run open; the next attempt reopens it
            close_run(job, outcome.run_id, "KILLED", "worker shutting down: back in the queue")
        services.requeue_job(job.id, owner=owner, reason="worker shutting down")
    elif outcome.preempted:
        services.append_event(job.id, f"[worker] {outcome.preempted}: checkpointed, back in the queue\n")
        services.requeue_job(job.id, owner=owner, reason=outcome.preempted)
    elif outcome.cancelled_outside:
        close_run(job, outcome.run_id, "KILLED", outcome.cancelled_outside)
        services.mark_cancelled(job.id, owner=owner, reason=outcome.cancelled_outside)
    elif outcome.stopped:
        services.mark_cancelled(job.id, owner=owner)
    else:
        services.finish_job(job.id, record=outcome.record or None, owner=owner)


def _owner(job) -> dict:
    """The final UPDATE is itself conditional on this attempt still owning the row (the check before it only picks
    the log line): a stale-job sweep and another worker's claim could slip between a check and a write."""
    return {"worker": job.worker, "attempt": job.attempt}


@dataclass
class Outcome:
    """How an attempt ended. At most one of the reasons is set; none: it finished, or stopped as the lab asked."""

    stopped: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # the attempt failed, and this is why
    lost: str = ""  # a part of the attempt's machinery went away (a node, a rank's peers): retried as a worker loss
    preempted: str = ""  # it checkpointed on the cluster's warning (time limit, preemption): requeued at once
    cancelled_outside: str = ""  # stopped from outside the lab (scancel): the job ends cancelled with this reason
    run_id: str = ""  # the MLflow run this attempt's trainer reported ('' if it never started one)


class Supervisor:
    """Starts the job's attempt and follows it to its end."""

    def __init__(self, job, heartbeat: Heartbeat, *, gpus: list[str] | None = None):
        self.job = job
        self.heartbeat = heartbeat
        self.gpus = gpus
        self.folder = attempt_folder(job)
        self.outcome = Outcome()
        self.ending: dict[str, Any] | None = None
        self.stop_sent = False
        self.progressed = False
        self._output_at = 0.0
        self._output_offset = 0

    def run(self) -> Outcome:
        resources = Resources.from_dict(self.job.resources)
        self.ranks = resources.world_size
        AttemptSpec(kind=self.job.kind, config=self.job.config, out_dir=self.job.out_dir,
                    tracking_uri=settings.MLFLOW_TRACKING_URI, tags=job_tags(self.job)).write(self.folder)
        env = attempt_env(self.job, gpus=self.gpus)
        self.launch = LAUNCHERS[resources.launcher](self.folder, resources, env=env)
        try:
            services.append_event(self.job.id, f"[worker] trainer started: {self.launch.description}\n")
            status = self._follow(self.launch)
        except BaseException:  # the supervisor itself gave up: the trainer must not train on unsupervised
            log.exception("job %s: supervision failed; ending its trainer", self.job.id)
            self.launch.kill()
            raise
        return self._conclude(status)

    def _follow(self, launch) -> int:
        """Poll the trainer and its events until it ends; its exit status. The database, the shared folder or the
        cluster's controller may be away for a while: supervision goes on through it, and gives up (raises) only
        after LAB_STALE_SECONDS, when the job is another attempt's anyway."""
        reader = EventReader(self.folder)
        pending: list[dict[str, Any]] = []
        stop_sent = killed = trouble_since = None
        while True:
            try:
                close_old_connections()
                status = launch.poll()
                if launch.waiting and not self.progressed:  # queued in the cluster: the row says why
                    self.heartbeat.on_progress(0.0, None, launch.waiting)
                pending += reader.new_events()
                while pending:  # an event whose handling failed is handled again on the next round
                    self._take(pending[0])
                    pending.pop(0)
                self._forward_output(force=status is not None)
                if status is not None:
                    return status
                if stop_sent is None and self.heartbeat.stop_requested():
                    stop_sent = time.monotonic()
                    self.stop_sent = True
                    launch.stop()
                    services.append_event(self.job.id, "[worker] stop requested: the trainer checkpoints and stops\n")
                elif (stop_sent is not None and not killed
                      and time.monotonic() - stop_sent > settings.LAB_STOP_GRACE_SECONDS):
                    killed = True
                    launch.kill()
                    services.append_event(self.job.id, f"[worker] the trainer did not stop within "
                                                     f"{settings.LAB_STOP_GRACE_SECONDS} s: killed\n")
                trouble_since = None
            except (DatabaseError, OSError, XDCError) as exc:
                trouble_since = trouble_since or time.monotonic()
                if time.monotonic() - trouble_since > settings.LAB_STALE_SECONDS:
                    raise
                log.warning("job %s: supervision hiccup, retrying: %s", self.job.id, exc)
            time.sleep(POLL_SECONDS)

    def _take(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "progress":
            self.progressed = True
            self.heartbeat.on_progress(float(event.get("progress") or 0.0), event.get("eta"),
                                       str(event.get("stage") or ""))
        elif kind == "run":
            self.outcome.run_id = str(event["run_id"])
            services.set_run(self.job.id, run_id=self.outcome.run_id, experiment_id=str(event["experiment_id"]))
        elif kind == "resumed":  # the checkpoint's position counts from 0; the trainer's stages, as here, from 1
            services.append_event(self.job.id, f"[worker] attempt {self.job.attempt} resumed from the checkpoint at "
                                             f"round {int(event.get('round', 0)) + 1}, epoch "
                                             f"{int(event.get('epoch', 0)) + 1}, step {event.get('global_step')}\n")
        elif kind in ("done", "failed"):
            self.ending = event

    def _forward_output(self, *, force: bool) -> None:
        """The trainer's new output lines into the job's log tail, every OUTPUT_SECONDS (one UPDATE each)."""
        if not force and time.monotonic() - self._output_at < OUTPUT_SECONDS:
            return
        self._output_at = time.monotonic()
        limit = settings.LAB_LOG_TAIL_CHARS
        try:
            with open(self.folder / OUTPUT_FILE, "rb") as output:
                size = output.seek(0, os.SEEK_END)
                output.seek(max(self._output_offset, size - limit))
                chunk = output.read(size - output.tell())
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1 if not force else len(chunk)
        self._output_offset = size - len(chunk) + end
        services.append_log(self.job.id, chunk[:end].decode("utf-8", "replace"))

    def _conclude(self, status: int) -> Outcome:
        outcome, ending = self.outcome, self.ending or {}
        verdict = self.launch.verdict(status)  # what the placement says: "", "cancelled", "preempted", "lost"
        how = self.launch.end_text(status)
        knowing_failure = ending.get("event") == "failed" and not ending.get("lost_peers")
        if self.stop_sent and ending.get("event") != "done" and not knowing_failure:
            # The lab stopped it and it ended without a checkpoint of this stop (killed after the grace, a SLURM job
            # cancelled while still pending, a rank that lost its peers on the way out): stopped, as asked.
            outcome.stopped = True
        elif ending.get("event") == "done":
            outcome.stopped = bool(ending.get("stopped"))
            outcome.record = ending.get("record") or {}
            if outcome.stopped and not self.stop_sent:  # nobody in the lab asked it to stop
                if ending.get("signal") == "SIGUSR1" or verdict == "preempted":
                    outcome.preempted = "the cluster warned of its time limit or a preemption"
                else:
                    outcome.cancelled_outside = f"stopped from outside the lab by {ending.get('signal') or 'a signal'}"
                    outcome.cancelled_outside += f" (the trainer {how})" if verdict == "cancelled" else ""
        elif knowing_failure and verdict != "lost":
            outcome.error = str(ending.get("error") or "the trainer failed")[:2000]
        elif verdict == "lost" or ending.get("lost_peers") or (not ending and self.ranks > 1):
            # A rank or node of a multi-rank trainer went away (its peers' collective failed, or rank 0 itself went
            # without a word): retried like a vanished worker, up to LAB_MAX_WORKER_LOSSES.
            detail = ending.get("error") or last_lines(self.folder / OUTPUT_FILE, lines=1)
            outcome.lost = f"the trainer {how}" + (f": {detail[:300]}" if detail else "")
        elif verdict == "cancelled" and not self.stop_sent:
            outcome.cancelled_outside = f"the trainer {how}, cancelled from outside the lab before a checkpoint"
        elif verdict == "preempted":
            outcome.preempted = f"the trainer {how}"
        else:
            # One line, as every reason; the output before it (a traceback, faulthandler's stack) is in the log tail.
            tail = last_lines(self.folder / OUTPUT_FILE, lines=1)
            outcome.error = f"the trainer {how} before reporting an outcome" + (
                f"; its last output: {tail.strip()}" if tail else "")
        return outcome


def attempt_folder(job) -> Path:
    return Path(job.out_dir) / "attempts" / str(job.attempt)


# The lab's own secrets, which a trainer never needs (it talks to MLflow only) and which would otherwise travel into
# SLURM's job records on every submission.
LAB_SECRETS = ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CACHE_URL", "MLFLOW_DB",
               "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY")


def attempt_env(job, *, gpus: list[str] | None = None) -> dict[str, str]:
    """The trainer's environment: the worker's (MLflow credentials, SLURM_CONF) without the lab's secrets, on the
    GPUs leased to the job when the worker owns a set (CUDA_VISIBLE_DEVICES), with xdc's cache that of the job's
    team (`$XDC_CACHE/teams/<slug>`), so no team's job reads what another team's left there."""
    from xdc.data.index import default_cache_dir

    env = {name: value for name, value in os.environ.items() if name not in LAB_SECRETS}
    env["XDC_CACHE"] = str(default_cache_dir() / "teams" / job.team.slug)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def job_tags(job) -> dict[str, str]:
    """The platform's links on every MLflow run of a job: job, user, team, and for an evaluation its pretraining."""
    tags = {"job_id": str(job.id), "user": job.creator.get_username() if job.creator else "",
            "team": job.team.slug, "attempt": str(job.attempt)}
    if job.parent_id:
        tags.update(parent_job_id=str(job.parent_id), pretrain_run_id=job.parent.mlflow_run_id)
    return tags


def close_run(job, run_id: str, status: str, reason: str) -> None:
    """The job's MLflow run ends `status` (FAILED, KILLED) with the reason, unless the trainer ended it itself: a
    trainer that crashed, or failed before its run existed (data that went bad after submission), or was killed from
    outside before a checkpoint leaves that to here; with no run of this attempt, the job's run (or a new one) is
    continued to say so."""
    from xdc.tracking import MLflowTracker

    if not settings.MLFLOW_TRACKING_URI:
        return
    tracker = MLflowTracker(settings.MLFLOW_TRACKING_URI, tags=job_tags(job))
    try:
        if run_id and tracker.client.get_run(run_id).info.status != "RUNNING":
            return
        run_id = tracker.start(experiment=job.config.get("experiment") or "Default",
                               run_id=run_id or job.mlflow_run_id or None,
                               run_name=job.config.get("run_name") or job.name, tags={"kind": job.kind})
        if not job.mlflow_run_id:
            services.set_run(job.id, run_id=run_id, experiment_id=tracker.client.get_run(run_id).info.experiment_id)
        tracker.finish(status, error=reason)
    except Exception:  # the row still records the outcome; a tracking outage must not hide it
        log.exception("job %s: could not mark its MLflow run %s", job.id, status)


class Heartbeat:
    """Tells the job row the attempt is alive and how far it is, and holds the answer to 'should it stop'."""

    def __init__(self, job_id: int, *, worker: str, attempt: int | None = None, interval: float):
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
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
                if services.heartbeat(self.job_id, worker=self.worker, attempt=self.attempt, **self.state):
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

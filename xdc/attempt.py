"""One attempt at a job as a process of its own: `python -m xdc.attempt FOLDER` (or each rank of torchrun/srun).

The supervisor (the lab's worker, or anyone) writes `FOLDER/spec.json`: the kind (pretrain, evaluate or prepare),
the config, the output folder, the MLflow tracking URI and the tags of the run. The attempt runs xdc's public API on
it and reports through `FOLDER/events.jsonl`, appended by rank 0 only, one JSON object per line:

    {"event": "run", "run_id": ..., "experiment_id": ...}     the MLflow run exists (a resumed job: the same run)
    {"event": "progress", "progress": 0.42, "eta": 61.0, "stage": "round 2/4 epoch 1/3"}   at most every second
    {"event": "resumed", "round": 1, "epoch": 2, "global_step": 120}
    {"event": "done", "stopped": false, "record": {...}}       the end: finished, or stopped on request (KILLED;
                                                               "signal" says which: SIGTERM or SLURM's SIGUSR1)
    {"event": "failed", "error": "...", "lost_peers": false}   the end: xdc raised; the error is for the user
                                                               (lost_peers: a collective lost another rank)

Why a file: it needs no network path from a compute node back to the lab (a SLURM node can write the shared runs
folder; it often cannot reach the lab's database or broker), it is read by a supervisor on another machine as easily
as on this one, and it stays as the attempt's record. A process that dies without a last line (a segfault, the OOM
killer, a lost node) is told apart by its absence: the supervisor then takes the last lines of `FOLDER/output.log`.

SIGTERM (and SIGUSR1, SLURM's warning before a time limit or preemption) ask the trainer to checkpoint and stop;
every rank receives it. The attempt dies with its parent (PR_SET_PDEATHSIG), so killing a supervisor never leaves a
trainer holding a device.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
OUTPUT_FILE = "output.log"
PROGRESS_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
ENDINGS = ("done", "failed")
_PR_SET_PDEATHSIG = 1


@dataclass
class AttemptSpec:
    """What an attempt runs: written by the supervisor, read by every rank."""

    kind: str  # "pretrain", "evaluate" or "prepare"
    config: dict[str, Any]
    out_dir: str
    tracking_uri: str = ""  # "" = no tracking (an in-memory tracker)
    tags: dict[str, str] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SPEC_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)
        return path

    @classmethod
    def read(cls, folder: Path) -> AttemptSpec:
        return cls(**json.loads((folder / SPEC_FILE).read_text()))


class EventLog:
    """Rank 0's side of the channel: appends one line per event, flushed at once (a reader on another machine sees
    whole lines only); the lines that matter after a crash of the machine (run, outcome) are also synced to disk."""

    def __init__(self, folder: Path):
        self.path = folder / EVENTS_FILE
        self._last_progress = 0.0
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": time.time(), **fields}, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            if event != "progress":
                os.fsync(out.fileno())

    def progress(self, fraction: float, eta: float | None, stage: str) -> None:
        if time.monotonic() - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = time.monotonic()
            self.write("progress", progress=round(float(fraction), 5), eta=eta, stage=stage[:300])


class EventReader:
    """The supervisor's side: the whole lines appended since the last call (a line still being written waits)."""

    def __init__(self, folder: Path):
        self.path = folder / EVENTS_FILE
        self._offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as source:
                source.seek(self._offset)
                chunk = source.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        events = []
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not ours (a torn write cannot happen: lines are written whole); skip rather than stop
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                events.append(event)
        return events


def last_lines(path: Path, lines: int = 12, limit: int = 4000) -> str:
    """The last `lines` non-blank lines of an attempt's output (at most `limit` characters), for the reason of a
    crash."""
    try:
        with open(path, "rb") as source:
            source.seek(0, os.SEEK_END)
            size = source.tell()
            source.seek(max(0, size - 64 * 1024))
            text = source.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-limit:]


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent goes; if the parent is already gone, go now."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask
        return
    if os.getppid() != parent or parent == 1:
        os._exit(137)


class StopRequest:
    """Set by SIGTERM (a stop: the lab's cancel or shutdown, scancel) or SIGUSR1 (SLURM's warning before a time limit
    or a preemption); remembers which came first."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal = ""

    def __call__(self) -> bool:
        return self.event.is_set()

    def handle(self, signum, frame) -> None:
        if not self.event.is_set():
            self.signal = signal.Signals(signum).name
            print(f"[attempt] {self.signal}: checkpointing and stopping", file=sys.stderr, flush=True)
        self.event.set()


def stop_on_signals() -> StopRequest:
    stop = StopRequest()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.handle)
    return stop


def run(folder: Path) -> int:
    """Run the attempt in `folder`: 0 once it is done (finished or stopped) and reported so; a failure is reported,
    then raised (exit status 1, its traceback in output.log)."""
    spec = AttemptSpec.read(folder)
    main = int(os.environ.get("RANK", "0")) == 0
    events = EventLog(folder) if main else None
    stop = stop_on_signals()
    try:
        stopped, record = _execute(spec, events, stop)
    except Exception as exc:  # xdc's own errors and anything else: the reason is the user's news
        from xdc.errors import one_line

        if events:
            events.write("failed", error=one_line(exc), lost_peers=_lost_peers(exc))
        raise
    if events:
        events.write("done", stopped=stopped, record=record, signal=stop.signal if stopped else "")
    return 0


# What a collective raises when another rank's process or node went away: gloo's transport reports it as a plain
# RuntimeError ("[.../gloo/transport/tcp/pair.cc:547] Connection closed by peer"), NCCL as an aborted communicator.
PEER_LOSS = re.compile(r"gloo/transport|Connection (closed|reset) by peer|Broken pipe|NCCL communicator was aborted")


def _lost_peers(exc: BaseException) -> bool:
    """Whether a collective failed because another rank or node went away (torch.distributed's own errors, or the
    transport's RuntimeError), rather than the run itself going wrong."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and bool(PEER_LOSS.search(str(exc))))


def _execute(spec: AttemptSpec, events: EventLog | None, stop: StopRequest) -> tuple[bool, dict[str, Any]]:
    tracker = _tracker(spec, events)
    progress = events.progress if events else None
    if spec.kind == "pretrain":
        from xdc.config import PretrainConfig
        from xdc.train import pretrain

        result = pretrain(PretrainConfig.from_dict(spec.config), tracker, out_dir=spec.out_dir,
                          on_progress=progress, should_stop=stop)
        if result.resumed_from and events:
            events.write("resumed", **result.resumed_from)
        return result.stopped, {}
    if spec.kind == "evaluate":
        from xdc.evaluation import EvalConfig, evaluate

        result = evaluate(EvalConfig.from_dict(spec.config), tracker, out_dir=spec.out_dir,
                          on_progress=progress, should_stop=stop)
        return result.stopped, result.record
    if spec.kind == "prepare":  # the store goes into the job's folder, beside its attempts
        from xdc.config import PrepareConfig
        from xdc.data.store import prepare

        summary = prepare(PrepareConfig.from_dict(spec.config), tracker, out_dir=Path(spec.out_dir) / "store",
                          on_progress=progress, should_stop=stop)
        print(summary.text(), flush=True)  # the job's log tail says what was stored
        return summary.stopped, summary.record()
    raise ValueError(f"unknown attempt kind {spec.kind!r}")


def _tracker(spec: AttemptSpec, events: EventLog | None):
    from xdc.tracking import MLflowTracker, NullTracker

    if not spec.tracking_uri:
        return NullTracker()
    tracker = MLflowTracker(spec.tracking_uri, tags=spec.tags)
    return ReportingTracker(tracker, events) if events else tracker


class ReportingTracker:
    """xdc's MLflow tracker that also reports the run's id on the channel the moment the run exists, so the job
    row links to it while the first round is still being clustered."""

    def __init__(self, inner, events: EventLog):
        self.inner = inner
        self.events = events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self, *, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> str:
        run_id = self.inner.start(experiment=experiment, run_name=run_name, run_id=run_id, tags=tags)
        experiment_id = self.inner.client.get_run(run_id).info.experiment_id
        self.events.write("run", run_id=run_id, experiment_id=experiment_id)
        return run_id


def main(argv: list[str] | None = None) -> int:
    """`python -m xdc.attempt FOLDER`: one rank (torchrun's or srun's, or the only one).
    `python -m xdc.attempt --ranks N [torchrun options] FOLDER`: torchrun's agent starting N ranks of it."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] != "--ranks"):
        print("usage: python -m xdc.attempt [--ranks N [torchrun options]] FOLDER", file=sys.stderr)
        return 2
    die_with_parent()
    if argv[0] == "--ranks":
        return run_agent(int(argv[1]), argv[2:-1], Path(argv[-1]))
    return run(Path(argv[-1]))


def run_agent(ranks: int, options: list[str], folder: Path) -> int:
    """torchrun in this process, starting `ranks` ranks of this module. torchrun puts each rank in a session of its
    own, so a stop signal sent to this process's group reaches only the agent: it passes it on to every rank's group
    (torchrun itself would kill the ranks 30 s after its own SIGTERM, checkpoint written or not), and ends when they
    have checkpointed. Without `options`, a standalone rendezvous on this host; with them (the slurm launcher's
    --nnodes and c10d rendezvous), the agents of all nodes meet first."""
    from torch.distributed.run import main as torchrun

    def pass_on(signum, frame):
        for pid in child_pids():
            try:
                os.killpg(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    for signum in STOP_SIGNALS:
        signal.signal(signum, pass_on)
    rendezvous = options or ["--standalone", "--nnodes=1"]
    if options and "SLURM_NODEID" in os.environ:  # the first node hosts the c10d store, whatever its name resolves to
        rendezvous.append(f"--rdzv-conf=is_host={int(os.environ['SLURM_NODEID'] == '0')}")
    torchrun([*rendezvous, f"--nproc-per-node={ranks}", "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT",
              "--module", "xdc.attempt", str(folder)])
    return 0


def child_pids(parent: int | None = None) -> list[int]:
    """The children of `parent` (this process by default), read from /proc."""
    me, found = parent or os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


if __name__ == "__main__":
    sys.exit(main())

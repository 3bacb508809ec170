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

Its output (stdout and stderr) goes to `FOLDER/output.log`, which the supervisor copies into the job's log tail: rank 0
logs at INFO what a person watching wants to read (the data's screening, each round's clusters, each epoch's loss
and speed, how it ended), the other ranks only warnings and errors, and a failure's traceback ends it.

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
import faulthandler
import json
import logging
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
log = logging.getLogger("xdc.attempt")  # by name: run as `python -m`, this module is __main__


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
    rank = int(os.environ.get("RANK", "0"))
    main = rank == 0
    setup_logging(rank, int(os.environ.get("WORLD_SIZE", "1")))
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


def setup_logging(rank: int, world: int) -> None:
    """xdc's logging, Python's warnings and a crash's stack on stderr (output.log, the job's log tail): rank 0 at
    INFO; the other ranks, which repeat its work, at WARNING and marked with their rank; other libraries at WARNING."""
    prefix = f"[rank {rank}] " if world > 1 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("xdc").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logging.captureWarnings(True)
    faulthandler.enable()  # a segfault or an abort leaves the Python stack in the log, not only its signal


def _execute(spec: AttemptSpec, events: EventLog | None, stop: StopRequest) -> tuple[bool, dict[str, Any]]:
    tracker = _tracker(spec, events)
    progress = events.progress if events else None
    if spec.kind == "pretrain":
        from xdc.config import PretrainConfig
        from xdc.train import pretrain

        if events:  # rank 0 tells the log what the run tracks
            tracker = narrator = Narrator(tracker, spec.config)
            progress = narrator.progress(progress)
        result = pretrain(PretrainConfig.from_dict(spec.config), tracker, out_dir=spec.out_dir,
                          on_progress=progress, should_stop=stop)
        if result.resumed_from and events:
            events.write("resumed", **result.resumed_from)
        return result.stopped, {}
    if spec.kind == "evaluate":
        from xdc.evaluation import EvalConfig, evaluate

        result = evaluate(EvalConfig.from_dict(spec.config), tracker, out_dir=spec.out_dir,
                          on_progress=progress, should_stop=stop)
        if result.record:
            log.info("result: %s", _numbers(result.record.get("metrics") or {}))
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


class Narrator:
    """Rank 0's tracker of a pretraining, which passes everything on and logs, from what the run tracks, the lines a
    person reading the job's log wants: the data's screening, each round's clusters, each epoch's loss and speed, the
    end. Built on the tracker's calls rather than inside the trainer, so the log and MLflow never disagree."""

    def __init__(self, inner, config: dict[str, Any]):
        self.inner = inner
        self.rounds = int(config.get("rounds") or 0)
        self.k = config.get("cluster") or {}
        self.stage = ""
        self.eta: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def progress(self, forward):
        """The progress callback, remembering the last stage and ETA for the epoch lines."""
        def on_progress(fraction: float, eta: float | None, stage: str) -> None:
            self.stage, self.eta = stage, eta
            if forward:
                forward(fraction, eta, stage)
        return on_progress

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        self.inner.log_metrics(metrics, step=step)
        if "data/usable" in metrics:
            log.info("%s", data_line(metrics))
        if any(key.startswith("cluster/nonempty_") for key in metrics):
            log.info("%s", round_line(metrics, step, self.rounds, self.k))
        if any(key.startswith("cluster/fit_") for key in metrics):
            log.info("%s", fit_line(metrics, step, self.rounds))
        if "train/epoch_clips_per_s" in metrics:
            left = f", about {duration(self.eta)} left" if self.eta else ""
            log.info("%s: epoch done, %.1f clips/s%s", self.stage or f"step {step}",
                     metrics["train/epoch_clips_per_s"], left)

    def finish(self, status: str, *, error: str = "") -> None:
        if status == "FINISHED":
            log.info("finished")
        elif status == "KILLED":
            log.info("stopped on request at %s; checkpointed", self.stage or "the start")
        self.inner.finish(status, error=error)


def data_line(metrics: dict[str, float]) -> str:
    """'data: 478 usable videos; skipped 2 (1 no_audio, 1 undecodable), listed in skipped_files.tsv'."""
    skipped = {key.removeprefix("data/skipped_"): int(value) for key, value in metrics.items()
               if key.startswith("data/skipped_") and value}
    line = f"data: {int(metrics['data/usable'])} usable videos"
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        line += f"; skipped {sum(skipped.values())} ({reasons}), listed in skipped_files.tsv"
    return line


def round_line(metrics: dict[str, float], round_index: int, rounds: int, k: dict[str, Any]) -> str:
    """One round's clusters: 'round 2/4 clusters: video 16/16 used (largest 9%, NMI with labels 0.10), audio ...;
    NMI video-audio 0.41'. Clusters used out of K, how even they are, how they follow the labels where known, and
    how well the modalities agree."""
    found = {key.removeprefix("cluster/"): value for key, value in metrics.items() if key.startswith("cluster/")}
    spaces = [key.removeprefix("nonempty_") for key in found if key.startswith("nonempty_")]
    parts = []
    for space in spaces:
        part = f"{space} {found[f'nonempty_{space}']:.0f}/{k.get(f'k_{space}', '?')} used"
        part += f" (largest {found.get(f'largest_share_{space}', 0.0):.0%}"
        if f"nmi_labels_{space}" in found:
            part += f", NMI with labels {found[f'nmi_labels_{space}']:.2f}"
        if f"stability_{space}" in found:
            part += f", with last round {found[f'stability_{space}']:.2f}"
        parts.append(part + ")")
    pairs = [f"{a}-{b} {found[f'nmi_{a}_{b}']:.2f}" for i, a in enumerate(spaces) for b in spaces[i + 1:]
             if f"nmi_{a}_{b}" in found]
    line = f"round {round_index + 1}/{rounds} clusters: " + ", ".join(parts)
    line += f"; NMI {', '.join(pairs)}" if pairs else ""
    failed = int(found.get("extract_failed", 0))
    return line + (f"; {failed} videos gave no features" if failed else "")


def fit_line(metrics: dict[str, float], round_index: int, rounds: int) -> str:
    """'round 2/4 fit of the targets (top-1, last epoch; of what a class recogniser would fit): audio←video 0.58 of
    0.17, video←audio 0.31 of 0.30'."""
    from xdc.report import head_fit

    heads = sorted(key.removeprefix("cluster/fit_") for key in metrics if key.startswith("cluster/fit_"))
    ceilings = any(f"cluster/ceiling_{head}" in metrics for head in heads)
    return (f"round {round_index + 1}/{rounds} fit of the targets (top-1, last epoch"
            + ("; of what a class recogniser would fit" if ceilings else "") + "): "
            + ", ".join(head_fit(head, metrics[f"cluster/fit_{head}"], metrics.get(f"cluster/ceiling_{head}"))
                        for head in heads))


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _numbers(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, (int, float)) else f"{key} {value}"
                     for key, value in metrics.items()) or "no metrics"


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

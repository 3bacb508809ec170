"""Where a job runs and how its processes start: the typed resource spec and the launchers that honour it.

`Resources` is one typed part of a job (resource, GPUs per node, nodes, launcher, partition, CPU ranks); its fields
declare their own bounds like the configs', so the lab's form, API and service never re-declare them. A launcher
starts an attempt folder (see xdc.attempt) as the processes the spec asks for and hands back a `Launch` the
supervisor polls, stops and kills:

- `local`: this host. One plain process for a single rank; `torchrun --standalone --nproc-per-node=N` for N ranks
  (NCCL on the GPUs this worker owns, gloo ranks on CPU). The processes form their own process group, die with
  their supervisor (PR_SET_PDEATHSIG), and a stop is SIGTERM to the group: every rank checkpoints and returns.
- `slurm`: a batch job of `nodes` nodes through plain `sbatch` (the script is written into the attempt folder, so
  what ran is there to read and to resubmit by hand); `srun` starts one torchrun agent per node, which rendezvous
  over c10d at the first node's address (from SLURM's node list) under the SLURM job id and start the node's ranks.
  Plain sbatch rather than submitit: the lab's worker already is the supervisor that submitit would add (it polls,
  cancels, requeues and reads the outcome from the attempt folder), and the job stays an ordinary, inspectable
  SLURM job with no pickled callable in it. The job asks for a warning (`--signal=USR1@<seconds>`) before its time
  limit or a preemption; the agents pass it to the ranks, which checkpoint. A stop is `scancel --signal=TERM`.
  Before submitting, the launcher cancels any SLURM job of an earlier attempt of the same job still alive (its
  worker died), so two attempts never train at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xdc.attempt import OUTPUT_FILE
from xdc.config import _build, check_fields, setting
from xdc.errors import ConfigError, XDCError


@dataclass
class Resources:
    """What a job asks for. Ranks per node are the GPUs per node of a GPU job, `cpu_ranks` of a CPU job."""

    resource: str = setting("gpu", choices=("gpu", "cpu"), help="the worker queue: GPU or CPU machines")
    gpus: int = setting(1, low=0, limit=64, help="GPUs per node (0 for a CPU job)")
    nodes: int = setting(1, low=1, limit=256, help="machines; more than one needs the slurm launcher")
    launcher: str = setting("local", choices=lambda: LAUNCHERS, help="local: this worker's host; slurm: sbatch")
    partition: str = setting("", longest=100, help="SLURM partition ('' = the cluster's default)")
    cpu_ranks: int = setting(1, low=1, limit=64, help="processes per node of a CPU job (gloo)")

    @property
    def ranks_per_node(self) -> int:
        return self.gpus if self.resource == "gpu" else self.cpu_ranks

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    def describe(self) -> str:
        """In words: 'cpu', 'cpu, 2 ranks', '4 GPUs', '2 nodes x 8 GPUs, slurm partition gpu'."""
        if self.resource == "cpu":
            each = "cpu" if self.cpu_ranks == 1 else f"cpu, {self.cpu_ranks} ranks"
        else:
            each = f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}"
        text = f"{self.nodes} nodes x {each}" if self.nodes > 1 else each
        if self.launcher != "local":
            text += f", {self.launcher}" + (f" partition {self.partition}" if self.partition else "")
        return text

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Resources:
        """Strict like the configs; a CPU job that does not say how many GPUs asks for none."""
        if isinstance(raw, dict) and raw.get("resource") == "cpu" and "gpus" not in raw:
            raw = {**raw, "gpus": 0}
        return _build(cls, raw, prefix="").validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Resources:
        check_fields(self)
        if self.resource == "gpu" and self.gpus < 1:
            raise ConfigError("a GPU job needs at least one GPU per node", key="gpus")
        if self.resource == "cpu" and self.gpus:
            raise ConfigError(f"a CPU job uses no GPU; got gpus={self.gpus} (ask for resource=gpu)", key="gpus")
        if self.resource == "gpu" and self.cpu_ranks != 1:
            raise ConfigError("cpu_ranks is for CPU jobs; a GPU job runs one rank per GPU", key="cpu_ranks")
        if self.nodes > 1 and self.launcher == "local":
            raise ConfigError(f"{self.nodes} nodes need the slurm launcher; local runs on one host", key="nodes")
        if self.partition and self.launcher != "slurm":
            raise ConfigError("a partition is a SLURM notion; it needs launcher=slurm", key="partition")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]*", self.partition):
            raise ConfigError(f"partition must be a SLURM partition name (letters, digits, _ . -), got "
                              f"{self.partition[:40]!r}", key="partition")
        return self


RESOURCE_KEYS = tuple(field.name for field in dataclasses.fields(Resources))


class Launch(Protocol):
    """A started attempt, as its supervisor sees it."""

    description: str
    waiting: str  # why it has not started yet ("SLURM job 12 pending: Resources"), "" once it runs

    def poll(self) -> int | None: ...  # None while running, else the exit status (negative: killed by that signal)
    def stop(self) -> None: ...  # ask every rank to checkpoint and stop
    def kill(self) -> None: ...  # end every process of the attempt now
    def end_text(self, status: int) -> str: ...  # how it ended, in words ("was killed by SIGSEGV")
    # What the placement says of an ended attempt: "" (nothing beyond its own report), "cancelled" (from outside),
    # "preempted" (the cluster took the nodes back: retry at once) or "lost" (a node failed: retry as a loss).
    def verdict(self, status: int) -> str: ...


class LocalLaunch:
    waiting = ""

    def __init__(self, process: subprocess.Popen, description: str):
        self.process = process
        self.description = description

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.process.wait()

    def end_text(self, status: int) -> str:
        return exit_text(status)

    def verdict(self, status: int) -> str:
        return ""

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # its own group: start_new_session
        except ProcessLookupError:
            pass


def exit_text(status: int) -> str:
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else f"signal {-status}"
        return f"was killed by {name}" + (" (out of memory?)" if -status == signal.SIGKILL else "")
    return f"exited with status {status}"


def attempt_command(folder: Path, ranks: int) -> list[str]:
    """One plain process for one rank; xdc.attempt's torchrun agent for several."""
    if ranks == 1:
        return [sys.executable, "-m", "xdc.attempt", str(folder)]
    return [sys.executable, "-m", "xdc.attempt", "--ranks", str(ranks), str(folder)]


def launch_local(folder: Path, resources: Resources, *, env: dict[str, str]) -> LocalLaunch:
    """Start the attempt in `folder` on this host, its output appended to `folder/output.log`."""
    if resources.nodes != 1:
        raise ConfigError("the local launcher runs one node", key="nodes")
    ranks = resources.ranks_per_node
    command = attempt_command(folder, ranks)
    if ranks > 1 and "OMP_NUM_THREADS" not in env:  # torchrun would give each rank 1 thread: share the cores
        env = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
    with open(folder / OUTPUT_FILE, "ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    what = "1 process" if ranks == 1 else f"torchrun, {ranks} {'GPU' if resources.resource == 'gpu' else 'CPU'} ranks"
    return LocalLaunch(process, f"{what}, pid {process.pid}")


# -- SLURM -------------------------------------------------------------------------------------------------------

SLURM_JOB_FILE = "slurm.json"
SLURM_SCRIPT = "job.sbatch"
WARNING_SECONDS = 120  # SLURM's USR1 this long before the time limit or a preemption: time for a checkpoint
SLURM_POLL_SECONDS = 10.0
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}
# Ended states that are the cluster's doing, not the trainer's: see Launch.verdict. A time limit reached without a
# checkpoint counts as a loss, so a job whose limit is shorter than its checkpoints do not requeue for ever.
SLURM_VERDICTS = {"CANCELLED": "cancelled", "PREEMPTED": "preempted", "NODE_FAIL": "lost", "BOOT_FAIL": "lost",
                  "TIMEOUT": "lost"}
RENDEZVOUS_PORT = 29500  # + the SLURM job id modulo 10000: jobs sharing a first node do not collide


class SlurmError(XDCError):
    """SLURM refused or could not be asked (sbatch's own message)."""


SCRIPT = r"""#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --output={output}
#SBATCH --open-mode=append
#SBATCH --signal=USR1@{warning}
#SBATCH --chdir={folder}
{extra}
# One torchrun agent per node; they meet over c10d at the first node's address and start {ranks} rank(s) each.
set -euo pipefail
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
address=$(scontrol show node "$head" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
echo "[slurm] job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous at ${{address:-$head}}:$(({port} + SLURM_JOB_ID % 10000))"
exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 {python} -m xdc.attempt --ranks {ranks} \
  --nnodes={nodes} --rdzv-backend=c10d --rdzv-endpoint="${{address:-$head}}:$(({port} + SLURM_JOB_ID % 10000))" \
  --rdzv-id="$SLURM_JOB_ID" {folder_arg}
"""


class SlurmLaunch:
    def __init__(self, job_id: str, env: dict[str, str], description: str):
        self.job_id = job_id
        self.env = env
        self.description = description
        self.state = "PENDING"
        self.reason = ""
        self.status: int | None = None
        self._asked = 0.0

    def poll(self) -> int | None:
        """The controller is asked at most every SLURM_POLL_SECONDS (a site's slurmctld serves many users); in
        between, the last answer holds (the trainer's own events say how far it is)."""
        if self.status is not None or time.monotonic() - self._asked < SLURM_POLL_SECONDS:
            return self.status
        self._asked = time.monotonic()
        found = slurm_state(self.job_id, self.env) or slurm_accounting(self.job_id, self.env)
        if found is None:  # purged from the controller and no accounting to ask: it ended, how is unknown
            self.state = "ENDED"
            self.status = 1
            return self.status
        self.state, code, self.reason = found
        if self.state in ACTIVE_STATES:
            return None
        self.status = 0 if self.state == "COMPLETED" else (code or 1)
        return self.status

    @property
    def waiting(self) -> str:
        if self.state != "PENDING":
            return ""
        return f"SLURM job {self.job_id} pending" + (f": {self.reason}" if self.reason and self.reason != "None" else "")

    def stop(self) -> None:
        if self.state == "PENDING":
            _slurm(["scancel", self.job_id], self.env, check=False)
        else:
            _slurm(["scancel", "--signal=TERM", self.job_id], self.env, check=False)

    def kill(self) -> None:
        _slurm(["scancel", self.job_id], self.env, check=False)

    def end_text(self, status: int) -> str:
        reason = f", {self.reason}" if self.reason and self.reason != "None" else ""
        return f"ended as SLURM job {self.job_id} {self.state} (exit status {status}{reason})"

    def verdict(self, status: int) -> str:
        return SLURM_VERDICTS.get(self.state, "")


def slurm_state(job_id: str, env: dict[str, str]) -> tuple[str, int, str] | None:
    """(state, exit status, reason) of a SLURM job from `scontrol show job`, None when the controller no longer
    knows it."""
    done = _slurm(["scontrol", "show", "job", "-o", job_id], env, check=False)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise SlurmError(f"scontrol could not say how SLURM job {job_id} is: {done.stderr.strip()[:300]}")
    fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
    return fields.get("JobState", "UNKNOWN"), _exit_status(fields.get("ExitCode", "0:0")), fields.get("Reason", "")


def _exit_status(code: str) -> int:
    """SLURM's 'exit:signal' as one status: the exit code, or minus the signal that ended the job."""
    first, _, second = code.partition(":")
    exit_code = int(first) if first.isdigit() else 0
    return exit_code or -(int(second) if second.isdigit() else 0)


def slurm_accounting(job_id: str, env: dict[str, str]) -> tuple[str, int, str] | None:
    """(state, exit status, '') from sacct, for a job the controller has purged; None without accounting."""
    done = _slurm(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"], env, check=False)
    line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
    if "|" not in line:
        return None
    state, code = line.split("|", 1)
    return state.split()[0], _exit_status(code), ""


def launch_slurm(folder: Path, resources: Resources, *, env: dict[str, str]) -> SlurmLaunch:
    """Submit the attempt in `folder` as a SLURM batch job; its output goes to `folder/output.log`."""
    cancel_earlier_attempts(folder, env)
    extra = []
    if resources.partition:
        extra.append(f"#SBATCH --partition={resources.partition}")
    if resources.resource == "gpu":
        extra.append(f"#SBATCH --gpus-per-node={resources.gpus}")  # CPUs per GPU: the site's DefCpuPerGPU
    else:
        extra.append(f"#SBATCH --cpus-per-task={resources.cpu_ranks}")  # one task (agent) per node runs the ranks
    script = SCRIPT.format(name=f"xdc-{folder.parent.parent.name}-{folder.name}", nodes=resources.nodes,
                           output=_quoted(folder / OUTPUT_FILE), warning=WARNING_SECONDS, folder=_quoted(folder),
                           extra="\n".join(extra), ranks=resources.ranks_per_node, port=RENDEZVOUS_PORT,
                           python=shlex.quote(sys.executable), folder_arg=shlex.quote(str(folder)))
    (folder / SLURM_SCRIPT).write_text(script)
    done = _slurm(["sbatch", "--parsable", str(folder / SLURM_SCRIPT)], {**env, "PYTHONUNBUFFERED": "1"},
                  check=False)
    if done.returncode != 0:
        raise SlurmError(f"sbatch refused the job: {done.stderr.strip()[:500]}")
    job_id = done.stdout.strip().split(";")[0]
    (folder / SLURM_JOB_FILE).write_text(json.dumps({"job_id": job_id}))
    return SlurmLaunch(job_id, env, f"SLURM job {job_id}, {resources.describe()}")


def cancel_earlier_attempts(folder: Path, env: dict[str, str], timeout: float = 300) -> list[str]:
    """scancel the SLURM jobs of this job's earlier attempts that are still alive (their supervisor vanished), and
    wait until they have ended; the ids cancelled."""
    alive: list[str] = []
    for earlier in sorted(folder.parent.glob(f"*/{SLURM_JOB_FILE}")):
        if earlier.parent == folder:
            continue
        try:
            job_id = str(json.loads(earlier.read_text())["job_id"])
        except (OSError, ValueError, KeyError):
            continue
        found = slurm_state(job_id, env)
        if found is not None and found[0] in ACTIVE_STATES:
            _slurm(["scancel", job_id], env, check=False)
            alive.append(job_id)
    cancelled = list(alive)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        alive = [job for job in alive if (slurm_state(job, env) or ("",))[0] in ACTIVE_STATES]
        time.sleep(1)
    if alive:
        raise SlurmError(f"SLURM jobs {', '.join(alive)} of an earlier attempt did not end after scancel")
    return cancelled


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int  # nodes in the partition
    gpus_per_node: int  # the most GPUs (GRES gpu) a node of it holds
    cpus_per_node: int  # the most CPUs a node of it holds
    default: bool


def slurm_partitions(env: dict[str, str] | None = None) -> dict[str, Partition]:
    """The cluster's partitions as `sinfo` reports them (SlurmError when SLURM cannot be asked)."""
    # Asked from a web request at submission: a controller that hangs costs the user 10 s and a clear error.
    done = _slurm(["sinfo", "-h", "-o", "%P|%D|%G|%c"], env if env is not None else dict(os.environ), check=False,
                  timeout=10)
    if done.returncode != 0:
        raise SlurmError(f"sinfo could not list the partitions: {done.stderr.strip()[:300]}")
    found: dict[str, Partition] = {}
    for line in done.stdout.splitlines():
        if line.count("|") != 3:
            continue
        name, nodes, gres, cpus = line.split("|")
        gpus = max([int(m) for m in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)] or [0])
        default = name.endswith("*")
        name = name.rstrip("*")
        known = found.get(name)  # sinfo prints a line per node configuration of a partition
        found[name] = Partition(name, (known.nodes if known else 0) + int(nodes or 0),
                                max(gpus, known.gpus_per_node if known else 0),
                                max(int(cpus.rstrip("+") or 0), known.cpus_per_node if known else 0), default)
    return found


def check_slurm_fit(resources: Resources, partitions: dict[str, Partition]) -> None:
    """ConfigError unless a partition of the cluster can hold the job: the named one, or the default one."""
    if resources.partition:
        partition = partitions.get(resources.partition)
        if partition is None:
            raise ConfigError(f"the SLURM cluster has no partition {resources.partition!r}; it has "
                              f"{', '.join(sorted(partitions)) or 'none'}", key="partition")
    else:
        partition = next((p for p in partitions.values() if p.default), None)
        if partition is None:
            raise ConfigError("the SLURM cluster has no default partition: name one", key="partition")
    if resources.nodes > partition.nodes:
        raise ConfigError(f"partition {partition.name} has {partition.nodes} nodes; the job asks for "
                          f"{resources.nodes}", key="nodes")
    if resources.resource == "cpu" and resources.cpu_ranks > partition.cpus_per_node:
        raise ConfigError(f"the nodes of partition {partition.name} hold at most {partition.cpus_per_node} CPUs; "
                          f"the job asks for {resources.cpu_ranks} ranks per node", key="cpu_ranks")
    if resources.resource == "gpu" and resources.gpus > partition.gpus_per_node:
        raise ConfigError(f"the nodes of partition {partition.name} hold at most {partition.gpus_per_node} GPUs; "
                          f"the job asks for {resources.gpus} per node", key="gpus")


def _slurm(command: list[str], env: dict[str, str], *, check: bool, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=check)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} is not installed on this worker: the slurm launcher needs SLURM's client "
                         "commands") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]} did not answer in {timeout:.0f} s: is slurmctld up?") from None


def _quoted(path: Path) -> str:
    text = str(path)
    if any(c.isspace() or c in "\"'\\$`" for c in text):
        raise SlurmError(f"the attempt folder {text!r} holds a character an #SBATCH line cannot carry")
    return text


LAUNCHERS = {"local": launch_local, "slurm": launch_slurm}

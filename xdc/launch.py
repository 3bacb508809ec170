"""Where a job runs and how its processes start: the typed resource spec and the launchers that honour it.

`Resources` is one typed part of a job (resource, GPUs per node, nodes, launcher, partition, CPU ranks); its fields
declare their own bounds like the configs', so the lab's form, API and service never re-declare them. A launcher
starts an attempt folder (see xdc.attempt) as the processes the spec asks for and hands back a `Launch` the
supervisor polls, stops and kills:

- `local`: this host. One plain process for a single rank; `torchrun --standalone --nproc-per-node=N` for N ranks
  (NCCL on the GPUs this worker owns, gloo ranks on CPU). The processes form their own process group, die with
  their supervisor (PR_SET_PDEATHSIG), and a stop is SIGTERM to the group: every rank checkpoints and returns.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xdc.attempt import OUTPUT_FILE
from xdc.config import _build, check_fields, setting
from xdc.errors import ConfigError


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
        return self


RESOURCE_KEYS = tuple(field.name for field in dataclasses.fields(Resources))


class Launch(Protocol):
    """A started attempt, as its supervisor sees it."""

    description: str

    def poll(self) -> int | None: ...  # None while running, else the exit status (negative: killed by that signal)
    def stop(self) -> None: ...  # ask every rank to checkpoint and stop
    def kill(self) -> None: ...  # end every process of the attempt now


class LocalLaunch:
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

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # its own group: start_new_session
        except ProcessLookupError:
            pass


def attempt_command(folder: Path, ranks: int) -> list[str]:
    """One plain process for one rank; xdc.attempt's torchrun agent for several."""
    if ranks == 1:
        return [sys.executable, "-m", "xdc.attempt", str(folder)]
    return [sys.executable, "-m", "xdc.attempt", "--ranks", str(ranks), str(folder)]


def launch_local(folder: Path, resources: Resources, *, env: dict[str, str]) -> LocalLaunch:
    """Start the attempt in `folder` on this host, its output appended to `folder/output.log`."""
    if resources.nodes != 1:
        raise ConfigError("the local launcher runs one node", key="nodes")
    command = attempt_command(folder, resources.ranks_per_node)
    with open(folder / OUTPUT_FILE, "ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    ranks = resources.ranks_per_node
    what = "1 process" if ranks == 1 else f"torchrun, {ranks} {'GPU' if resources.resource == 'gpu' else 'CPU'} ranks"
    return LocalLaunch(process, f"{what}, pid {process.pid}")


LAUNCHERS = {"local": launch_local}

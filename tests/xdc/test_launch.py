"""The resource spec and the local launcher, on real processes: one plain process or torchrun's gloo ranks, trained to
the end, stopped on every rank, crashed, failed knowingly, and orphaned (their supervisor SIGKILLed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import running_in
from xdc.attempt import OUTPUT_FILE, AttemptSpec, EventReader, child_pids, last_lines
from xdc.checkpoint import list_checkpoints, load_latest
from xdc.config import load_config
from xdc.errors import ConfigError
from xdc.launch import Resources, exit_text, launch_local


@pytest.mark.parametrize("raw, key", [
    ({"resource": "tpu"}, "resource"),
    ({"gpus": 0}, "gpus"),
    ({"gpus": 65}, "gpus"),
    ({"gpus": "two"}, "gpus"),
    ({"resource": "cpu", "gpus": 2}, "gpus"),
    ({"cpu_ranks": 2}, "cpu_ranks"),
    ({"resource": "cpu", "cpu_ranks": 0}, "cpu_ranks"),
    ({"nodes": 2}, "nodes"),
    ({"nodes": 0}, "nodes"),
    ({"launcher": "kubernetes"}, "launcher"),
    ({"partition": "gpu"}, "partition"),
    ({"launcher": "slurm", "partition": "gpu\n#SBATCH --uid=0"}, "partition"),
    ({"launcher": "slurm", "partition": "gpu --wrap=id"}, "partition"),
    ({"gpu": 1}, "gpu"),
])
def test_a_resource_spec_is_refused_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as refused:
        Resources.from_dict(raw)
    assert refused.value.key == key


def test_a_resource_spec_reads_as_words_and_counts_its_ranks():
    assert Resources.from_dict({"resource": "cpu"}).gpus == 0
    assert Resources.from_dict({"resource": "cpu", "cpu_ranks": 2}).describe() == "cpu, 2 ranks"
    four = Resources.from_dict({"gpus": 4})
    assert (four.world_size, four.describe()) == (4, "4 GPUs")
    assert Resources().describe() == "1 GPU"


def test_exit_statuses_read_as_words():
    assert exit_text(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert "out of memory" in exit_text(-signal.SIGKILL)
    assert exit_text(3) == "exited with status 3"


def tiny_spec(folder: Path, data: Path, out: Path, *overrides: str) -> Path:
    cfg = load_config(preset="tiny", overrides=[f"data.path={data}", *overrides]).to_dict()
    AttemptSpec(kind="pretrain", config=cfg, out_dir=str(out)).write(folder)
    return folder


def start(folder: Path, **resources):
    # One thread per rank: two ranks on 2 cores must not fight.
    return launch_local(folder, Resources.from_dict({"resource": "cpu", **resources}),
                        env={**os.environ, "OMP_NUM_THREADS": "1"})


def follow(launch, folder: Path, *, until=None, timeout: float = 240) -> list[dict]:
    """Every event until the launch ends (or `until(events)` holds); fails with the attempt's output otherwise."""
    reader, events = EventReader(folder), []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = launch.poll()
        events += reader.new_events()
        if status is not None or (until and until(events)):
            return events
        time.sleep(0.2)
    launch.kill()
    pytest.fail(f"the attempt did not get there in {timeout} s: {last_lines(folder / OUTPUT_FILE, 30)}")


def in_training(events: list[dict]) -> bool:
    return any(e["event"] == "progress" and "epoch" in e.get("stage", "") for e in events)


@pytest.mark.slow
def test_two_cpu_ranks_train_to_the_end_with_rank_0_writing(synthetic_root, tmp_path):
    folder = tiny_spec(tmp_path / "attempt", synthetic_root, tmp_path / "out")
    launch = start(folder, cpu_ranks=2)
    assert launch.description.startswith("torchrun, 2 CPU ranks")
    events = follow(launch, folder)

    assert launch.poll() == 0, last_lines(folder / OUTPUT_FILE, 30)
    assert events[-1]["event"] == "done" and events[-1]["stopped"] is False
    assert [e["event"] for e in events].count("done") == 1  # rank 0 alone reports
    final = torch.load(tmp_path / "out" / "final.pt", weights_only=False)
    assert final["config"]["rounds"] == 2
    assert all(path.name.startswith("step_") for path in list_checkpoints(tmp_path / "out" / "checkpoints"))


@pytest.mark.slow
def test_a_stop_checkpoints_every_rank_and_ends_the_attempt(synthetic_root, tmp_path):
    folder = tiny_spec(tmp_path / "attempt", synthetic_root, tmp_path / "out", "rounds=50")
    launch = start(folder, cpu_ranks=2)
    events = follow(launch, folder, until=in_training)
    assert launch.poll() is None, "the run ended before it could be stopped"

    launch.stop()
    events += follow(launch, folder, timeout=120)
    assert launch.poll() == 0, last_lines(folder / OUTPUT_FILE, 30)
    assert events[-1]["event"] == "done" and events[-1]["stopped"] is True
    state = load_latest(tmp_path / "out" / "checkpoints")
    assert state is not None and state["position"]["round"] < 50
    assert not (tmp_path / "out" / "final.pt").exists()


@pytest.mark.slow
def test_a_crashed_trainer_leaves_no_ending_and_its_output(synthetic_root, tmp_path):
    folder = tiny_spec(tmp_path / "attempt", synthetic_root, tmp_path / "out", "rounds=50")
    launch = start(folder)
    follow(launch, folder, until=in_training)
    os.kill(launch.process.pid, signal.SIGSEGV)
    events = follow(launch, folder, timeout=60)

    assert launch.poll() == -signal.SIGSEGV
    assert not [e for e in events if e["event"] in ("done", "failed")]


@pytest.mark.slow
def test_a_trainer_that_fails_says_why(tmp_path):
    folder = tiny_spec(tmp_path / "attempt", tmp_path / "no-such-data", tmp_path / "out")
    launch = start(folder)
    events = follow(launch, folder, timeout=120)

    assert launch.poll() == 1
    assert events[-1]["event"] == "failed" and "no-such-data" in events[-1]["error"]
    assert "Traceback" in (folder / OUTPUT_FILE).read_text()  # the whole story stays in the attempt's output


@pytest.mark.slow
def test_killing_the_supervisor_leaves_no_trainer_behind(synthetic_root, tmp_path):
    """SIGKILL the process that launched two ranks (a worker, here a plain Python process): the torchrun agent dies
    with it, and the ranks with the agent, loader workers included."""
    folder = tiny_spec(tmp_path / "attempt", synthetic_root, tmp_path / "out", "rounds=50", "data.num_workers=1")
    code = ("import os, sys, time\n"
            "from pathlib import Path\n"
            "from xdc.launch import Resources, exit_text, launch_local\n"
            "launch = launch_local(Path(sys.argv[1]), Resources(resource='cpu', gpus=0, cpu_ranks=2),\n"
            "                      env={**os.environ, 'OMP_NUM_THREADS': '1'})\n"
            "print(launch.process.pid, flush=True)\n"
            "time.sleep(600)\n")
    supervisor = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    agent = int(supervisor.stdout.readline())
    reader, events = EventReader(folder), []
    deadline = time.monotonic() + 240
    while not in_training(events) and time.monotonic() < deadline:
        events += reader.new_events()
        time.sleep(0.2)
    assert in_training(events), last_lines(folder / OUTPUT_FILE, 30)
    trainers = running_in(folder)
    assert agent in trainers and len(trainers) >= 3  # the agent and two ranks (and loader workers, forked from them)

    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running_in(folder):
        time.sleep(0.2)
    assert not running_in(folder), f"left behind: {running_in(folder)}"


def test_the_agent_finds_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in child_pids()
    finally:
        child.kill()
        child.wait()


def test_a_collective_that_lost_its_peers_is_told_from_a_failing_run(monkeypatch):
    from xdc.attempt import _lost_peers

    gone = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer "
                        "[127.0.0.1]:20107")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _lost_peers(gone) and _lost_peers(torch.distributed.DistBackendError("x"))
    assert not _lost_peers(RuntimeError("CUDA out of memory")) and not _lost_peers(ValueError("bad data"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not _lost_peers(gone)  # one process has no peers to lose

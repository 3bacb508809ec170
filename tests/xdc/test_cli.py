"""The command line as a user runs it: one-line errors with exit code 2 and nothing written, SIGTERM saves and
stops, a killed run resumes where it was, torchrun with two gloo processes, and no Django or Celery in xdc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xdc.checkpoint import list_checkpoints, load_latest

PYTHON = sys.executable


def xdc(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "xdc", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(), **kwargs)


def _env() -> dict[str, str]:
    # One thread per process keeps two concurrent ranks from fighting over 2 cores; no MLflow server is involved.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--out", str(out), "--preset", "tiny", "--no-track", "--quiet", *extra]


@pytest.mark.parametrize("args, message", [
    (["--data", "missing-folder"], "missing-folder"),
    (["--variant", "xdcc"], "variant must be one of xdc, sdc, mdc, cdc, supervised, got 'xdcc'"),
    (["--set", "cluster.k_vido=4"], "cluster.k_vido"),
    (["--set", "rounds=two"], "rounds"),
    (["--set", "rounds=0"], "rounds"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--config", "nowhere.yaml"], "nowhere.yaml"),
    (["--layout", "ucf101"], "classInd.txt"),
    (["--set", "optim.momentum=nan"], "optim.momentum must be a finite number"),
    (["--set", "optim.lr=inf"], "optim.lr must be a finite number"),
    (["--set", "seed=4294967296"], "seed must be at most 4294967295"),
    (["--set", "rounds=100000"], "XDC_LIMITS raises it"),
    (["--set", "data.layout=kinetic"], "data.layout must be one of"),
    (["--set", "data.split=val"], "data.split must be one of all, train"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(synthetic_root, tmp_path, args, message):
    # argparse keeps the last value of a repeated flag, so the bad one overrides the good default
    argv = ["pretrain", "--quiet", "--data", str(synthetic_root), "--out", "out", "--preset", "tiny", *args]

    done = xdc(*argv, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xdc: error: ") and message in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == []  # no output folder, no ./mlruns


@pytest.mark.parametrize("case", ["non-utf8-config", "out-is-a-file", "out-under-a-file"])
def test_a_bad_file_argument_is_one_line_exit_2_and_writes_nothing(synthetic_root, tmp_path, case):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "config.yaml").write_bytes(b"rounds: 2\n# caf\xe9\n")
    (inputs / "a-file").write_text("")
    argv = {"non-utf8-config": ["--out", "out", "--config", str(inputs / "config.yaml")],
            "out-is-a-file": ["--out", str(inputs / "a-file")],
            "out-under-a-file": ["--out", str(inputs / "a-file" / "run")]}[case]

    done = xdc("pretrain", "--quiet", "--no-track", "--data", str(synthetic_root), "--preset", "tiny", *argv,
               cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xdc: error: "), done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "config.yaml", "inputs"]


@pytest.mark.slow
def test_sigterm_checkpoints_and_stops_then_a_rerun_resumes_and_finishes(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(synthetic_root, out, "--set", "rounds=3")
    process = subprocess.Popen([PYTHON, "-m", "xdc", *args], cwd=tmp_path, env=_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(out, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 0, stderr
    assert "stopped on request" in stdout
    stopped_at = load_latest(out / "checkpoints")["position"]
    assert not (out / "final.pt").exists()

    rerun = xdc(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from the checkpoint at round {stopped_at['round']}, epoch {stopped_at['epoch']}" in rerun.stdout
    assert (out / "final.pt").exists()
    assert load_latest(out / "checkpoints")["position"]["round"] == 3


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(synthetic_root, out, "--set", "rounds=3")
    process = subprocess.Popen([PYTHON, "-m", "xdc", *args], cwd=tmp_path, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(out, process)
    process.kill()  # SIGKILL: no chance to save anything more
    process.wait(timeout=30)
    latest = load_latest(out / "checkpoints")["position"]

    rerun = xdc(*args, cwd=tmp_path)

    assert rerun.returncode == 0, rerun.stderr
    assert f"global step {latest['global_step']}" in rerun.stdout
    assert (out / "final.pt").exists()


@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_trains_to_the_end(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "xdc", *tiny_args(synthetic_root, out)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(out / "final.pt", weights_only=False)
    assert final["config"]["rounds"] == 2
    # only rank 0 writes checkpoints, and each holds the assignments rank 0 clustered for all videos
    state = load_latest(out / "checkpoints")
    assert state["position"]["round"] == 2
    assert len(state["previous"]["audio"]) == len(state["videos"])
    assert all(path.name.startswith("step_") for path in list_checkpoints(out / "checkpoints"))


def test_make_dataset_writes_real_media(tmp_path):
    done = xdc("make-dataset", "synthetic", str(tmp_path / "set"), "--videos", "6", "--classes", "2",
               "--duration", "1.5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 6 videos of 2 classes" in done.stdout
    assert len(list((tmp_path / "set" / "videos").glob("*.mp4"))) == 6


def test_xdc_imports_neither_django_nor_celery():
    code = (
        "import importlib, pkgutil, sys, xdc\n"
        "for module in pkgutil.walk_packages(xdc.__path__, 'xdc.'):\n"
        "    if not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "bad = sorted(name for name in sys.modules if name.split('.')[0] in ('django', 'celery', 'kombu'))\n"
        "print(len([name for name in sys.modules if name.startswith('xdc.')]))\n"
        "sys.exit(f'imported: {bad}' if bad else 0)\n"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 15  # the walk really imported the package's modules


def _wait_for_checkpoint(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list_checkpoints(out / "checkpoints"):
            return
        if process.poll() is not None:
            raise AssertionError(f"xdc exited early with code {process.returncode}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB file system (tmpfs) to fill; skipped where this process may not mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not permitted'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_with_the_reason_not_a_bus_error(synthetic_root, small_disk, tmp_path):
    (small_disk / "filler").write_bytes(b"\0" * (15 << 20))  # what another job left on the shared disk
    done = xdc(*tiny_args(synthetic_root, small_disk / "run"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not enough free disk space for the round's feature files" in done.stderr

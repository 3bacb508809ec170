"""The loopback SLURM cluster that the multi-node tests run on is a real one: two nodes, one task on each, a batch
job's steps placed on both, and a signal sent through SLURM delivered to the batch script (the way `--signal`
warnings before a time limit or preemption arrive)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def test_srun_places_one_task_on_each_node(slurm_cluster):
    result = slurm_cluster.run(["srun", "-N2", "-n2", "bash", "-c", "echo $SLURMD_NODENAME $SLURM_PROCID"])
    assert sorted(result.stdout.split("\n")[:2]) == ["n1 0", "n2 1"], slurm_cluster.logs()


def test_a_batch_job_runs_on_both_nodes_and_its_script_gets_a_signal_through_slurm(slurm_cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n"
                      "trap 'echo warned; exit 0' USR1\n"
                      "srun bash -c 'echo step on $SLURMD_NODENAME'\n"
                      "scancel --batch --signal=USR1 $SLURM_JOB_ID\n"
                      "sleep 60 & wait\n")
    job = slurm_cluster.run(["sbatch", "--parsable", "-N2", "--ntasks-per-node=1", "-o", str(tmp_path / "out.txt"),
                             str(script)]).stdout.strip()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and slurm_cluster.run(["squeue", "-h", "-j", job], check=False).stdout.strip():
        time.sleep(0.5)
    out = (tmp_path / "out.txt").read_text()
    assert sorted(line for line in out.splitlines() if line.startswith("step")) == ["step on n1", "step on n2"], out
    assert "warned" in out, slurm_cluster.logs()

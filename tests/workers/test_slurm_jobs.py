"""Jobs placed by SLURM through the lab: a real head-node worker (`SLURM=1 deploy/worker.sh`) submits them with sbatch
to the loopback cluster of two nodes (tests/slurm.py), supervises and cancels them; what no partition can hold is
refused at submission."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import _use_broker
from webapp.lab import services

pytestmark = pytest.mark.slow
TWO_NODES = {"resource": "cpu", "nodes": 2, "launcher": "slurm"}


@pytest.fixture
def broker(private_broker):
    app, url = private_broker
    _use_broker(app, url)
    return url


@pytest.fixture
def slurm_worker(slurm_cluster, start_worker, monkeypatch):
    """The head-node worker, and the site's view of the same cluster (the service asks sinfo at submission)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    services._SLURM_CACHE.clear()
    process, log = start_worker("head", SLURM="1", SLURM_CONF=str(slurm_cluster.conf), OMP_NUM_THREADS="1")
    yield log
    services._SLURM_CACHE.clear()


def test_a_two_node_job_runs_as_one_slurm_job_with_one_mlflow_run(slurm_worker, slurm_cluster, own_jobs, videos,
                                                                   mlflow_server):
    job = own_jobs.submit(videos, "rounds=3", resources=TWO_NODES)
    assert job.queue_name == "slurm" and job.placement == "2 nodes x cpu, slurm"
    job = own_jobs.wait(job, "succeeded", timeout=300)

    assert "trainer started: SLURM job" in job.log_tail
    assert "[slurm] job" in job.log_tail and "on n[1-2]" in job.log_tail  # the job's own output, both nodes
    assert Path(job.out_dir, "final.pt").is_file()
    assert all(path.name.startswith(("step_", "final")) for path in Path(job.out_dir, "checkpoints").iterdir())
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert [r.info.run_id for r in runs] == [job.mlflow_run_id] and runs[0].info.status == "FINISHED"


def test_cancel_stops_every_rank_of_a_slurm_job(slurm_worker, slurm_cluster, own_jobs, videos, mlflow_server):
    job = own_jobs.submit(videos, "rounds=200", resources=TWO_NODES)
    checkpoints = Path(job.out_dir, "checkpoints")
    own_jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()), timeout=300)

    services.cancel_job(job)
    job = own_jobs.wait(job, "cancelled", timeout=300)
    assert MlflowClient(mlflow_server).get_run(job.mlflow_run_id).info.status == "KILLED"
    assert not Path(job.out_dir, "final.pt").exists()
    assert slurm_cluster.run(["squeue", "-h"]).stdout.strip() == ""  # nothing left on the cluster


@pytest.mark.parametrize("resources, key, message", [
    ({**TWO_NODES, "partition": "gpu"}, "partition", "the SLURM cluster has no partition 'gpu'; it has debug"),
    ({**TWO_NODES, "nodes": 3}, "nodes", "partition debug has 2 nodes; the job asks for 3"),
    ({"resource": "gpu", "gpus": 1, "launcher": "slurm"}, "gpus", "hold at most 0 GPUs"),
])
def test_what_no_partition_can_hold_is_refused_at_submission(slurm_cluster, own_jobs, videos, monkeypatch,
                                                            resources, key, message):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    services._SLURM_CACHE.clear()
    with pytest.raises(services.LabError) as refused:
        own_jobs.submit(videos, resources=resources)
    assert message in refused.value.errors[key][0]
    assert not own_jobs.team.jobs.exists()

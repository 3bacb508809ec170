"""Jobs placed by SLURM through the lab: a real head-node worker (`SLURM=1 deploy/worker.sh`) submits them with sbatch
to the loopback cluster of two nodes (deploy/slurm_loopback.py), supervises and cancels them; a node that dies, the cluster's
warning before a preemption and a scancel from outside the lab each end where they should; what no partition can
hold is refused at submission."""

from __future__ import annotations

from pathlib import Path

import json

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
    process, log = start_worker("head", SLURM="1", SLURM_CONF=str(slurm_cluster.conf), OMP_NUM_THREADS="1",
                                LAB_REQUEUE_BACKOFF_SECONDS="1")
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


def running_with_a_checkpoint(own_jobs, job, timeout: float = 300):
    checkpoints = Path(job.out_dir, "checkpoints")
    return own_jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()),
                         timeout=timeout)


def slurm_job_id(job, attempt: int = 1) -> str:
    return json.loads(Path(job.out_dir, "attempts", str(attempt), "slurm.json").read_text())["job_id"]


def one_run(mlflow_server, job):
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert [r.info.run_id for r in runs] == [job.mlflow_run_id]
    return runs[0]


def test_a_node_that_dies_fails_the_attempt_and_the_retry_resumes(slurm_worker, slurm_cluster, own_jobs, videos,
                                                                  mlflow_server):
    job = running_with_a_checkpoint(own_jobs, own_jobs.submit(videos, "rounds=60", resources=TWO_NODES))
    slurm_cluster.kill_node("n2")  # its slurmd and everything SLURM started on it
    slurm_cluster.start_node("n2")  # and it reboots

    job = own_jobs.wait(job, "succeeded", timeout=400)
    assert job.attempt == 2 and job.worker_losses == 1, job.log_tail
    assert "requeued (the trainer ended as SLURM job" in job.events  # kept apart from the trainer's lines
    assert "attempt 2 resumed from the checkpoint at round" in job.events
    assert one_run(mlflow_server, job).info.status == "FINISHED"


def test_the_clusters_warning_checkpoints_and_requeues_and_the_job_resumes(slurm_worker, slurm_cluster, own_jobs,
                                                                           videos, mlflow_server):
    job = running_with_a_checkpoint(own_jobs, own_jobs.submit(videos, "rounds=60", resources=TWO_NODES))
    slurm_cluster.run(["scancel", "--signal=USR1", slurm_job_id(job)])  # what --signal=USR1@120 sends

    job = own_jobs.wait(job, "succeeded", timeout=400)
    assert job.attempt == 2 and job.worker_losses == 0
    assert "the cluster warned of its time limit or a preemption: checkpointed, back in the queue" in job.events
    assert "attempt 2 resumed from the checkpoint" in job.events
    assert one_run(mlflow_server, job).info.status == "FINISHED"


def test_scancel_from_outside_the_lab_ends_the_job_cancelled_with_the_reason(slurm_worker, slurm_cluster, own_jobs,
                                                                             videos, mlflow_server):
    job = running_with_a_checkpoint(own_jobs, own_jobs.submit(videos, "rounds=200", resources=TWO_NODES))
    slurm_cluster.run(["scancel", slurm_job_id(job)])

    job = own_jobs.wait(job, "cancelled", timeout=300)
    assert job.error.startswith("stopped from outside the lab by SIGTERM") and "CANCELLED" in job.error, job.error
    assert one_run(mlflow_server, job).info.status == "KILLED"


@pytest.mark.parametrize("resources, key, message", [
    ({**TWO_NODES, "partition": "gpu"}, "partition", "the SLURM cluster has no partition 'gpu'; it has debug"),
    ({**TWO_NODES, "nodes": 3}, "nodes", "partition debug has 2 nodes; the job asks for 3"),
    ({"resource": "gpu", "gpus": 1, "launcher": "slurm"}, "gpus", "hold at most 0 GPUs"),
    ({**TWO_NODES, "cpu_ranks": 2}, "cpu_ranks", "hold at most 1 CPUs; the job asks for 2 ranks per node"),
])
def test_what_no_partition_can_hold_is_refused_at_submission(slurm_cluster, own_jobs, videos, monkeypatch,
                                                            resources, key, message):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    services._SLURM_CACHE.clear()
    with pytest.raises(services.LabError) as refused:
        own_jobs.submit(videos, resources=resources)
    assert message in refused.value.errors[key][0]
    assert not own_jobs.team.jobs.exists()

"""Jobs run by a real Celery worker (deploy/worker.sh) on a real broker, against the test database and a real
MLflow server: success (one process, and torchrun's ranks), cancel and resume, failure, a crashed trainer, and the
guarantees against running a job twice."""

from __future__ import annotations

from datetime import timedelta
import os
import signal
import time
from pathlib import Path

import pytest
from django.utils import timezone
from mlflow.tracking import MlflowClient

from tests.conftest import running_in
from webapp.lab import services
from webapp.lab.models import Job

pytestmark = pytest.mark.slow


def test_it_runs_a_pretraining_to_success_with_an_mlflow_run(jobs, videos, mlflow_server):
    job = jobs.wait(jobs.submit(videos), "succeeded")

    assert job.attempt == 1 and job.progress == 1.0 and job.error == ""
    assert Path(job.out_dir, "final.pt").is_file()
    run = MlflowClient(mlflow_server).get_run(job.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == job.mlflow_experiment_id
    assert {k: run.data.tags[k] for k in ("job_id", "user", "team")} == {"job_id": str(job.pk), "user": "ada",
                                                                          "team": "vision"}
    assert "train/loss" in run.data.metrics
    # the trainer's own lines reach the job's log tail: the data's screening, each round's clusters, the end
    assert "xdc.attempt: data: 8 usable videos" in job.log_tail
    assert "round 1/2 clusters: video 4/4 used" in job.log_tail and "round 2/2 clusters:" in job.log_tail
    assert "epoch done" in job.log_tail and "xdc.attempt: finished" in job.log_tail


def test_a_two_rank_job_trains_as_torchrun_ranks_in_one_mlflow_run(jobs, videos, mlflow_server):
    job = jobs.wait(jobs.submit(videos, "rounds=3", resources={"resource": "cpu", "cpu_ranks": 2}), "succeeded")

    assert job.placement == "cpu, 2 ranks" and "trainer started: torchrun, 2 CPU ranks" in job.log_tail
    assert Path(job.out_dir, "final.pt").is_file()
    assert all(path.name.startswith(("step_", "final")) for path in Path(job.out_dir, "checkpoints").iterdir())
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert [r.info.run_id for r in runs] == [job.mlflow_run_id] and runs[0].info.status == "FINISHED"
    steps = [m.step for m in MlflowClient(mlflow_server).get_metric_history(job.mlflow_run_id, "train/loss")]
    assert steps and len(steps) == len(set(steps))  # rank 0 alone logs
    assert job.log_tail.count("round 3/3 clusters:") == 1  # and alone tells the log tail


def test_cancel_checkpoints_and_stops_every_rank_of_a_two_rank_job(jobs, videos, mlflow_server):
    job = jobs.submit(videos, "rounds=200", resources={"resource": "cpu", "cpu_ranks": 2})
    checkpoints = Path(job.out_dir, "checkpoints")
    jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()))

    services.cancel_job(job)
    job = jobs.wait(job, "cancelled")
    assert MlflowClient(mlflow_server).get_run(job.mlflow_run_id).info.status == "KILLED"
    assert "stop requested: the trainer checkpoints and stops" in job.log_tail
    assert not running_in(Path(job.out_dir, "attempts", "1"))  # the agent and both ranks have ended
    assert not Path(job.out_dir, "final.pt").exists()


def test_a_crashed_trainer_fails_the_attempt_with_its_last_words_and_the_worker_lives_on(jobs, videos,
                                                                                       mlflow_server):
    job = jobs.submit(videos, "rounds=50")
    job = jobs.wait(job, "running", until=lambda j: j.progress > 0)
    [trainer] = running_in(Path(job.out_dir, "attempts", "1"))
    os.kill(trainer, signal.SIGSEGV)

    job = jobs.wait(job, "failed")
    assert job.error.startswith("the trainer was killed by SIGSEGV before reporting an outcome"), job.error
    assert "\n" not in job.error and "Fatal Python error: Segmentation fault" in job.log_tail  # its stack
    run = MlflowClient(mlflow_server).get_run(job.mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == job.error
    assert jobs.wait(jobs.submit(videos, "rounds=1"), "succeeded").worker == job.worker  # the same worker, alive


def test_it_stops_a_running_job_on_cancel_and_a_retry_resumes_from_its_checkpoint(jobs, videos,
                                                                                     mlflow_server):
    job = jobs.submit(videos, "rounds=10")
    checkpoints = Path(job.out_dir, "checkpoints")
    jobs.wait(job, "running", until=lambda j: checkpoints.is_dir() and any(checkpoints.iterdir()))

    services.cancel_job(job)
    job = jobs.wait(job, "cancelled")
    client = MlflowClient(mlflow_server)
    assert client.get_run(job.mlflow_run_id).info.status == "KILLED"
    assert not Path(job.out_dir, "final.pt").exists()
    first_run = job.mlflow_run_id

    job = jobs.wait(services.retry_job(job), "succeeded")
    assert job.attempt == 2
    assert job.mlflow_run_id == first_run  # the same MLflow run goes on
    assert "attempt 2 resumed from the checkpoint at round" in job.log_tail
    assert client.get_run(first_run).info.status == "FINISHED"


def test_it_fails_a_job_whose_data_went_bad_with_the_reason_in_the_row_and_in_mlflow(jobs, videos,
                                                                                      mlflow_server, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for video in sorted(videos.glob("videos/*.mp4")):
        (broken / video.name).write_bytes(b"not a video any more")

    job = jobs.wait(jobs.submit(broken), "failed")

    assert job.error.startswith(f"no usable video in {broken}") and "\n" not in job.error
    # the traceback is the log tail's, down to its last line
    assert "Traceback (most recent call last)" in job.log_tail
    assert job.log_tail.rstrip().endswith(f"xdc.errors.DataError: {job.error}"), job.log_tail[-500:]
    run = MlflowClient(mlflow_server).get_run(job.mlflow_run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == job.error
    assert run.data.tags["job_id"] == str(job.pk)


def test_it_requeues_a_job_whose_worker_vanished_and_runs_it_exactly_once(jobs, videos, settings,
                                                                         mlflow_server):
    from workers.tasks import run_job

    settings.LAB_ENQUEUE = "none"
    job = jobs.submit(videos)
    assert services.claim_job(job.pk, worker="vanished@nowhere", task_id="lost") is not None
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))  # then it vanished
    settings.LAB_ENQUEUE = "celery"
    run_job.apply_async(args=[job.pk], queue="cpu")  # the vanished worker's message, redelivered: claims nothing

    assert services.requeue_stale_jobs(timeout_s=60) == [job.pk]
    assert services.requeue_stale_jobs(timeout_s=60) == []  # a second sweeper finds nothing left to requeue
    run_job.apply_async(args=[job.pk], queue="cpu")  # and one more duplicate while the new attempt runs

    job = jobs.wait(job, "succeeded")
    assert job.attempt == 2  # the vanished attempt and exactly one more
    runs = MlflowClient(mlflow_server).search_runs([job.mlflow_experiment_id], f"tags.job_id = '{job.pk}'")
    assert [r.info.run_id for r in runs] == [job.mlflow_run_id]
    assert "requeued" in job.log_tail


def test_it_never_runs_a_job_cancelled_while_queued(jobs, videos, settings):
    from workers.tasks import run_job

    settings.LAB_ENQUEUE = "none"
    job = services.cancel_job(jobs.submit(videos))
    marker = jobs.submit(videos, "rounds=1")  # runs after the cancelled job's message
    settings.LAB_ENQUEUE = "celery"
    run_job.apply_async(args=[job.pk], queue="cpu")
    services.enqueue(marker)

    jobs.wait(marker, "succeeded")
    job.refresh_from_db()
    assert (job.status, job.attempt, job.mlflow_run_id) == ("cancelled", 0, "")


def test_a_worker_lists_a_dataset_registered_on_the_site(jobs, videos):
    from webapp.lab.models import Dataset

    dataset = services.register_dataset(team=jobs.team, name="listed-by-a-worker", layout="folder", path=str(videos),
                                        user=jobs.user, background=True)
    assert dataset.status == "listing"
    deadline = time.monotonic() + 120
    while dataset.status == "listing" and time.monotonic() < deadline:
        time.sleep(0.2)
        dataset = Dataset.objects.get(pk=dataset.pk)
    assert (dataset.status, dataset.files, dataset.classes) == ("ready", 8, 4), (dataset.error, jobs.lab.log_tail())


def test_a_prepare_job_writes_a_store_that_becomes_a_dataset_and_trains(jobs, videos, mlflow_server):
    from webapp.lab.models import Dataset

    source = services.register_dataset(team=jobs.team, name="to-prepare", layout="folder", path=str(videos),
                                       user=jobs.user)
    [job] = services.submit_jobs(jobs.user, jobs.team, "prepare", [{"store": {"short_side": 40}, "workers": 2}],
                                 dataset=source, resources={"resource": "cpu"})
    job = jobs.wait(job, "succeeded")
    run = MlflowClient(mlflow_server).get_run(job.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["job_id"] == str(job.pk)
    assert run.data.metrics["videos"] == 8 and run.data.params["store.short_side"] == "40"
    assert "stored 8 videos" in job.log_tail
    store = Dataset.objects.get(prepared_from=source)
    assert (store.status, store.files, store.layout, store.path) == ("ready", 8, "folder",
                                                                     str(Path(job.out_dir, "store")))
    trained = jobs.wait(jobs.submit(Path(store.path), "data.resize_short=40", "data.crop_size=32"), "succeeded")
    assert trained.dataset == store and Path(trained.out_dir, "final.pt").is_file()

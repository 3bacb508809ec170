"""Celery tasks: thin interfaces to `webapp.lab.services`. They take a job id, never an object."""

from celery import shared_task

from webapp.lab import services
from workers import gpus
from workers.runner import run_attempt


@shared_task(name="workers.tasks.run_job", bind=True)
def run_job(self, job_id: int) -> None:
    """Run one job, on GPUs of this worker's set that no other job holds (workers/gpus.py; none are free: the job
    goes back to its queue unclaimed). A message for a job that is cancelled, finished or already running elsewhere
    (a redelivery, or the old message of a requeued job) finds nothing to claim and is acknowledged without effect."""
    with gpus.lease(services.local_gpus(job_id), hostname=self.request.hostname) as held:
        if held is None:
            services.send_back(job_id)
            return
        job = services.claim_job(job_id, worker=self.request.hostname, task_id=self.request.id)
        if job is not None:
            run_attempt(job, gpus=held)


@shared_task(name="workers.tasks.list_dataset", acks_late=True, reject_on_worker_lost=True)
def list_dataset(dataset_id: int) -> None:
    """Read a registered dataset's folder and store its counts or why it cannot be read (a redelivery finds the
    dataset listed already and does nothing)."""
    services.list_dataset(dataset_id)

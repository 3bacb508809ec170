"""A worker that owns a GPU set (`GPUS=0,1,2,3 deploy/worker.sh`) serves four 1-GPU jobs side by side and a 4-GPU job
from the same GPUs, never two jobs on one GPU. This machine has no GPU: the trainers run on the CPU, and what is
checked is the lab's bookkeeping (which GPUs each attempt was given, when it ran)."""

from __future__ import annotations

import re
from itertools import combinations

import pytest

from tests.conftest import _use_broker
from workers.gpus import GpuSet

pytestmark = pytest.mark.slow


def test_a_gpu_set_hands_out_free_gpus_only():
    owned = GpuSet(["0", "1", "2", "3"])
    two = owned.acquire(2)
    assert two == ["0", "1"] and owned.wanted_queues() == {"gpu1", "gpu2"}
    assert owned.acquire(3) is None
    one = owned.acquire(1)
    assert one == ["2"] and owned.free == 1
    owned.release(two)
    assert owned.acquire(3) == ["0", "1", "3"] and owned.wanted_queues() == set()


@pytest.fixture
def broker(private_broker):
    app, url = private_broker
    _use_broker(app, url)
    return url


def gpus_of(job) -> set[str]:
    found = re.search(r"started on \S+, GPUs ([\d,]+)", job.log_tail)
    assert found, job.log_tail
    return set(found.group(1).split(","))


def test_one_worker_serves_four_one_gpu_jobs_at_once_and_a_four_gpu_job_on_the_same_gpus(start_worker, own_jobs,
                                                                                        videos):
    start_worker("gpus", GPUS="0,1,2,3", OMP_NUM_THREADS="1")
    small = [own_jobs.submit(videos, "rounds=12", f"seed={seed}", resources={"gpus": 1}) for seed in range(4)]
    large = own_jobs.submit(videos, "rounds=2", resources={"gpus": 4})
    assert {job.queue_name for job in small} == {"gpu1"} and large.queue_name == "gpu4"

    finished = [own_jobs.wait(job, "succeeded", timeout=400) for job in [*small, large]]
    small, large = finished[:4], finished[4]
    assert sorted(gpu for job in small for gpu in gpus_of(job)) == ["0", "1", "2", "3"]  # one GPU each, all different
    assert gpus_of(large) == {"0", "1", "2", "3"}
    assert max(job.started_at for job in small) < min(job.finished_at for job in small)  # all four ran at once
    for one, other in combinations(finished, 2):  # never two jobs on one GPU at the same time
        overlap = one.started_at < other.finished_at and other.started_at < one.finished_at
        assert not (overlap and gpus_of(one) & gpus_of(other)), (one.pk, other.pk)

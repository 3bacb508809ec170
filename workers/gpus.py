"""The GPUs a worker owns, and the rule by which one worker serves jobs of any size up to them.

`make worker GPUS=0,1,2,3` starts one worker that owns GPUs 0-3 (`LAB_WORKER_GPUS`) and supervises up to 4 jobs at
once (threads pool; the trainers are processes of their own). A local GPU job asking for g GPUs goes to queue
`gpu<g>`. The rule: **a worker consumes queue gpu<g> exactly while g of its GPUs are free**, larger sizes first. So
with all four free it takes a 4-GPU job or 1-GPU jobs, whichever comes first; with three busy it takes only 1-GPU
jobs; with all busy it takes nothing and leaves the queue to other workers. A job is started only on GPUs no other
job of the worker holds (its trainer sees them as CUDA_VISIBLE_DEVICES), and a message that reached the worker
before it stopped taking that size (Celery prefetches) goes back to its queue unclaimed. A job never waits in a
worker that cannot run it, and never on a GPU that another job holds. There is no reservation: a stream of small
jobs can keep a large one waiting on a busy host (SLURM's backfill is the tool when that matters).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

log = logging.getLogger(__name__)


def queue_for(gpus: int) -> str:
    return f"gpu{gpus}"


class GpuSet:
    """The GPU ids this worker owns and which are free; thread-safe (the pool's threads share it)."""

    def __init__(self, ids: list[str]):
        self.ids = list(ids)
        self._free = list(ids)
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self, count: int) -> list[str] | None:
        with self._lock:
            if count > len(self._free):
                return None
            held, self._free = self._free[:count], self._free[count:]
            return held

    def release(self, held: list[str]) -> None:
        with self._lock:
            self._free = [gpu for gpu in self.ids if gpu in self._free or gpu in held]

    def wanted_queues(self) -> set[str]:
        with self._lock:
            return {queue_for(n) for n in range(1, len(self._free) + 1)}


OWNED = GpuSet([gpu for gpu in os.environ.get("LAB_WORKER_GPUS", "").split(",") if gpu.strip()])
_SENDING = threading.Lock()  # one update at a time, so a stale list never lands after a newer one


@contextlib.contextmanager
def lease(count: int, *, hostname: str, owned: GpuSet = OWNED):
    """The GPUs a job of `count` GPUs runs on: [] when this worker owns no GPU set (it runs what it is given, as
    before), None when they are not free here now. The worker's queues follow its free GPUs before and after."""
    if not owned.ids or count == 0:
        yield []
        return
    held = owned.acquire(count)
    follow_free_gpus(hostname, owned)
    try:
        yield held
    finally:
        if held:
            owned.release(held)
            follow_free_gpus(hostname, owned)


def follow_free_gpus(hostname: str, owned: GpuSet = OWNED) -> None:
    """Consume gpu<g> for every g up to the free count, and no larger size: remote control to this worker itself (its
    consumer's loop applies it). The whole list is sent every time (adding a queue consumed already, or cancelling
    one that is not, changes nothing), after every lease and release and from the watchdog's every sweep, so an
    update lost to a broker outage or a reconnection is made good soon."""
    from workers.celery import app

    if not owned.ids:
        return
    with _SENDING:
        _send_queues(app, hostname, owned)


def _send_queues(app, hostname: str, owned: GpuSet) -> None:
    wanted = owned.wanted_queues()
    try:
        for size in range(len(owned.ids), 0, -1):
            queue = queue_for(size)
            if queue in wanted:
                app.control.add_consumer(queue, destination=[hostname], reply=False)
            else:
                app.control.cancel_consumer(queue, destination=[hostname], reply=False)
    except Exception:  # the broker is away
        log.warning("could not update the queues this worker consumes", exc_info=True)

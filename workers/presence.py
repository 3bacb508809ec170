"""Which queues the lab's workers consume now, announced in the broker: each worker's watchdog thread writes the
names of the queues its consumer reads under a key of its own that expires after three sweeps, so the site can say
of a waiting job that no worker serves its queue (`services.waiting_reason`) without asking every worker and
waiting for their replies. A worker that dies stops renewing its key; a clean shutdown deletes it."""

from __future__ import annotations

import json
import logging

from django.conf import settings

log = logging.getLogger(__name__)
PREFIX = "xdc:worker-queues:"
_consumer = None


def _redis():
    import redis

    from workers.celery import app

    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        raise RuntimeError(f"worker presence needs a Redis broker, not {url.split(':', 1)[0]}")
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def track(consumer) -> None:
    """Remember the worker's consumer (the worker_ready signal's sender), whose queues `announce` reports."""
    global _consumer
    _consumer = consumer


def consumed_queues() -> list[str]:
    task_consumer = getattr(_consumer, "task_consumer", None)
    return sorted({queue.name for queue in getattr(task_consumer, "queues", None) or []})


def announce(hostname: str) -> None:
    """Write this worker's queues; an unreachable broker is logged and the next sweep tries again."""
    if not hostname:
        return
    ttl = 3 * settings.LAB_WATCHDOG_SECONDS
    try:
        _redis().set(PREFIX + hostname, json.dumps(consumed_queues()), ex=ttl)
    except Exception:
        log.info("could not announce this worker's queues", exc_info=True)


def withdraw(hostname: str) -> None:
    try:
        _redis().delete(PREFIX + hostname)
    except Exception:
        log.info("could not withdraw this worker's queues", exc_info=True)


def served_queues() -> set[str]:
    """The union of the queues every live worker announced (raises when the broker cannot be read)."""
    client = _redis()
    keys = list(client.scan_iter(match=PREFIX + "*", count=200))
    served: set[str] = set()
    for raw in client.mget(keys) if keys else []:
        if raw:
            served.update(json.loads(raw))
    return served

"""The platform's Celery workers: thin tasks that claim a job row, call `xdc`, and record the outcome.

`celery -A workers worker ...` finds the app here.
"""

from workers.celery import app

__all__ = ["app"]

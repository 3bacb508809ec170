"""The Celery app, configured from Django settings under the CELERY_ namespace (see the Celery block at the end of
webapp/settings.py). Tasks use the ORM, so Django is set up before they are imported.
"""

import os

import django
from celery import Celery
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
if not apps.ready and not apps.loading:  # the web process imports this after its own set-up
    django.setup()

app = Celery("xdclab", include=["workers.tasks", "workers.watchdog"])
app.config_from_object("django.conf:settings", namespace="CELERY")

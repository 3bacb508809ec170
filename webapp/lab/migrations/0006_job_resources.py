"""A job's resources become one typed part (xdc.launch.Resources): resource, GPUs per node, nodes, launcher,
partition and CPU ranks in one JSON field instead of the `resource` and `gpus` columns."""

from django.db import migrations, models

import webapp.lab.models


def to_resources(apps, schema_editor):
    Job = apps.get_model("lab", "Job")
    for job in Job.objects.only("pk", "resource", "gpus").iterator():
        cpu = job.resource == "cpu"
        job.resources = {"resource": job.resource, "gpus": 0 if cpu else max(1, job.gpus), "nodes": 1,
                         "launcher": "local", "partition": "", "cpu_ranks": 1}
        job.save(update_fields=["resources"])
    # GPU jobs now go to queue gpu<g>: a queued job's message in the old queue "gpu" would wait for ever, so the
    # watchdog sends every queued job again (a second message for a job is harmless: only one attempt claims it).
    Job.objects.filter(status="queued").update(message_sent_at=None)


def to_columns(apps, schema_editor):
    Job = apps.get_model("lab", "Job")
    for job in Job.objects.only("pk", "resources").iterator():
        job.resource = job.resources.get("resource", "gpu")
        job.gpus = job.resources.get("gpus", 1)
        job.save(update_fields=["resource", "gpus"])


class Migration(migrations.Migration):
    dependencies = [("lab", "0005_dataset_listing")]

    operations = [
        migrations.AddField(model_name="job", name="resources",
                            field=models.JSONField(default=webapp.lab.models.default_resources)),
        migrations.RunPython(to_resources, to_columns),
        migrations.RemoveField(model_name="job", name="resource"),
        migrations.RemoveField(model_name="job", name="gpus"),
    ]

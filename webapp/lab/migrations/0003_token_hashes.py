"""API tokens keep a SHA-256 hash of their key instead of the key, and may expire. Existing keys keep working:
each is hashed in place before the key column goes."""

import hashlib

from django.db import migrations, models


def hash_existing_keys(apps, schema_editor):
    ApiToken = apps.get_model("lab", "ApiToken")
    for token in ApiToken.objects.all():
        token.key_hash = hashlib.sha256(token.key.encode()).hexdigest()
        token.prefix = token.key[:8]
        token.save(update_fields=["key_hash", "prefix"])


class Migration(migrations.Migration):
    dependencies = [("lab", "0002_team_roots")]

    operations = [
        migrations.AddField("apitoken", "key_hash", models.CharField(max_length=64, null=True, editable=False)),
        migrations.AddField("apitoken", "prefix", models.CharField(
            max_length=8, default="", editable=False, help_text="the key's first characters, to recognise it")),
        migrations.AddField("apitoken", "expires_at", models.DateTimeField(null=True, blank=True)),
        migrations.RunPython(hash_existing_keys, migrations.RunPython.noop),
        migrations.RemoveField("apitoken", "key"),
        migrations.AlterField("apitoken", "key_hash", models.CharField(max_length=64, unique=True, editable=False)),
        migrations.AlterField("apitoken", "prefix", models.CharField(
            max_length=8, editable=False, help_text="the key's first characters, to recognise it")),
    ]

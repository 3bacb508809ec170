import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('lab', '0007_prepared_stores'),
    ]

    operations = [
        migrations.CreateModel(
            name='JobCurves',
            fields=[
                ('job', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='cached_curves', serialize=False, to='lab.job')),
                ('curves', models.JSONField()),
                ('finished_at', models.DateTimeField(null=True)),
                ('stored_at', models.DateTimeField(auto_now=True)),
            ],
        ),
    ]

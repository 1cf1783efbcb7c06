"""Recovery rows now point at the job backbone's Job (same table, state only)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0001_initial"),
        ("backupsite", "0003_jobs_from_protection"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="recoverydraft",
                    name="job",
                    field=models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="recovery_draft",
                        to="backupsite.job",
                    ),
                ),
                migrations.AlterField(
                    model_name="recoveryitemresult",
                    name="job",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="recovery_items",
                        to="backupsite.job",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]

"""Job and VMLock now belong to the job backbone (app label ``backupsite``).

State only: the tables are untouched here; foreign keys keep pointing at the same rows.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("protection", "0002_alerts_and_drafts"),
        ("backupsite", "0003_jobs_from_protection"),
        ("recovery", "0002_jobs_to_backbone"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="alert",
                    name="job",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="alerts",
                        to="backupsite.job",
                    ),
                ),
                migrations.DeleteModel(name="VMLock"),
                migrations.DeleteModel(name="Job"),
            ],
            database_operations=[],
        ),
    ]

"""A protection-group draft's step is the step's key ("members" ... "summary"), as
in recovery drafts; both now share backupsite.core.drafts.WizardDraft."""

from typing import Any

from django.db import migrations, models

# The wizard's steps in order, as they were numbered 1..7.
STEP_KEYS = ["members", "method", "goals", "allocation", "replica", "consistency", "summary"]


def numbers_to_keys(apps: Any, schema_editor: Any) -> None:
    Draft = apps.get_model("protection", "ProtectionGroupDraft")
    for number, key in enumerate(STEP_KEYS, start=1):
        Draft.objects.filter(step=str(number)).update(step=key)
    Draft.objects.exclude(step__in=STEP_KEYS).update(step=STEP_KEYS[0])


def keys_to_numbers(apps: Any, schema_editor: Any) -> None:
    Draft = apps.get_model("protection", "ProtectionGroupDraft")
    for number, key in enumerate(STEP_KEYS, start=1):
        Draft.objects.filter(step=key).update(step=str(number))
    Draft.objects.exclude(step__in=[str(n) for n in range(1, len(STEP_KEYS) + 1)]).update(step="1")


class Migration(migrations.Migration):
    dependencies = [
        ("protection", "0003_jobs_to_backbone"),
    ]

    operations = [
        migrations.AlterField(
            model_name="protectiongroupdraft",
            name="step",
            field=models.CharField(default="members", max_length=16),
        ),
        migrations.RunPython(numbers_to_keys, keys_to_numbers),
    ]

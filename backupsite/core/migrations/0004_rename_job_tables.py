"""Give the moved job tables this app's names, and point stored task paths at the backbone.

django-q2 keeps dotted function paths in the database: repeating schedules (the reaper),
one-off lock retries and, with the database broker, queued tasks. Paths of the old
``protection.jobs.runner`` module would fail to import after the upgrade and leave jobs
queued forever, so they are rewritten here.
"""

from django.db import migrations

RENAMED_TASKS = {
    "protection.jobs.runner.run_job": "backupsite.core.jobs.runner.run_job",
    "protection.jobs.runner.reap_stale_jobs": "backupsite.core.jobs.reaper.reap_stale_jobs",
}


def rewrite_task_paths(apps, schema_editor, renames=RENAMED_TASKS):  # type: ignore[no-untyped-def]
    from django_q.signing import BadSignature, SignedPackage

    schedule_model = apps.get_model("django_q", "Schedule")
    for old, new in renames.items():
        schedule_model.objects.filter(func=old).update(func=new)
    queued_model = apps.get_model("django_q", "OrmQ")
    for queued in queued_model.objects.all():
        try:
            task = SignedPackage.loads(queued.payload)
        except (BadSignature, ValueError, TypeError):
            continue  # not ours to fix: django-q2 reports it when it gets there
        if isinstance(task, dict) and task.get("func") in renames:
            task["func"] = renames[task["func"]]
            queued.payload = SignedPackage.dumps(task)
            queued.save(update_fields=["payload"])


def restore_task_paths(apps, schema_editor):  # type: ignore[no-untyped-def]
    rewrite_task_paths(apps, schema_editor, {new: old for old, new in RENAMED_TASKS.items()})


class Migration(migrations.Migration):
    dependencies = [
        ("backupsite", "0003_jobs_from_protection"),
        ("protection", "0003_jobs_to_backbone"),
        ("recovery", "0002_jobs_to_backbone"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [
        migrations.AlterModelTable(name="job", table=None),
        migrations.AlterModelTable(name="vmlock", table=None),
        migrations.RunPython(rewrite_task_paths, restore_task_paths),
    ]

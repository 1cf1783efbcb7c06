"""Job and VMLock move from the protection app to the job backbone (this app).

Only Django's model state moves here; the tables stay as they are (0004 renames them),
so jobs, their logs and their locks survive the upgrade.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backupsite", "0002_roles"),
        ("protection", "0002_alerts_and_drafts"),
        ("storage", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Job',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('inventory', 'Inventory refresh'), ('initial_replica', 'Initial replica'), ('synchronization', 'Synchronization'), ('recovery_point', 'Recovery point'), ('express_full', 'Express full backup'), ('consistency_check', 'Consistency check'), ('stop_protection', 'Stop protection'), ('recovery', 'Recovery'), ('verify', 'Verify datastore'), ('prune', 'Prune recovery points'), ('gc', 'Garbage collection'), ('online_copy', 'Online copy')], max_length=24)),
                        ('state', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='queued', max_length=16)),
                        ('parameters', models.JSONField(blank=True, default=dict)),
                        ('result', models.JSONField(blank=True, default=dict)),
                        ('bytes_done', models.BigIntegerField(default=0)),
                        ('bytes_total', models.BigIntegerField(default=0)),
                        ('rate_bytes_per_second', models.FloatField(default=0)),
                        ('message', models.CharField(blank=True, max_length=500)),
                        ('log', models.TextField(blank=True)),
                        ('error', models.TextField(blank=True)),
                        ('traceback', models.TextField(blank=True)),
                        ('cancel_requested', models.BooleanField(default=False)),
                        ('created', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('started', models.DateTimeField(blank=True, null=True)),
                        ('heartbeat', models.DateTimeField(blank=True, null=True)),
                        ('finished', models.DateTimeField(blank=True, null=True)),
                        ('duration_seconds', models.FloatField(blank=True, null=True)),
                        ('datastore', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='storage.datastore')),
                        ('host', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='protection.host')),
                        ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('group', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='protection.protectiongroup')),
                        ('vm', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='protection.virtualmachine')),
                    ],
                    options={
                        'ordering': ['-created', '-pk'],
                        'db_table': 'protection_job',
                    },
                ),
                migrations.CreateModel(
                    name='VMLock',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('acquired', models.DateTimeField(default=django.utils.timezone.now)),
                        ('job', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='vm_lock', to='backupsite.job')),
                        ('vm', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='lock', to='protection.virtualmachine')),
                    ],
                    options={'db_table': 'protection_vmlock'},
                ),
            ],
            database_operations=[],
        ),
    ]

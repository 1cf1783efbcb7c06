from django.apps import AppConfig


class CoreConfig(AppConfig):
    # The label stays "backupsite" so the tables and migration history of earlier
    # releases (backupsite_auditevent, migrations 0001-0002) carry over unchanged.
    name = "backupsite.core"
    label = "backupsite"
    verbose_name = "Backup server"

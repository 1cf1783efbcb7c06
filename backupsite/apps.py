from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The roof: URLs, dashboard, site-wide commands (bootstrap, serve) and static files.

    No models; it may import every feature app, and nothing imports it.
    """

    name = "backupsite"
    label = "site"
    verbose_name = "Backup server site"

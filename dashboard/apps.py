from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from dashboard import services

        # The vote's database function follows the models: it is made again whenever its SQL changes.
        post_migrate.connect(services.install_vote_function, sender=self)

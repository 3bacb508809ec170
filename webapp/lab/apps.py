from django.apps import AppConfig


class LabConfig(AppConfig):
    name = "webapp.lab"
    label = "lab"
    verbose_name = "XDC Lab"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from webapp.lab import mlflow_access

        mlflow_access.connect_signals()

"""`python manage.py sync_mlflow_access`: give every user's MLflow account READ on their teams' experiments only."""

from django.core.management.base import BaseCommand, CommandError

from webapp.lab import mlflow_access


class Command(BaseCommand):
    help = ("Mirror the lab's teams into MLflow's basic-auth accounts: each user reads their teams' experiments and "
            "no other team's. The workers' watchdog does this every LAB_MLFLOW_SYNC_SECONDS as well.")

    def handle(self, *args, **options):
        if not mlflow_access.enabled():
            raise CommandError("MLflow accounts are off: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                               "(the MLflow admin the lab signs in as) and an http(s) MLFLOW_TRACKING_URI")
        done, failed = mlflow_access.sync_all()
        for line in failed:
            self.stderr.write(line)
        self.stdout.write(f"{done} MLflow accounts up to date, {len(failed)} not")
        if failed:
            raise CommandError(f"{len(failed)} accounts could not be brought up to date")

"""`python manage.py create_token USER [--name NAME]`: print a new API token for USER."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.lab.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (for Authorization: Token <key>)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label to recognise the token by")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        token = ApiToken.objects.create(user=user, name=name)
        self.stdout.write(token.key)

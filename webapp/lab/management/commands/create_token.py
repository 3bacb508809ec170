"""`python manage.py create_token USER [--name NAME] [--days N]`: print a new API token's key for USER, once."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webapp.lab.models import ApiToken


class Command(BaseCommand):
    help = ("Create an API token for a user and print its key (for Authorization: Token <key>). Only a hash is "
            "stored: the key is shown this once.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label to recognise the token by")
        parser.add_argument("--days", type=int, help="expire the token after this many days (default: never)")

    def handle(self, *args, username: str, name: str, days: int | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--days must be 1 to 3650")
        expires = timezone.now() + timedelta(days=days) if days else None
        _, key = ApiToken.issue(user, name=name[:100], expires_at=expires)
        self.stdout.write(key)

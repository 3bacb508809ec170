"""Fixtures of the web site's tests: two teams with a user each, a registered dataset of real files, API tokens.

Jobs are not sent to Celery here (LAB_ENQUEUE=none); the workers' tests run a real broker. MLflow points at a closed
port, so pages that would plot curves show their "MLflow unreachable" text at once.

Element ids and data-testid hooks for browser tests are listed at the top of webapp/lab/templates/lab/base.html.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from lab_helpers import make_folder_dataset

from webapp.lab import services
from webapp.lab.models import ApiToken, Membership, Team


@pytest.fixture(autouse=True)
def _lab_settings(settings, tmp_path):
    settings.LAB_ENQUEUE = "none"
    settings.LAB_RUNS_DIR = tmp_path / "runs"
    settings.LAB_DATA_ROOTS = [tmp_path.resolve()]
    # The test users' passwords need no key stretching; PBKDF2's 0.3 s per user would dominate the suite.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    settings.MLFLOW_UI_URL = "http://mlflow.example"


def make_user(name: str, *teams: Team):
    user = get_user_model().objects.create_user(name, password="pw-" + name)
    for team in teams:
        Membership.objects.create(user=user, team=team)
    return user


@pytest.fixture
def team_a(db):
    return Team.objects.create(name="Team A", slug="team-a")


@pytest.fixture
def team_b(db):
    return Team.objects.create(name="Team B", slug="team-b")


@pytest.fixture
def alice(team_a):
    return make_user("alice", team_a)


@pytest.fixture
def bob(team_b):
    return make_user("bob", team_b)


@pytest.fixture
def dataset_a(team_a, alice, tmp_path):
    root = make_folder_dataset(tmp_path / "synth")
    return services.register_dataset(team=team_a, name="synth", layout="folder", path=str(root), user=alice)


@pytest.fixture
def client_a(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def token_a(alice):
    return ApiToken.issue(alice, name="test")[1]

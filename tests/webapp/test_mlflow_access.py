"""MLflow's accounts mirror the lab's teams, against a real `mlflow server --app-name basic-auth` started with the
shipped deploy/mlflow-auth.ini: a user reads their teams' runs, metrics and checkpoints and nothing of another team's,
writes nothing, and loses access with their membership."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, _free_port, start_mlflow, stop_mlflow
from webapp.lab import mlflow_access
from webapp.lab.models import Membership, Team

pytestmark = pytest.mark.django_db

ADMIN, ADMIN_PASSWORD = "lab-workers", secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    (root / "var").mkdir()  # the ini's relative database_uri, from the folder the server runs in
    uri, process = start_mlflow(root, _free_port(), app_name="basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(REPO / "deploy" / "mlflow-auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    try:
        yield uri
    finally:
        stop_mlflow(process)


@pytest.fixture
def lab(accounts_server, settings, monkeypatch, django_user_model):
    """Teams A and B, alice in A, bob in B, and one run logged by the workers' account in each team's experiment."""
    from mlflow.tracking import MlflowClient

    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_UI_URL = accounts_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")  # a loaded test machine is slow, not down
    slug = secrets.token_hex(3)  # the server outlives each test's database
    teams = {name: Team.objects.create(name=f"{name}-{slug}", slug=f"{name}-{slug}") for name in "ab"}
    users = {}
    for name, team in (("alice", "a"), ("bob", "b")):
        users[name] = django_user_model.objects.create_user(f"{name}-{slug}", password=secrets.token_urlsafe(12))
        Membership.objects.create(user=users[name], team=teams[team])
    client = MlflowClient(accounts_server)
    runs = {}
    for name, team in teams.items():
        experiment_id = client.create_experiment(team.mlflow_experiment)
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "loss", 1.5)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "encoder.txt").write_text(f"weights of {name}")
            client.log_artifact(run.info.run_id, str(Path(folder) / "encoder.txt"))
        runs[name] = (experiment_id, run.info.run_id)
    return accounts_server, users, runs


def api(uri: str, auth, method: str, endpoint: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{uri}{endpoint}", auth=auth, timeout=30, **kwargs)


def test_a_user_reads_their_teams_runs_and_checkpoints_and_nothing_of_another_team(lab):
    uri, users, runs = lab
    alice = (users["alice"].username, mlflow_access.issue_password(users["alice"]))
    (a_experiment, a_run), (b_experiment, b_run) = runs["a"], runs["b"]

    assert api(uri, None, "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100}).status_code == 401
    listed = api(uri, alice, "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100}).json()
    assert [e["experiment_id"] for e in listed["experiments"]] == [a_experiment]

    reads = {
        "run": ("GET", "/api/2.0/mlflow/runs/get", {"params": {"run_id": "{run}"}}),
        "metric history": ("GET", "/api/2.0/mlflow/metrics/get-history",
                           {"params": {"run_id": "{run}", "metric_key": "loss"}}),
        "artifact list": ("GET", "/api/2.0/mlflow/artifacts/list", {"params": {"run_id": "{run}"}}),
        "artifact download": ("GET", "/get-artifact", {"params": {"run_uuid": "{run}", "path": "encoder.txt"}}),
        "proxied artifact": ("GET", "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/encoder.txt",
                             {}),
    }
    for what, (method, endpoint, kwargs) in reads.items():
        for (experiment, run), expected in (((a_experiment, a_run), 200), ((b_experiment, b_run), 403)):
            filled = _fill(kwargs, experiment=experiment, run=run)
            response = api(uri, alice, method, endpoint.format(experiment=experiment, run=run), **filled)
            assert response.status_code == expected, (what, run, response.text[:300])
    for experiment, found in ((a_experiment, [a_run]), (b_experiment, [])):  # another team's: filtered out
        searched = api(uri, alice, "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment]})
        assert [run["info"]["run_id"] for run in searched.json().get("runs", [])] == found
    assert "weights of a" in api(uri, alice, "GET", "/get-artifact",
                                 params={"run_uuid": a_run, "path": "encoder.txt"}).text

    # Reading is all: the user's account writes nothing, not even to their own team's runs.
    write = api(uri, alice, "POST", "/api/2.0/mlflow/runs/log-metric",
                json={"run_id": a_run, "key": "loss", "value": 0.0, "timestamp": 0, "step": 1})
    assert write.status_code == 403


def test_leaving_a_team_takes_its_runs_away_when_the_membership_is_deleted(lab, django_capture_on_commit_callbacks):
    uri, users, runs = lab
    alice = (users["alice"].username, mlflow_access.issue_password(users["alice"]))
    a_run = runs["a"][1]
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": a_run}).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        Membership.objects.filter(user=users["alice"]).delete()
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": a_run}).status_code == 403
    # Joining a team gives its runs, through the periodic sync as well.
    Membership.objects.create(user=users["alice"], team=Team.objects.get(memberships__user=users["bob"]))
    assert mlflow_access.sync_all()[1] == []
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs["b"][1]}).status_code == 200
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": a_run}).status_code == 403


def test_the_page_shows_a_new_password_once_and_it_signs_in_to_mlflow(lab, client):
    uri, users, runs = lab
    client.force_login(users["bob"])
    page = client.get("/mlflow/")
    assert page.status_code == 200 and b"mlflow-password" not in page.content
    issued = client.post("/mlflow/")
    assert issued.status_code == 200 and issued["Cache-Control"] == "no-store"
    password = issued.content.decode().split('id="mlflow-password">')[1].split("<")[0]
    bob = (users["bob"].username, password)
    assert api(uri, bob, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs["b"][1]}).status_code == 200
    assert api(uri, bob, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs["a"][1]}).status_code == 403
    again = client.post("/mlflow/").content.decode().split('id="mlflow-password">')[1].split("<")[0]
    assert api(uri, bob, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs["b"][1]}).status_code == 401
    assert api(uri, (bob[0], again), "GET", "/api/2.0/mlflow/runs/get",
               params={"run_id": runs["b"][1]}).status_code == 200


def test_an_experiment_made_under_a_future_teams_name_never_becomes_that_teams(lab, django_capture_on_commit_callbacks):
    uri, users, _ = lab
    bob = (users["bob"].username, mlflow_access.issue_password(users["bob"]))
    slug = "c-" + secrets.token_hex(3)
    squatted = api(uri, bob, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"lab-{slug}"})
    assert squatted.ok  # MLflow lets any account make experiments of its own, and it manages them
    with django_capture_on_commit_callbacks(execute=True):
        team = Team.objects.create(name=slug, slug=slug)
        Membership.objects.create(user=users["alice"], team=team)
    found = api(uri, (ADMIN, ADMIN_PASSWORD), "GET", "/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": f"lab-{slug}"}).json()["experiment"]
    assert found["experiment_id"] != squatted.json()["experiment_id"]
    run = api(uri, (ADMIN, ADMIN_PASSWORD), "POST", "/api/2.0/mlflow/runs/create",
              json={"experiment_id": found["experiment_id"]}).json()["run"]["info"]["run_id"]
    assert api(uri, bob, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run}).status_code == 403
    alice = (users["alice"].username, mlflow_access.issue_password(users["alice"]))
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run}).status_code == 200


def test_the_labs_own_account_and_mlflow_admins_are_never_touched(lab, client, django_user_model):
    from mlflow.server.auth.client import AuthServiceClient

    uri, _, _ = lab
    namesake = django_user_model.objects.create_user(ADMIN, password=secrets.token_urlsafe(12))
    client.force_login(namesake)
    refused = client.post("/mlflow/")
    assert refused.status_code == 503 and b"the lab&#x27;s own MLflow account" in refused.content
    AuthServiceClient(uri).create_user("ops-" + ADMIN, secrets.token_urlsafe(12))
    AuthServiceClient(uri).update_user_admin("ops-" + ADMIN, True)
    other_admin = django_user_model.objects.create_user("ops-" + ADMIN, password=secrets.token_urlsafe(12))
    with pytest.raises(mlflow_access.LabError, match="is an MLflow administrator"):
        mlflow_access.issue_password(other_admin)
    # The workers' password still works: nothing above changed it.
    assert api(uri, (ADMIN, ADMIN_PASSWORD), "POST", "/api/2.0/mlflow/experiments/search",
               json={"max_results": 1}).status_code == 200


def test_mlflow_away_or_without_accounts_is_said_on_the_page_not_a_500(client, settings, monkeypatch,
                                                                          django_user_model):
    user = django_user_model.objects.create_user("carol", password=secrets.token_urlsafe(12))
    client.force_login(user)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    page = client.get("/mlflow/")
    assert page.status_code == 200 and b"mlflow-no-accounts" in page.content
    assert client.post("/mlflow/").status_code == 200  # nothing to issue
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    away = client.post("/mlflow/")
    assert away.status_code == 503 and b"did not take the change" in away.content
    assert b"mlflow-password" not in away.content


def _fill(kwargs: dict, **values) -> dict:
    """Fill the {experiment} and {run} placeholders of a request's parameters or JSON body."""
    def fill(value):
        if isinstance(value, str):
            return value.format(**values)
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        return value
    return fill(kwargs)


def test_the_sync_command_says_when_mlflow_has_no_accounts(monkeypatch):
    from django.core.management import CommandError, call_command

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(CommandError, match="MLflow accounts are off"):
        call_command("sync_mlflow_access")


def test_the_sync_command_mirrors_every_user(lab, capsys):
    from django.core.management import call_command

    uri, users, runs = lab
    call_command("sync_mlflow_access")
    assert "MLflow accounts up to date, 0 not" in capsys.readouterr().out
    alice = (users["alice"].username, mlflow_access.issue_password(users["alice"]))
    assert api(uri, alice, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": runs["a"][1]}).status_code == 200

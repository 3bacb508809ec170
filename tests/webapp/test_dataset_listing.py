"""Registration on the site and the API leaves the listing to a worker: the row is `listing` until a worker reads the
folder (`services.list_dataset`, what the task runs), then `ready` with its counts or `failed` with the reader's
reason; only ready datasets are offered to jobs or accepted by them."""

from __future__ import annotations

import json
import sys
import types

import pytest
from lab_helpers import make_folder_dataset, pretrain_config

from webapp.lab import services
from webapp.lab.forms import PretrainForm
from webapp.lab.models import ApiToken, Dataset


@pytest.fixture
def sent(settings, monkeypatch):
    """A broker that takes every listing message (the calls it got), as with LAB_ENQUEUE=celery."""
    calls = []

    class Taken:
        def apply_async(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setitem(sys.modules, "workers.tasks", types.SimpleNamespace(list_dataset=Taken()))
    settings.LAB_ENQUEUE = "celery"
    return calls


def register(team, user, path, layout="folder", name="later"):
    return services.register_dataset(team=team, name=name, layout=layout, path=str(path), user=user, background=True)


def test_a_listing_dataset_is_offered_to_no_job_until_a_worker_has_read_it(alice, team_a, tmp_path, sent,
                                                                           django_capture_on_commit_callbacks):
    root = make_folder_dataset(tmp_path / "big", files=9, classes=3)
    with django_capture_on_commit_callbacks(execute=True):
        dataset = register(team_a, alice, root)
    assert (dataset.status, dataset.files) == ("listing", 0)
    assert sent == [{"args": [dataset.pk], "queue": "cpu", "priority": 9, "retry": False}]
    dataset.refresh_from_db()
    assert dataset.listing_sent_at is not None
    assert dataset not in PretrainForm(user=alice).fields["dataset"].queryset
    with pytest.raises(services.LabError, match="is still being listed"):
        services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset)], dataset=dataset)

    listed = services.list_dataset(dataset.pk)
    assert (listed.status, listed.files, listed.classes, listed.labeled) == ("ready", 9, 3, True)
    assert listed.listed_at is not None and listed in PretrainForm(user=alice).fields["dataset"].queryset
    assert services.list_dataset(dataset.pk) is None  # a second message finds nothing to do
    [job] = services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(listed)], dataset=listed)
    assert job.dataset == listed


def test_a_folder_that_cannot_be_read_as_its_layout_fails_with_the_readers_reason(alice, team_a, tmp_path, sent):
    root = make_folder_dataset(tmp_path / "plain")
    dataset = register(team_a, alice, root, layout="ucf101")
    failed = services.list_dataset(dataset.pk)
    assert failed.status == "failed" and "ucf101" in failed.error and failed.files == 0
    with pytest.raises(services.LabError, match="failed: .*ucf101"):
        services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(failed)], dataset=failed)
    # Gone by the time a worker reads it: failed too, with why.
    gone = make_folder_dataset(tmp_path / "gone")
    dataset = register(team_a, alice, gone, name="gone")
    for child in gone.iterdir():
        child.unlink()
    gone.rmdir()
    assert "not an existing folder" in services.list_dataset(dataset.pk).error


def test_the_cheap_checks_still_refuse_at_once_and_store_nothing(alice, team_a, tmp_path, sent):
    with pytest.raises(services.LabError, match="not an existing folder"):
        register(team_a, alice, tmp_path / "nope")
    with pytest.raises(services.LabError, match="unknown layout"):
        register(team_a, alice, make_folder_dataset(tmp_path / "x"), layout="kinetics-9000")
    assert not Dataset.objects.exists() and sent == []


def test_the_api_answers_202_while_listing_and_says_when_it_is_ready(alice, team_a, tmp_path, sent, client):
    _, key = ApiToken.issue(alice)
    root = make_folder_dataset(tmp_path / "api")
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    body = {"team": team_a.slug, "name": "api", "layout": "folder", "path": str(root)}
    created = client.post("/api/datasets", data=json.dumps(body), content_type="application/json", **auth)
    assert created.status_code == 202 and created.json()["status"] == "listing"
    services.list_dataset(created.json()["id"])
    [listed] = client.get("/api/datasets", **auth).json()["datasets"]
    assert (listed["status"], listed["files"], listed["error"]) == ("ready", 6, "")


def test_the_datasets_page_shows_the_status_and_why_a_listing_failed(alice, team_a, tmp_path, sent, client_a):
    dataset = register(team_a, alice, make_folder_dataset(tmp_path / "page"), layout="ucf101")
    assert b'data-testid="dataset-status"' in client_a.get("/datasets/").content
    services.list_dataset(dataset.pk)
    page = client_a.get(f"/datasets/{dataset.pk}/").content.decode()
    assert 'id="dataset-status">failed' in page and 'id="dataset-error"' in page


def test_without_a_broker_the_site_lists_at_once(alice, team_a, tmp_path, settings):
    settings.LAB_ENQUEUE = "none"
    dataset = register(team_a, alice, make_folder_dataset(tmp_path / "now"))
    assert (dataset.status, dataset.files) == ("ready", 6)

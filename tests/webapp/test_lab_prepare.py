"""Prepare jobs: a team queues a clip store of its own video dataset (page, API, service), and a succeeded one is
offered as a dataset of the team, read with the source's layout."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.lab import services
from webapp.lab.models import Dataset, Job
from xdc.data.store import prepare_store
from xdc.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Six real videos with a UCF101 copy (the store's tests need media that decode)."""
    root = tmp_path_factory.mktemp("media")
    make_synthetic(root, videos=6, classes=2, seed=0, duration=1.5, size=(48, 36))
    return root


@pytest.fixture
def real_dataset(team_a, alice, videos, tmp_path, settings):
    settings.LAB_DATA_ROOTS = [tmp_path.resolve(), videos.resolve()]
    return services.register_dataset(team=team_a, name="real", layout="ucf101", path=str(videos / "ucf101"),
                                     user=alice)


def submit_prepare(user, dataset, config=None, **kwargs):
    kwargs.setdefault("resources", {"resource": "cpu"})
    return services.submit_jobs(user, dataset.team, Job.Kind.PREPARE, [config or {}], dataset=dataset, **kwargs)[0]


def test_a_prepare_job_reads_its_dataset_on_a_cpu_and_logs_to_the_teams_experiment(alice, dataset_a):
    job = submit_prepare(alice, dataset_a, {"store": {"short_side": 96}})
    assert (job.kind, job.dataset, job.queue_name) == ("prepare", dataset_a, "cpu")
    assert job.config["path"] == dataset_a.path and job.config["layout"] == "folder"
    assert job.config["store"]["short_side"] == 96 and job.config["experiment"] == dataset_a.team.mlflow_experiment
    assert job.summary == "clip store of synth · 96 px · source fps · JPEG q90"


@pytest.mark.parametrize("config, resources, key, message", [
    ({"store": {"quality": 0}}, {"resource": "cpu"}, "config.store.quality", "at least 1"),
    ({"store": {"short_side": 4096}}, {"resource": "cpu"}, "config.store.short_side", "at most 1024"),
    ({"store": {"sharpen": True}}, {"resource": "cpu"}, "config.store.sharpen", "unknown config key"),
    ({"path": "/elsewhere"}, {"resource": "cpu"}, "config.path", "follows the chosen dataset"),
    ({}, {"resource": "gpu"}, "resource", "CPU cores"),
    ({}, {"resource": "cpu", "cpu_ranks": 2}, "cpu_ranks", "one process"),
])
def test_a_bad_prepare_request_names_its_field_and_creates_nothing(alice, dataset_a, config, resources, key,
                                                                    message):
    with pytest.raises(services.LabError) as caught:
        submit_prepare(alice, dataset_a, config, resources=resources)
    assert key in caught.value.errors and message in " ".join(caught.value.errors[key])
    assert not Job.objects.exists()


def test_sound_datasets_stores_and_other_teams_data_are_not_prepared(alice, bob, team_a, team_b, tmp_path,
                                                                     dataset_a):
    sounds = Dataset.objects.create(team=team_a, name="sounds", layout="esc50", path=str(tmp_path / "esc50"))
    with pytest.raises(services.LabError, match="a clip store holds videos"):
        submit_prepare(alice, sounds)
    store = Dataset.objects.create(team=team_a, name="a store", layout="folder", path=str(tmp_path / "s"),
                                   prepared_from=dataset_a)
    with pytest.raises(services.LabError, match="is itself a clip store"):
        submit_prepare(alice, store)
    (tmp_path / "registered-store").mkdir()
    (tmp_path / "registered-store" / "xdc-store.json").write_text("{}")  # a store registered by hand
    by_hand = Dataset.objects.create(team=team_a, name="by hand", layout="folder",
                                     path=str(tmp_path / "registered-store"))
    with pytest.raises(services.LabError, match="is itself a clip store"):
        submit_prepare(alice, by_hand)
    with pytest.raises(services.LabError, match="not in team team-b"):
        services.submit_jobs(bob, team_b, Job.Kind.PREPARE, [{}], dataset=dataset_a, resources={"resource": "cpu"})
    assert not Job.objects.exists()


def test_a_succeeded_prepare_job_offers_its_store_as_a_dataset_of_the_team(alice, real_dataset):
    job = submit_prepare(alice, real_dataset, {"store": {"short_side": 36}})
    prepare_store(real_dataset.path, "ucf101", services.store_folder(job))  # what the job's trainer writes
    services.finish_job(job.pk, record={"videos": 6})
    store = Dataset.objects.get(prepared_from=real_dataset)
    assert (store.name, store.layout, store.status, store.team) == ("real store 36px", "ucf101", "ready",
                                                                    real_dataset.team)
    assert (store.files, store.classes, store.labeled) == (real_dataset.files, real_dataset.classes, True)
    assert store.path == str(services.store_folder(job))
    # A pretraining on the store is a pretraining on a dataset of the team, with the source's layout.
    from lab_helpers import submit_pretrain

    assert submit_pretrain(alice, real_dataset.team, store).dataset == store
    second = submit_prepare(alice, real_dataset, {"store": {"short_side": 36}})
    prepare_store(real_dataset.path, "ucf101", services.store_folder(second))
    services.finish_job(second.pk)
    assert Dataset.objects.filter(prepared_from=real_dataset).count() == 2  # named apart: "... (job N)"


def test_a_store_that_cannot_be_read_back_is_not_offered(alice, real_dataset):
    job = submit_prepare(alice, real_dataset)
    services.finish_job(job.pk)
    assert not Dataset.objects.filter(prepared_from=real_dataset).exists()
    assert "is not offered as a dataset" in Job.objects.get(pk=job.pk).log_tail


def test_the_dataset_page_queues_a_prepare_job_and_shows_refusals_on_their_fields(client_a, dataset_a):
    url = reverse("lab:dataset", args=[dataset_a.pk])
    page = client_a.get(url)
    assert page.status_code == 200 and b'id="prepare-form"' in page.content
    assert b'placeholder="128"' in page.content and b'placeholder="90"' in page.content  # the defaults, shown
    refused = client_a.post(url, {"short_side": "2000", "priority": "5"})
    assert refused.status_code == 400 and not Job.objects.exists()
    assert "at most 1024" in refused.context["form"].errors["short_side"][0]
    queued = client_a.post(url, {"short_side": "112", "quality": "85", "priority": "0"})
    job = Job.objects.get()
    assert queued.status_code == 302 and queued.url == job.get_absolute_url()
    assert (job.kind, job.priority, job.config["store"]["short_side"], job.config["store"]["quality"]) == \
        ("prepare", 0, 112, 85)  # 0 is a priority, not "unset"
    clone = client_a.get(reverse("lab:job_clone", args=[job.pk]))
    assert clone.status_code == 302 and clone.url == url


def test_a_store_page_links_its_source_and_offers_no_second_store(client_a, dataset_a, tmp_path):
    store = Dataset.objects.create(team=dataset_a.team, name="synth store", layout="folder",
                                   path=str(tmp_path / "store"), prepared_from=dataset_a, files=6)
    page = client_a.get(reverse("lab:dataset", args=[store.pk])).content.decode()
    assert 'id="prepared-from"' in page and "synth" in page and 'id="prepare-form"' not in page
    source = client_a.get(reverse("lab:dataset", args=[dataset_a.pk])).content.decode()
    assert 'id="stores"' in source and "synth store" in source
    listed = client_a.get(reverse("lab:datasets")).content.decode()
    assert 'data-testid="store-of">clip store of synth<' in listed


def test_the_api_queues_a_prepare_job(client, token_a, dataset_a):
    response = client.post("/api/jobs", {"kind": "prepare", "dataset": dataset_a.pk, "resource": "cpu",
                                         "config": {"store": {"fps": 8}}},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Token {token_a}")
    assert response.status_code == 201, response.content
    job = response.json()["jobs"][0]
    assert job["kind"] == "prepare" and job["config"]["store"]["fps"] == 8 and job["placement"] == "cpu"

"""Pages through Django's test client: submission forms and their errors, grids, clone, cancel/retry, team walls."""

from __future__ import annotations

import json

import pytest
from lab_helpers import submit_pretrain

from webapp.lab import services
from webapp.lab.forms import PretrainForm, parse_int_list
from webapp.lab.models import Dataset, Job

pytestmark = pytest.mark.django_db


def pretrain_post(dataset, **changes):
    data = {"team": dataset.team.pk, "dataset": dataset.pk, "preset": "tiny", "variant": ["xdc"], "k": "",
            "seed": "0", "priority": 5, "resource": "cpu", "gpus": 0}
    data.update(changes)
    return data


def _esc50_dataset(team, user, tmp_path):
    root = tmp_path / "esc50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for index in range(10):
        name = f"{index % 5 + 1}-{index}-A-{index % 2}.wav"
        (root / "audio" / name).write_bytes(b"")
        rows.append(f"{name},{index % 5 + 1},{index % 2},class{index % 2},False,{index},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return services.register_dataset(team=team, name="sounds", layout="esc50", path=str(root), user=user)


class TestPretrainForm:
    def test_it_queues_a_grid(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, variant=["xdc", "sdc"], k="4,8",
                                                                      seed="1-3"))
        assert response.status_code == 302
        jobs = Job.objects.filter(kind="pretrain")
        assert jobs.count() == 12
        assert {(j.variant, j.config["cluster"]["k_joint"], j.config["seed"]) for j in jobs} == {
            (v, k, s) for v in ("xdc", "sdc") for k in (4, 8) for s in (1, 2, 3)}
        job = jobs.first()
        assert job.config["rounds"] == 2  # the tiny preset
        assert job.config["data"]["path"] == dataset_a.path and job.dataset == dataset_a
        assert job.resource == "cpu" and job.creator.username == "alice"
        sweep = f"sweep-{jobs.order_by('pk').first().pk}"  # one grid, one sweep name
        assert set(jobs.values_list("name", flat=True)) == {sweep}
        listed = client_a.get("/jobs/", {"name": sweep}).content.decode()
        assert listed.count('data-testid="job-row"') == 12

    def test_fields_override_the_preset(self, client_a, dataset_a):
        client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, rounds=3, lr="0.2", batch_size=4,
                                                           audio_seconds="1.5", overrides="optim.weight_decay=0.001"))
        cfg = Job.objects.get().config
        assert (cfg["rounds"], cfg["optim"]["lr"], cfg["batch_size"], cfg["optim"]["weight_decay"]) == (
            3, 0.2, 4, 0.001)
        assert cfg["data"]["audio_seconds"] == 1.5

    def test_a_sound_window_past_the_limit_is_a_field_error(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, audio_seconds="61"))
        assert response.status_code == 400 and "audio_seconds" in response.context["form"].errors
        assert Job.objects.count() == 0

    def test_a_config_error_lands_on_its_field(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, k="1"))
        assert response.status_code == 400
        assert "k" in response.context["form"].errors
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, overrides="optim.name=lion"))
        assert "optim.name must be one of" in response.context["form"].errors["overrides"][0]
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, overrides="cluster.k_video=1"))
        assert "k" in response.context["form"].errors
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, seed="a,b", variant=[]))
        assert {"seed", "variant"} <= set(response.context["form"].errors)
        assert Job.objects.count() == 0

    def test_it_attaches_evaluations_per_dataset_with_the_pretrainings_preset(self, client_a, team_a, alice,
                                                                              dataset_a, tmp_path):
        sounds = _esc50_dataset(team_a, alice, tmp_path)
        client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, **{f"eval_{dataset_a.pk}": ["linear"],
                                                                         f"eval_{sounds.pk}": ["svm"]},
                                                           eval_splits="1"))
        job = Job.objects.get()
        assert sorted((s["dataset"], s["protocol"], s["preset"]) for s in job.evaluations) == [
            (dataset_a.pk, "linear", "tiny"), (sounds.pk, "svm", "tiny")]

    def test_a_preview_lists_the_jobs_and_queues_nothing(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(
            dataset_a, seed="0-1", action="preview", **{f"eval_{dataset_a.pk}": ["linear", "retrieval"]}))
        assert response.status_code == 200 and Job.objects.count() == 0
        preview = response.context["preview"]
        assert preview.total == 6 and len(preview.describe()) == 3
        assert "2 evaluations: linear-tiny on synth split 1, retrieval-tiny on synth split 1" in preview.describe()[-1]

    def test_it_offers_only_the_protocols_a_benchmark_takes(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, **{f"eval_{dataset_a.pk}": ["svm"]}))
        assert f"eval_{dataset_a.pk}" in response.context["form"].errors
        assert Job.objects.count() == 0

    def test_field_and_config_errors_show_in_one_answer(self, client_a, dataset_a):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_a, priority="12",
                                                                      overrides="optim.name=lion"))
        errors = response.context["form"].errors
        assert {"priority", "overrides"} <= set(errors) and Job.objects.count() == 0

    def test_another_teams_dataset_is_not_a_choice(self, client, bob, dataset_a):
        client.force_login(bob)
        response = client.post("/jobs/new/pretrain/", pretrain_post(dataset_a))
        assert response.status_code == 400 and "dataset" in response.context["form"].errors

    def test_int_lists(self):
        assert parse_int_list("1-3, 7,7", name="seed") == [1, 2, 3, 7]
        assert parse_int_list("", name="k") == []


class TestEvaluateForm:
    def test_it_queues_protocols_times_seeds_on_a_finished_pretraining(self, client_a, alice, team_a, dataset_a):
        parent = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(parent.pk, worker="w", task_id="t")
        services.finish_job(parent.pk)
        response = client_a.post("/jobs/new/evaluate/", {
            "team": team_a.pk, "checkpoint": f"job:{parent.pk}", "dataset": dataset_a.pk, "split": "1",
            "protocol": ["linear", "finetune"], "seed": "0,1", "preset": "tiny", "priority": 3, "resource": "cpu",
            "gpus": 0})
        assert response.status_code == 302
        jobs = Job.objects.filter(kind="evaluate")
        assert jobs.count() == 4
        assert all(j.parent == parent and j.config["checkpoint"] == parent.final_checkpoint for j in jobs)

    def test_the_supervised_baseline_needs_labelled_data(self, client_a, team_a, dataset_a):
        response = client_a.post("/jobs/new/evaluate/", {
            "team": team_a.pk, "checkpoint": "supervised", "dataset": dataset_a.pk, "split": "1",
            "protocol": ["linear"], "seed": "0", "priority": 5, "resource": "cpu", "gpus": 0})
        assert response.status_code == 400 and "supervised_data" in response.context["form"].errors

    def test_a_running_pretraining_is_not_a_checkpoint_choice(self, client_a, alice, team_a, dataset_a):
        parent = submit_pretrain(alice, team_a, dataset_a)
        response = client_a.post("/jobs/new/evaluate/", {
            "team": team_a.pk, "checkpoint": f"job:{parent.pk}", "dataset": dataset_a.pk, "split": "1",
            "protocol": ["linear"], "seed": "0", "priority": 5, "resource": "cpu", "gpus": 0})
        assert "checkpoint" in response.context["form"].errors


class TestClone:
    def test_clone_prefills_the_form_and_keeps_untouched_keys(self, client_a, alice, team_a, dataset_a):
        source = submit_pretrain(alice, team_a, dataset_a, model__video_width=12, cluster__k_video=5,
                                 cluster__k_audio=5, cluster__k_joint=5)
        response = client_a.get(f"/jobs/{source.pk}/clone/")
        assert response.status_code == 302 and response.url.endswith(f"?clone={source.pk}")
        page = client_a.get(response.url)
        form = page.context["form"]
        assert form.initial["k"] == "5" and form.initial["preset"] == "clone"
        data = pretrain_post(dataset_a, preset="clone", k="5", seed="9", base_config=form.initial["base_config"])
        assert client_a.post(response.url, data).status_code == 302
        clone = Job.objects.exclude(pk=source.pk).get()
        assert clone.config["model"]["video_width"] == 12 and clone.config["seed"] == 9
        assert clone.config["run_name"] == f"job-{clone.pk}"

    def test_initial_from_carries_evaluations(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 2}])
        initial = PretrainForm.initial_from(job)
        assert initial[f"eval_{dataset_a.pk}"] == ["linear"] and initial["eval_splits"] == "2"
        assert json.loads(initial["base_config"]) == job.config


class TestJobPages:
    def test_list_filters_and_detail(self, client_a, alice, team_a, dataset_a):
        xdc = submit_pretrain(alice, team_a, dataset_a)
        submit_pretrain(alice, team_a, dataset_a, variant="sdc")
        page = client_a.get("/jobs/?variant=xdc")
        assert [j.pk for j in page.context["jobs"]] == [xdc.pk]
        assert b'data-testid="job-row"' in page.content
        detail = client_a.get(f"/jobs/{xdc.pk}/")
        assert detail.status_code == 200 and b'id="cancel"' in detail.content

    def test_detail_plots_curves_from_mlflow(self, client_a, alice, team_a, dataset_a, monkeypatch):
        from webapp.lab import charts

        job = submit_pretrain(alice, team_a, dataset_a)
        services.set_run(job.pk, run_id="r1", experiment_id="4")
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (
            {"train/loss": [(1, 2.0), (2, 1.5)], "cluster/nmi_video_audio": [(0, 0.1), (1, 0.3)]}, ""))
        page = client_a.get(f"/jobs/{job.pk}/")
        assert page.content.count(b'data-testid="chart"') == 2
        assert b'href="http://mlflow.example/#/experiments/4/runs/r1"' in page.content

    def test_detail_survives_mlflow_being_down(self, client_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.set_run(job.pk, run_id="r1", experiment_id="4")
        page = client_a.get(f"/jobs/{job.pk}/")
        assert page.status_code == 200 and b"MLflow is not reachable" in page.content

    def test_cancel_then_retry_buttons(self, client_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        assert client_a.post(f"/jobs/{job.pk}/cancel/").status_code == 302
        assert Job.objects.get(pk=job.pk).status == "cancelled"
        client_a.post(f"/jobs/{job.pk}/retry/")
        assert Job.objects.get(pk=job.pk).status == "queued"
        client_a.post(f"/jobs/{job.pk}/retry/")  # a second retry is refused with a message, not an error page
        assert Job.objects.get(pk=job.pk).status == "queued"

    def test_compare_diffs_params_and_links_mlflow(self, client_a, alice, team_a, dataset_a):
        one = submit_pretrain(alice, team_a, dataset_a, seed=1)
        two = submit_pretrain(alice, team_a, dataset_a, seed=2, optim__lr=0.2)
        services.set_run(one.pk, run_id="r1", experiment_id="4")
        services.set_run(two.pk, run_id="r2", experiment_id="4")
        page = client_a.get(f"/compare/?ids={one.pk}&ids={two.pk}")
        assert dict(page.context["diff"]) == {"optim.lr": [0.05, 0.2], "seed": [1, 2]}
        assert page.context["mlflow_compare_url"] == (
            "http://mlflow.example/#/compare-runs?runs=%5B%22r1%22%2C%22r2%22%5D&experiments=%5B%224%22%5D")

    def test_leaderboard_page(self, client_a, alice, team_a, dataset_a):
        submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 1}])
        page = client_a.get("/leaderboard/")
        assert b'data-testid="leaderboard-cell"' in page.content and b'data-pending="1"' in page.content


class TestDatasetsPage:
    def test_register_and_list(self, client_a, team_a, tmp_path):
        from lab_helpers import make_folder_dataset

        root = make_folder_dataset(tmp_path / "d", files=4, classes=4)
        response = client_a.post("/datasets/", {"team": team_a.pk, "name": "four", "layout": "folder",
                                                "path": str(root)})
        assert response.status_code == 302
        assert Dataset.objects.get(name="four").classes == 4
        assert b"four" in client_a.get("/datasets/").content

    def test_a_bad_path_is_a_field_error(self, client_a, team_a, tmp_path):
        response = client_a.post("/datasets/", {"team": team_a.pk, "name": "x", "layout": "folder",
                                                "path": str(tmp_path / "missing")})
        assert response.status_code == 400 and "path" in response.context["form"].errors


class TestTeams:
    def test_another_teams_job_and_dataset_are_404(self, client, bob, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        client.force_login(bob)
        for url in (f"/jobs/{job.pk}/", f"/datasets/{dataset_a.pk}/", f"/jobs/{job.pk}/clone/",
                    f"/jobs/new/pretrain/?clone={job.pk}"):
            assert client.get(url).status_code == 404, url
        assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 404
        assert Job.objects.get(pk=job.pk).status == "queued"
        assert list(client.get("/jobs/").context["jobs"]) == []

    def test_a_member_of_two_teams_switches(self, client, alice, team_a, team_b):
        from webapp.lab.models import Membership

        Membership.objects.create(user=alice, team=team_b)
        client.force_login(alice)
        client.post("/team/", {"team": team_b.pk, "next": "/leaderboard/"})
        assert client.get("/leaderboard/").context["team"] == team_b


def test_healthz_is_public_json(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_every_page_renders_for_a_member(client_a, alice, team_a, dataset_a):
    job = submit_pretrain(alice, team_a, dataset_a)
    [evaluation] = services.submit_jobs(alice, team_a, "evaluate", [
        {"checkpoint": "random", "benchmark": "folder", "data": dataset_a.path, "protocol": "linear"}])
    for url in ("/", "/jobs/", "/jobs/new/pretrain/", "/jobs/new/evaluate/", f"/jobs/{job.pk}/",
                f"/jobs/{evaluation.pk}/", f"/jobs/new/evaluate/?clone={evaluation.pk}", "/compare/",
                "/leaderboard/", "/datasets/", f"/datasets/{dataset_a.pk}/"):
        response = client_a.get(url)
        assert response.status_code == 200, url


class TestMemberOfTwoTeams:
    """Alice is in teams A and B; the choices list both teams' datasets, but a job uses only its own team's."""

    @pytest.fixture
    def dataset_b(self, alice, team_b, tmp_path):
        from lab_helpers import make_folder_dataset
        from webapp.lab.models import Membership

        Membership.objects.create(user=alice, team=team_b)
        return services.register_dataset(team=team_b, name="b-data", layout="folder",
                                         path=str(make_folder_dataset(tmp_path / "b-data")))

    def test_a_pretraining_in_a_on_bs_dataset_is_refused(self, client_a, team_a, dataset_a, dataset_b):
        response = client_a.post("/jobs/new/pretrain/", pretrain_post(dataset_b, team=team_a.pk))
        assert response.status_code == 400 and "belongs to Team B" in response.context["form"].errors["dataset"][0]
        assert Job.objects.count() == 0

    def test_an_evaluation_in_a_on_bs_datasets_is_refused(self, client_a, team_a, dataset_a, dataset_b):
        post = {"team": team_a.pk, "checkpoint": "supervised", "split": "1", "protocol": ["linear"], "seed": "0",
                "priority": 5, "resource": "cpu", "gpus": 0}
        response = client_a.post("/jobs/new/evaluate/", {**post, "dataset": dataset_b.pk,
                                                         "supervised_data": dataset_a.pk})
        assert "dataset" in response.context["form"].errors
        response = client_a.post("/jobs/new/evaluate/", {**post, "dataset": dataset_a.pk,
                                                         "supervised_data": dataset_b.pk})
        assert "supervised_data" in response.context["form"].errors
        assert Job.objects.count() == 0

    def test_a_dataset_page_lists_only_its_teams_jobs(self, client, bob, alice, team_a, dataset_a, dataset_b):
        mine = submit_pretrain(alice, team_b := dataset_b.team, dataset_b)
        leaked = submit_pretrain(alice, team_a, dataset_a)
        Job.objects.filter(pk=leaked.pk).update(dataset=dataset_b)  # a row from before teams were checked
        client.force_login(bob)
        jobs = list(client.get(f"/datasets/{dataset_b.pk}/").context["jobs"])
        assert jobs == [mine] and team_b.slug == "team-b"


def test_switching_team_never_redirects_off_site(client_a, team_a):
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = client_a.post("/team/", {"team": team_a.pk, "next": target})
        assert response.status_code == 302 and response["Location"] == "/", target
    assert client_a.post("/team/", {"team": team_a.pk, "next": "/leaderboard/"})["Location"] == "/leaderboard/"


def test_an_evaluation_grid_over_the_limit_is_a_form_error(client_a, team_a, dataset_a, settings):
    settings.LAB_MAX_GRID = 4
    response = client_a.post("/jobs/new/evaluate/", {
        "team": team_a.pk, "checkpoint": "random", "dataset": dataset_a.pk, "split": "1", "protocol": ["linear"],
        "seed": "0-4", "preset": "tiny", "priority": 5, "resource": "cpu", "gpus": 0})
    assert response.status_code == 400 and "limit is 4" in str(response.context["form"].errors)
    assert Job.objects.count() == 0

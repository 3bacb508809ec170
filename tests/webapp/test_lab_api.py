"""The JSON API: token auth, submission with field errors and nothing created, transitions, team walls."""

from __future__ import annotations

import json

import pytest
from lab_helpers import pretrain_config, submit_pretrain

from webapp.lab import services
from webapp.lab.models import ApiToken, Dataset, Job, hash_key

pytestmark = pytest.mark.django_db


def call(client, method, url, token=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    if method == "GET":
        return client.get(url, **headers)
    return client.post(url, data=json.dumps(body) if body is not None else "", content_type="application/json",
                       **headers)


class TestAuth:
    def test_no_or_bad_token_is_401(self, client, token_a):
        assert call(client, "GET", "/api/jobs").status_code == 401
        assert call(client, "GET", "/api/jobs", token="wrong").status_code == 401
        response = call(client, "POST", "/api/jobs", token="wrong", body={})
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"

    def test_a_token_of_an_inactive_user_is_refused(self, client, alice, token_a):
        alice.is_active = False
        alice.save()
        assert call(client, "GET", "/api/jobs", token=token_a).status_code == 401

    def test_a_session_may_read_but_not_write(self, client_a, dataset_a):
        assert client_a.get("/api/jobs").status_code == 200
        assert call(client_a, "POST", "/api/jobs", body={"config": {}}).status_code == 401

    def test_the_token_records_its_last_use(self, client, token_a):
        call(client, "GET", "/api/jobs", token=token_a)
        assert ApiToken.objects.get(key_hash=hash_key(token_a)).last_used_at is not None


class TestSubmit:
    def test_it_creates_a_grid(self, client, token_a, dataset_a):
        body = {"kind": "pretrain", "config": pretrain_config(dataset_a), "grid": {"seed": [1, 2, 3]},
                "dataset": dataset_a.pk, "priority": 2, "resource": "cpu", "gpus": 0,
                "evaluations": [{"dataset": dataset_a.pk, "protocol": "linear", "split": 1}]}
        response = call(client, "POST", "/api/jobs", token=token_a, body=body)
        assert response.status_code == 201, response.content
        jobs = response.json()["jobs"]
        assert [j["config"]["seed"] for j in jobs] == [1, 2, 3]
        assert jobs[0]["priority"] == 2 and jobs[0]["team"] == "team-a" and len(jobs[0]["evaluations"]) == 1

    def test_a_dataset_name_fills_the_data_keys(self, client, token_a, dataset_a):
        response = call(client, "POST", "/api/jobs", token=token_a,
                        body={"config": {"variant": "sdc", "rounds": 1}, "dataset": "synth"})
        assert response.status_code == 201
        assert Job.objects.get().config["data"]["path"] == dataset_a.path

    @pytest.mark.parametrize("body, field", [
        ({"config": {"cluster": {"k_video": 1}}}, "config.cluster.k_video"),
        ({"config": {"bogus": 1}}, "config"),
        ({"configs": [{}, {"rounds": 0}], "dataset": "synth"}, "configs[1]"),
        ({"config": {}, "priority": 11}, "priority"),
        ({"config": {}, "kind": "train"}, "kind"),
        ({"config": {}, "team": "team-b"}, "team"),
        ({"config": {}, "dataset": 999}, "dataset"),
        ({"config": {}, "grid": {"seed": 3}}, "grid"),
        ({"config": {}, "dataset": "synth", "evaluations": [{"dataset": 999, "protocol": "linear"}]}, "evaluations"),
        ({"config": {}}, "config.data.path"),
        ({"config": {"data": {"path": "/etc"}}, "dataset": "synth"}, "config.data.path"),
        ({"kind": "evaluate", "config": {"benchmark": "nope", "data": "/x"}}, "config"),
    ])
    def test_a_bad_payload_is_400_with_field_errors_and_creates_nothing(self, client, token_a, dataset_a, body,
                                                                           field):
        response = call(client, "POST", "/api/jobs", token=token_a, body=body)
        assert response.status_code == 400, response.content
        assert field in response.json()["errors"]
        assert Job.objects.count() == 0

    def test_malformed_json_is_400(self, client, token_a):
        response = client.post("/api/jobs", data="{nope", content_type="application/json",
                               HTTP_AUTHORIZATION=f"Token {token_a}")
        assert response.status_code == 400 and "__all__" in response.json()["errors"]


class TestJobs:
    def test_list_show_cancel_retry(self, client, token_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        listed = call(client, "GET", "/api/jobs?status=queued", token=token_a).json()["jobs"]
        assert [j["id"] for j in listed] == [job.pk] and "config" not in listed[0]
        shown = call(client, "GET", f"/api/jobs/{job.pk}", token=token_a).json()
        assert shown["config"]["variant"] == "xdc" and shown["status"] == "queued"
        assert call(client, "POST", f"/api/jobs/{job.pk}/cancel", token=token_a).json()["status"] == "cancelled"
        assert call(client, "POST", f"/api/jobs/{job.pk}/cancel", token=token_a).status_code == 409
        assert call(client, "POST", f"/api/jobs/{job.pk}/retry", token=token_a).json()["status"] == "queued"

    def test_wrong_method_is_405(self, client, token_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        assert call(client, "GET", f"/api/jobs/{job.pk}/cancel", token=token_a).status_code == 405

    def test_another_teams_job_is_404(self, client, bob, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        token_b = ApiToken.issue(bob)[1]
        assert call(client, "GET", f"/api/jobs/{job.pk}", token=token_b).status_code == 404
        assert call(client, "POST", f"/api/jobs/{job.pk}/cancel", token=token_b).status_code == 404
        assert call(client, "GET", "/api/jobs", token=token_b).json()["jobs"] == []
        assert Job.objects.get(pk=job.pk).status == "queued"


class TestLeaderboardAndDatasets:
    def test_leaderboard_json(self, client, token_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 1}])
        services.claim_job(job.pk, worker="w", task_id="t")
        services.finish_job(job.pk)
        board = call(client, "GET", "/api/leaderboard", token=token_a).json()
        [column] = board["columns"]
        assert column == {"key": "folder:synth · linear|v1|1", "name": "folder:synth · linear", "protocol": "linear",
                          "version": "1", "splits": "1", "stale": False, "latest_version": 1, "pinned_row": None}
        [row] = board["rows"]
        assert row["kind"] == "pretrained" and row["pretrain_jobs"] == [job.pk] and "tiny preset" in row["label"]
        assert row["cells"][column["key"]] == {"mean": None, "std": None, "n": 0, "best": None, "delta": None,
                                               "pending": 1}
        assert [ref["method"] for ref in board["references"]][:1] == ["XDC"]

    def test_register_and_list_datasets(self, client, token_a, tmp_path):
        from lab_helpers import make_folder_dataset

        root = make_folder_dataset(tmp_path / "api")
        response = call(client, "POST", "/api/datasets", token=token_a,
                        body={"name": "api", "layout": "folder", "path": str(root)})
        assert response.status_code == 201 and response.json()["files"] == 6
        bad = call(client, "POST", "/api/datasets", token=token_a,
                   body={"name": "bad", "layout": "esc50", "path": str(root)})
        assert bad.status_code == 400 and "path" in bad.json()["errors"]
        assert Dataset.objects.filter(name="bad").count() == 0
        names = [d["name"] for d in call(client, "GET", "/api/datasets", token=token_a).json()["datasets"]]
        assert names == ["api"]


class TestSubmissionLinks:
    def test_a_grid_over_the_limit_is_refused_before_it_is_built(self, client, token_a, dataset_a):
        grid = {f"optim.axis{i}": list(range(50)) for i in range(8)}  # 50**8 combinations
        response = call(client, "POST", "/api/jobs", token=token_a,
                        body={"config": pretrain_config(dataset_a), "grid": grid})
        assert response.status_code == 400 and "grid" in response.json()["errors"]
        assert Job.objects.count() == 0

    def test_an_evaluation_with_a_parent_uses_the_parents_checkpoint(self, client, token_a, alice, team_a,
                                                                    dataset_a):
        parent = submit_pretrain(alice, team_a, dataset_a)
        body = {"kind": "evaluate", "parent": parent.pk, "dataset": dataset_a.pk,
                "config": {"checkpoint": "random", "benchmark": "folder", "data": dataset_a.path,
                           "protocol": "linear"}}
        response = call(client, "POST", "/api/jobs", token=token_a, body=body)
        assert response.status_code == 400 and "parent" in response.json()["errors"]  # still queued
        services.claim_job(parent.pk, worker="w", task_id="t")
        services.finish_job(parent.pk)
        response = call(client, "POST", "/api/jobs", token=token_a, body=body)
        assert response.status_code == 201
        assert response.json()["jobs"][0]["config"]["checkpoint"] == parent.final_checkpoint

    def test_another_teams_checkpoint_is_refused(self, client, bob, alice, team_a, dataset_a):
        theirs = submit_pretrain(alice, team_a, dataset_a)
        token_b = ApiToken.issue(bob)[1]
        response = call(client, "POST", "/api/jobs", token=token_b, body={
            "kind": "evaluate", "config": {"checkpoint": theirs.final_checkpoint, "benchmark": "folder",
                                           "data": dataset_a.path, "protocol": "linear"}})
        assert response.status_code == 400 and "config.checkpoint" in response.json()["errors"]
        assert Job.objects.filter(kind="evaluate").count() == 0

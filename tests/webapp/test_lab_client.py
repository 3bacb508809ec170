"""`python -m webapp.client` against a live server: submit, list, show, cancel, and a refused submission."""

from __future__ import annotations

import json

import pytest
from lab_helpers import pretrain_config

from webapp import client as lab_client
from webapp.lab.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_client_drives_the_api(live_server, token_a, dataset_a, tmp_path, capsys):
    base = ["--url", live_server.url, "--token", token_a]
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"kind": "pretrain", "config": pretrain_config(dataset_a),
                                    "grid": {"seed": [1, 2]}, "resource": "cpu", "gpus": 0}))
    assert lab_client.main([*base, "submit", str(job_file)]) == 0
    ids = sorted(Job.objects.values_list("pk", flat=True))
    assert len(ids) == 2 and f"#{ids[0]}" in capsys.readouterr().out

    assert lab_client.main([*base, "jobs", "--status", "queued"]) == 0
    assert capsys.readouterr().out.count("queued") == 2
    assert lab_client.main([*base, "show", str(ids[0])]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["seed"] == 1
    assert lab_client.main([*base, "cancel", str(ids[0])]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"

    bare = tmp_path / "bad.json"
    bare.write_text(json.dumps({"cluster": {"k_video": 1}}))  # a bare config file is wrapped as {"config": ...}
    assert lab_client.main([*base, "submit", str(bare)]) == 1
    assert "config.cluster.k_video" in capsys.readouterr().err
    assert Job.objects.count() == 2
    assert lab_client.main(["--url", live_server.url, "--token", "wrong", "jobs"]) == 1

"""The whole lab in a real browser: log in, queue a tiny pretraining with an evaluation fan-out through the form, see
both jobs succeed on a real Celery worker, the leaderboard cell filled in, and the runs in a real MLflow server."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from xdc.data.synthetic import make_synthetic

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 240_000

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")]


@pytest.fixture
def team_with_data(lab, django_user_model, tmp_path):
    from webapp.lab import services
    from webapp.lab.models import Membership, Team

    user = django_user_model.objects.create_user("grace", password="pw-grace-12345")
    team = Team.objects.create(name="Audio-Visual", slug="av")
    Membership.objects.create(user=user, team=team)
    # 3 videos a class: every official UCF101 split then has each class in its test list, as registration checks
    make_synthetic(tmp_path / "data", videos=12, classes=4, seed=5, duration=2.0)
    services.register_dataset(team=team, name="synthetic", layout="folder", path=str(tmp_path / "data"), user=user)
    services.register_dataset(team=team, name="synthetic-ucf101", layout="ucf101", path=str(tmp_path / "data/ucf101"),
                              user=user)
    return user


@pytest.fixture
def page(live_server, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(base_url=live_server.url)
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_it_trains_evaluates_and_ranks_a_model_submitted_through_the_site(page, team_with_data, lab, mlflow_server):
    page.goto("/login/")
    page.fill("#id_username", "grace")
    page.fill("#id_password", "pw-grace-12345")
    page.click("#submit")
    page.wait_for_selector("table#jobs")

    page.goto("/jobs/new/pretrain/")
    form = page.locator("form#submit-form")
    form.locator("select[name=dataset]").select_option(label="synthetic")
    form.locator("select[name=preset]").select_option("tiny")
    form.locator("input[name=eval_datasets]").and_(page.get_by_label("synthetic-ucf101")).check()
    form.locator("input[name=eval_protocols][value=linear]").check()
    form.locator("input[name=eval_splits]").fill("1")
    form.locator("select[name=eval_preset]").select_option("tiny")
    form.locator("select[name=resource]").select_option("cpu")
    form.locator("input[name=gpus]").fill("0")
    form.locator("#submit").click()

    pretraining = _wait_for_success(page, lab)
    evaluation = pretraining["children"][0]
    page.goto(f"/jobs/{evaluation}/")
    _wait_for_success(page, lab)

    page.goto("/leaderboard/")
    cell = page.locator("tr[data-testid=leaderboard-row][data-kind=pretrained] td[data-testid=leaderboard-cell]")
    assert cell.get_attribute("data-n") == "1" and cell.get_attribute("data-pending") == "0"
    assert 0.0 <= float(cell.get_attribute("data-mean")) <= 1.0
    assert page.locator("th[data-testid=leaderboard-column]").inner_text() == "ucf101 · linear-tiny"

    page.goto(f"/jobs/{pretraining['id']}/")
    link = page.locator("a#mlflow-link").get_attribute("href")
    assert link.startswith(mlflow_server)
    run_id = link.rsplit("/", 1)[-1]
    run = _mlflow_api(mlflow_server, f"runs/get?run_id={run_id}")["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["status"] == "FINISHED"
    assert (tags["job_id"], tags["user"], tags["team"]) == (str(pretraining["id"]), "grace", "av")
    page.goto(link)
    page.get_by_text(f"job-{pretraining['id']}").first.wait_for()  # MLflow's own page renders the run by name


def _wait_for_success(page, lab) -> dict:
    """On a job page: wait until the page (which reloads itself when the job ends) shows a final status."""
    root = page.locator("#job")
    job_id = root.get_attribute("data-job-id")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        status = root.get_attribute("data-status")
        if status not in ("queued", "running"):
            break
        time.sleep(1)
    assert status == "succeeded", f"job #{job_id} is {status}: {page.locator('#error').all_inner_texts()}\n" \
                                  f"--- worker log ---\n{lab.log_tail()}"
    from webapp.lab.models import Job

    return {"id": int(job_id), "children": list(Job.objects.filter(parent_id=job_id).values_list("pk", flat=True))}


def _mlflow_api(server: str, path: str) -> dict:
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/{path}", timeout=10) as response:
        return json.load(response)

"""The whole lab in a real browser: log in, preview and queue two tiny pretrainings with an evaluation each through
the form, see them and two random-init baselines succeed on a real Celery worker, the leaderboard keep the baselines'
widths apart, the trainer's lines in the log tail, the cluster gallery's images and sound, two runs' legend colours
differ on Compare, no page scroll sideways at 390 px, and the runs in a real MLflow server."""

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
        # A page may start a sound without a click (the gallery test plays an excerpt from a script).
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(base_url=live_server.url)
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_it_trains_evaluates_and_ranks_a_model_submitted_through_the_site(page, team_with_data, lab, mlflow_server,
                                                                         tmp_path):
    from webapp.lab import services
    from webapp.lab.models import Dataset, Job

    page.goto("/login/")
    page.fill("#id_username", "grace")
    page.fill("#id_password", "pw-grace-12345")
    page.click("#submit")
    page.wait_for_selector("table#jobs")

    ucf101 = Dataset.objects.get(name="synthetic-ucf101")
    page.goto("/jobs/new/pretrain/")
    form = page.locator("form#submit-form")
    form.locator("select[name=dataset]").select_option(label="synthetic")
    form.locator("select[name=preset]").select_option("tiny")
    form.locator("input[name=k]").fill("3,4")
    assert form.locator(f"input[name=eval_{ucf101.pk}][value=svm]").count() == 0  # not a sound benchmark
    form.locator(f"input[name=eval_{ucf101.pk}][value=linear]").check()
    form.locator("input[name=eval_splits]").fill("1")
    form.locator("select[name=resource]").select_option("cpu")
    form.locator("input[name=gpus]").fill("0")
    form.locator("#preview").click()
    assert "Queues 4 jobs" in page.locator("[data-testid=preview]").inner_text()
    assert Job.objects.count() == 0
    page.locator("form#submit-form #submit").click()
    page.wait_for_selector("table#jobs")
    baselines = [services.submit_jobs(team_with_data, ucf101.team, "evaluate", [
        {"checkpoint": "random", "benchmark": "ucf101", "data": ucf101.path, "protocol": "linear", "split": 1,
         "preset": "tiny", "width": width}], dataset=ucf101, resources={"resource": "cpu"})[0] for width in (8, 16)]

    pretrainings = list(Job.objects.filter(kind="pretrain").order_by("pk"))
    for job in pretrainings:
        page.goto(f"/jobs/{job.pk}/")
        done = _wait_for_success(page, lab)
        page.goto(f"/jobs/{done['children'][0]}/")
        _wait_for_success(page, lab)
    for job in baselines:
        page.goto(f"/jobs/{job.pk}/")
        _wait_for_success(page, lab)

    page.goto("/leaderboard/")
    rows = page.locator("tr[data-testid=leaderboard-row]")
    labels = {rows.nth(i).locator("[data-testid=row-label]").inner_text(): rows.nth(i) for i in range(rows.count())}
    assert {"random init · width 8", "random init · width 16"} <= set(labels)  # two widths, never one averaged row
    pretrained = page.locator("tr[data-testid=leaderboard-row][data-kind=pretrained] td[data-testid=leaderboard-cell]")
    assert pretrained.count() == 2 and {pretrained.nth(i).get_attribute("data-n") for i in range(2)} == {"1"}
    assert page.locator("th[data-testid=leaderboard-column] a.sort").inner_text() == "ucf101 · linear-tiny"
    assert page.locator("[data-testid=pending]").count() == 0
    assert page.locator("tr[data-testid=reference-row]").count() >= 7

    first = pretrainings[0]
    page.goto(f"/jobs/{first.pk}/")
    assert "round 1/2 clusters" in page.locator("#log-tail").inner_text()  # the trainer's own line
    link = page.locator("a#mlflow-link").get_attribute("href")
    page.locator("a#gallery-link").click()
    page.wait_for_selector("[data-testid=cluster-table]")
    assert page.locator("[data-testid=gallery-round] [data-testid=cluster-row]").count() == 3  # K=3
    image = page.locator("figure.member img").first
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalHeight === 64", arg=image.element_handle())
    audio = page.locator("figure.member audio").first.element_handle()
    page.evaluate("a => a.play()", audio)  # resolves once it plays
    page.wait_for_function("a => a.currentTime > 0 && a.duration > 0", arg=audio)

    page.goto(f"/compare/?ids={pretrainings[0].pk}&ids={pretrainings[1].pk}")
    strokes = page.evaluate("""() => Array.from(document.querySelectorAll("svg g.legend-item line.swatch"))
        .slice(0, 2).map(line => getComputedStyle(line).stroke)""")
    assert len(strokes) == 2 and strokes[0] != strokes[1], strokes

    page.set_viewport_size({"width": 390, "height": 844})
    for url in ("/jobs/", f"/jobs/{first.pk}/", f"/jobs/{first.pk}/gallery/", "/leaderboard/",
                f"/compare/?ids={pretrainings[0].pk}&ids={pretrainings[1].pk}", "/jobs/new/pretrain/", "/datasets/"):
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(tmp_path / f"390-{len(url)}.png"), full_page=True)
        assert width <= 390, f"{url} scrolls sideways at 390 px: {width} px wide"

    assert link.startswith(mlflow_server)
    run_id = link.rsplit("/", 1)[-1]
    run = _mlflow_api(mlflow_server, f"runs/get?run_id={run_id}")["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["status"] == "FINISHED"
    assert (tags["job_id"], tags["user"], tags["team"]) == (str(first.pk), "grace", "av")
    page.goto(link)
    page.get_by_text(f"job-{first.pk}").first.wait_for()  # MLflow's own page renders the run by name


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

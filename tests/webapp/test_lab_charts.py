"""webapp/lab/charts.py: the SVG charts (legend, ticks, round starts, hover values), the curves stored for finished
jobs, and the job page's live charts endpoint."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.utils import timezone
from lab_helpers import submit_pretrain

from webapp.lab import charts, services
from webapp.lab.models import Job, JobCurves

LOSS = [(step, round(3.0 - step / 100, 2)) for step in range(0, 301, 10)]
CURVES = {"train/loss": LOSS, "train/round": [(0, 0), (100, 1), (200, 2)],
          "cluster/nmi_video_audio": [(0, 0.1), (1, 0.3), (2, 0.4)]}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))


def finish(job: Job, *, run_id: str = "r1", status: str = "succeeded") -> Job:
    Job.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), mlflow_run_id=run_id,
                                         mlflow_experiment_id="4")
    return Job.objects.get(pk=job.pk)


class TestLegend:
    def test_it_gives_each_series_its_own_colour_set_on_the_element(self):
        svg = parse(charts.svg_chart({"a": [(0, 1), (1, 2)], "b": [(0, 2), (1, 1)], "c": [(0, 3), (1, 0)]},
                                     title="t", x_label="step"))
        swatches = [item.find("line") for item in svg.iter("g") if item.get("class") == "legend-item"]
        lines = {line.get("data-series"): line.get("stroke") for line in svg.iter("polyline")}
        assert [s.get("stroke") for s in swatches] == [lines["a"], lines["b"], lines["c"]]
        assert len(set(lines.values())) == 3

    def test_its_labels_are_dark_text_below_the_plot_within_the_view(self):
        svg = parse(charts.svg_chart({f"series {i}": [(0, i), (1, i + 1)] for i in range(12)}, title="t",
                                     x_label="step"))
        width, height = map(float, svg.get("viewBox").split()[2:])
        labels = [t for t in svg.iter("text") if t.get("class") == "legend"]
        assert len(labels) == 12 and {t.get("fill") for t in labels} == {charts.TEXT}
        plot_bottom = max(float(line.get("y1")) for line in svg.iter("line") if line.get("class") == "axis")
        assert all(plot_bottom < float(t.get("y")) <= height for t in labels)
        assert len({t.get("y") for t in labels}) > 1  # it wraps into rows
        assert all(float(t.get("x")) < width for t in labels)

    def test_the_stylesheet_leaves_the_colours_alone(self):
        css = Path(__file__).resolve().parents[2] / "webapp/lab/templates/lab/base.html"
        rules = [line for line in css.read_text().splitlines() if line.strip().startswith("svg")]
        assert rules and not any(re.search(r"\b(fill|stroke)\s*:", line) for line in rules)

    def test_a_long_list_of_series_names_the_rest_on_hover(self):
        svg = str(charts.svg_chart({f"s{i}": [(0, i), (1, i)] for i in range(50)}, title="t", x_label="x"))
        assert svg.count('class="legend-item"') == charts.LEGEND_MAX == 24 and "and 26 more" in svg
        assert svg.count("<polyline") == 50


class TestAxes:
    def test_both_axes_have_four_to_six_ticks_and_grid_lines(self):
        svg = parse(charts.svg_chart({"loss": LOSS}, title="t", x_label="step"))
        ticks = {axis: [t.text for t in svg.iter("text") if t.get("data-axis") == axis] for axis in "xy"}
        assert 4 <= len(ticks["x"]) <= 6 and 4 <= len(ticks["y"]) <= 6
        assert ticks["x"] == ["0", "100", "200", "300"]
        assert sum(1 for line in svg.iter("line") if line.get("class") == "grid") == len(ticks["x"]) + len(ticks["y"])

    @pytest.mark.parametrize(("low", "high", "ticks"), [
        (0, 9, [0, 2, 4, 6, 8, 10]), (0, 1234, [0, 500, 1000, 1500]), (1.2, 2.9, [1.0, 1.5, 2.0, 2.5, 3.0])])
    def test_nice_ticks_step_by_one_two_or_five(self, low, high, ticks):
        assert charts.nice_ticks(low, high) == pytest.approx(ticks)

    def test_nice_ticks_cover_any_range_in_four_to_six(self):
        rng = random.Random(0)
        for _ in range(3000):
            low = rng.uniform(-1, 1) * 10 ** rng.uniform(-6, 8)
            high = low + 10 ** rng.uniform(-5, 8)
            ticks = charts.nice_ticks(low, high)
            assert 4 <= len(ticks) <= 6
            assert ticks[0] <= low + 1e-6 * (high - low) and ticks[-1] >= high - 1e-6 * (high - low)

    def test_a_flat_or_huge_series_still_draws(self):
        for value in (0.0, 5.0, 1e20, -1.7e308):
            svg = parse(charts.svg_chart({"flat": [(0, value), (1, value)]}, title="t", x_label="x"))
            ticks = [t.text for t in svg.iter("text") if t.get("data-axis") == "y"]
            assert len(ticks) >= 4 and "inf" not in " ".join(ticks) and "nan" not in ET.tostring(svg).decode()

    def test_it_scales_with_its_container(self):
        svg = parse(charts.svg_chart({"loss": LOSS}, title="t", x_label="step"))
        assert svg.get("width") == "100%" and svg.get("viewBox").startswith("0 0 520 ") and svg.get("height") is None


class TestRoundsAndHover:
    def test_it_draws_a_dashed_line_at_each_round_start(self):
        loss, _ = charts.split_curves(CURVES)
        svg = parse(charts.svg_chart(loss, title="t", x_label="step", rounds=charts.round_starts(CURVES)))
        starts = [line for line in svg.iter("line") if line.get("class") == "round"]
        assert [line.get("data-round") for line in starts] == ["0", "1", "2"]
        assert all(line.get("stroke-dasharray") for line in starts)
        assert [t.text for t in svg.iter("text") if t.get("class") == "round-label"] == ["r0", "r1", "r2"]
        assert "train/round" not in loss

    def test_points_show_their_series_and_values_on_hover(self):
        svg = parse(charts.svg_chart({"train/loss": [(10, 2.5), (20, 1.25)]}, title="t", x_label="step"))
        points = [c for c in svg.iter("circle") if c.get("class") == "pt"]
        assert [c.find("title").text for c in points] == ["train/loss · 10: 2.5", "train/loss · 20: 1.25"]
        assert {c.get("opacity") for c in points} == {"0"}

    def test_non_finite_points_are_not_drawn(self):
        svg = str(charts.svg_chart({"a": [(0, 1.0), (1, float("nan")), (2, float("inf")), (3, 0.5)]}, title="t",
                                   x_label="x"))
        assert "nan" not in svg and "inf" not in svg and svg.count('class="pt"') == 2
        assert charts.svg_chart({"a": [(0, float("nan"))]}, title="t", x_label="x") == ""

    def test_a_band_is_drawn_under_its_mean_line(self):
        mean, band = charts.seed_band([[(0, 1.0), (10, 3.0)], [(0, 3.0), (5, 1.0), (10, 5.0)]])
        assert mean == [(0, 2.0), (5, 1.5), (10, 4.0)]  # the first run interpolated at step 5
        assert band == ((0, 1.0, 3.0), (5, 1.0, 2.0), (10, 3.0, 5.0))
        svg = str(charts.svg_chart([charts.Series("g", mean, band, note="jobs #1, #2")], title="t", x_label="x"))
        assert svg.index('class="band"') < svg.index("<polyline") and "jobs #1, #2" in svg


def test_downsample_keeps_the_ends_and_extremes():
    rng = random.Random(0)
    points = [(step, rng.random()) for step in range(10_000)]
    points[4321] = (4321, -1.0)
    points[777] = (777, 2.0)
    kept = charts.downsample(points, 500)
    assert len(kept) <= 500 and kept[0] == points[0] and kept[-1] == points[-1]
    assert (4321, -1.0) in kept and (777, 2.0) in kept and kept == sorted(kept)


@pytest.mark.django_db
class TestStoredCurves:
    def test_a_finished_job_is_read_from_mlflow_once(self, alice, team_a, dataset_a, monkeypatch):
        job = finish(submit_pretrain(alice, team_a, dataset_a))
        calls = []
        monkeypatch.setattr(charts, "run_curves", lambda run_id: calls.append(run_id) or (CURVES, ""))
        assert charts.job_curves(job)[0]["train/loss"] == LOSS and calls == ["r1"]
        monkeypatch.setattr(charts, "run_curves", None)  # any further call would fail
        curves, error = charts.job_curves(Job.objects.get(pk=job.pk))
        assert error == "" and [tuple(p) for p in curves["train/loss"]] == LOSS

    def test_an_unreachable_mlflow_is_not_stored(self, alice, team_a, dataset_a):
        job = finish(submit_pretrain(alice, team_a, dataset_a))
        curves, error = charts.job_curves(job)
        assert curves == {} and "MLflow is not reachable" in error and not JobCurves.objects.exists()

    def test_a_running_job_is_always_read_live(self, alice, team_a, dataset_a, monkeypatch):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.set_run(job.pk, run_id="r1", experiment_id="4")
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (CURVES, ""))
        charts.job_curves(Job.objects.get(pk=job.pk))
        assert not JobCurves.objects.exists()

    def test_a_retried_job_is_read_again_when_it_finishes_again(self, alice, team_a, dataset_a, monkeypatch):
        job = finish(submit_pretrain(alice, team_a, dataset_a), status="failed")
        monkeypatch.setattr(charts, "run_curves", lambda run_id: ({"train/loss": [(0, 9.0)]}, ""))
        charts.job_curves(job)
        job = finish(job)  # a later end: what is stored is of the earlier one
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (CURVES, ""))
        assert len(charts.job_curves(job)[0]["train/loss"]) == len(LOSS)

    def test_a_row_of_another_layout_is_read_again(self, alice, team_a, dataset_a, monkeypatch):
        job = finish(submit_pretrain(alice, team_a, dataset_a))
        JobCurves.objects.create(job=job, curves={"train/loss": [[0, 1.0]]}, finished_at=job.finished_at)
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (CURVES, ""))
        assert len(charts.job_curves(job)[0]["train/loss"]) == len(LOSS)
        assert set(JobCurves.objects.get(job=job).curves) == {"series", "preview"}

    def test_stored_curves_are_downsampled_and_finite(self, alice, team_a, dataset_a, monkeypatch):
        job = finish(submit_pretrain(alice, team_a, dataset_a))
        long = [(step, 1.0 / (step + 1)) for step in range(5000)] + [(5000, float("nan"))]
        monkeypatch.setattr(charts, "run_curves", lambda run_id: ({"train/loss": long}, ""))
        charts.job_curves(job)
        stored = JobCurves.objects.get(job=job).curves
        assert len(stored["series"]["train/loss"]) <= charts.STORED_POINTS
        assert len(stored["preview"]["train/loss"]) <= charts.PREVIEW_POINTS
        assert stored["series"]["train/loss"][-1] == stored["preview"]["train/loss"][-1] == [4999, 1.0 / 5000]
        assert min(y for _, y in stored["preview"]["train/loss"]) == 1.0 / 5000


@pytest.mark.django_db
class TestLiveCharts:
    def test_the_job_page_polls_its_charts_while_the_job_is_active(self, client_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        page = client_a.get(f"/jobs/{job.pk}/").content.decode()
        assert f'id="curves" data-url="/jobs/{job.pk}/curves/"' in page and "refreshCharts" in page

    def test_it_returns_the_charts_of_the_running_job(self, client_a, alice, team_a, dataset_a, monkeypatch):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.set_run(job.pk, run_id="r1", experiment_id="4")
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (CURVES, ""))
        body = client_a.get(f"/jobs/{job.pk}/curves/").json()
        assert body["active"] is True and body["status"] == "queued" and body["mlflow_error"] == ""
        assert 'data-series="train/loss"' in body["loss_chart"] and 'data-round="2"' in body["loss_chart"]
        assert 'data-series="nmi_video_audio"' in body["round_chart"]

    def test_it_says_when_mlflow_is_down(self, client_a, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.set_run(job.pk, run_id="r1", experiment_id="4")
        body = client_a.get(f"/jobs/{job.pk}/curves/").json()
        assert body["loss_chart"] == "" and "MLflow is not reachable" in body["mlflow_error"]

    def test_another_teams_job_is_not_found(self, client, bob, alice, team_a, dataset_a, monkeypatch):
        job = submit_pretrain(alice, team_a, dataset_a)
        monkeypatch.setattr(charts, "run_curves", lambda run_id: (CURVES, ""))
        client.force_login(bob)
        assert client.get(f"/jobs/{job.pk}/curves/").status_code == 404
        assert client.get("/jobs/999999/curves/").status_code == 404

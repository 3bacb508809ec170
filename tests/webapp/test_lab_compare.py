"""webapp/lab/comparison.py and the compare page: refusals, team isolation, labels, seed bands, the runs' table with
their evaluations' results, and curves drawn from the database for finished runs."""

from __future__ import annotations

import pytest
from django.utils import timezone
from lab_helpers import submit_pretrain

from webapp.lab import charts, comparison, services
from webapp.lab.models import Job, JobCurves

pytestmark = pytest.mark.django_db


def finished(job: Job, *, loss: list | None = None, run_id: str = "") -> Job:
    """The job, succeeded, with its curves stored as a first read would have left them."""
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status="succeeded", finished_at=now, mlflow_run_id=run_id or f"r{job.pk}",
                                         mlflow_experiment_id="4")
    curves = {"train/loss": loss or [[0, 3.0], [10, 2.0], [20, 1.5]], "train/round": [[0, 0], [10, 1]],
              "cluster/nmi_video_audio": [[0, 0.1], [1, 0.4], [2, 0.3]]}
    JobCurves.objects.create(job_id=job.pk, curves=charts.stored_form(curves), finished_at=now)
    return Job.objects.get(pk=job.pk)


def evaluation(user, team, dataset, **changes) -> Job:
    [job] = services.submit_jobs(user, team, "evaluate", [
        {"checkpoint": "random", "benchmark": "folder", "data": dataset.path, "protocol": "linear", **changes}])
    return job


@pytest.fixture
def no_mlflow(monkeypatch):
    """Any MLflow read fails the test."""
    def refuse(run_id):
        raise AssertionError(f"MLflow was asked for run {run_id}")

    monkeypatch.setattr(charts, "run_curves", refuse)


class TestRefusals:
    def test_it_refuses_an_evaluation_with_the_reason(self, client_a, alice, team_a, dataset_a):
        run = submit_pretrain(alice, team_a, dataset_a)
        other = evaluation(alice, team_a, dataset_a)
        page = client_a.get(f"/compare/?ids={run.pk}&ids={other.pk}")
        assert page.status_code == 400
        assert f"#{other.pk} (evaluate): not a pretraining run" in page.content.decode()
        assert b'id="compare-refusal"' in page.content and "comparison" not in page.context

    def test_it_refuses_more_than_two_hundred_ids(self, client_a, alice):
        page = client_a.get("/compare/?id_list=" + ",".join(str(i) for i in range(1, 202)))
        assert page.status_code == 400
        assert "at most 200 runs at once; 201 were selected" in page.context["refusal"]

    def test_two_hundred_ids_are_fine(self, client_a, alice):
        assert client_a.get("/compare/?id_list=" + ",".join(str(i) for i in range(1, 201))).status_code == 200

    def test_bad_ids_are_ignored(self, client_a, alice):
        assert client_a.get("/compare/?ids=99999999999999999999&ids=%C2%B2&id_list=abc,%00").status_code == 200


class TestTeams:
    def test_another_teams_runs_are_silently_not_found(self, client, alice, bob, team_a, team_b, dataset_a):
        theirs = [submit_pretrain(alice, team_a, dataset_a, seed=s) for s in (1, 2)]
        evaluation_of_theirs = evaluation(alice, team_a, dataset_a)
        client.force_login(bob)
        page = client.get(f"/compare/?ids={theirs[0].pk}&ids={theirs[1].pk}&ids={evaluation_of_theirs.pk}")
        assert page.status_code == 200 and page.context["jobs"] == []
        assert "synth" not in page.content.decode()  # nothing of the other team's runs shows

    def test_another_teams_evaluations_are_not_shown_among_the_results(self, alice, bob, team_a, dataset_a):
        run = finished(submit_pretrain(alice, team_a, dataset_a))
        assert comparison.compare_runs(bob, [run.pk]).jobs == []


class TestLabels:
    def test_runs_are_named_by_variant_key_and_seed(self, alice, team_a, dataset_a, no_mlflow):
        runs = [finished(submit_pretrain(alice, team_a, dataset_a, seed=seed, cluster__k_video=k,
                                         cluster__k_audio=k, cluster__k_joint=k))
                for seed, k in ((0, 32), (1, 64))]
        result = comparison.compare_runs(alice, [r.pk for r in runs])
        assert [run.label for run in result.runs] == ["xdc · K=32 · seed 0", "xdc · K=64 · seed 1"]
        assert 'data-series="xdc · K=32 · seed 0"' in result.loss_chart
        assert f"job #{runs[0].pk}" in result.loss_chart  # the job id is in the hover text

    def test_only_the_seed_apart_says_just_variant_and_seed(self, alice, team_a, dataset_a, no_mlflow):
        run = finished(submit_pretrain(alice, team_a, dataset_a, seed=1))
        other = finished(submit_pretrain(alice, team_a, dataset_a, variant="sdc", seed=1))
        labels = [r.label for r in comparison.compare_runs(alice, [run.pk, other.pk]).runs]
        assert labels == ["xdc · seed 1", "sdc · seed 1"]


class TestSeedBands:
    def test_two_seeds_of_one_config_are_one_mean_line_in_a_band(self, client_a, alice, team_a, dataset_a,
                                                                 no_mlflow):
        seeds = [finished(submit_pretrain(alice, team_a, dataset_a, seed=s), loss=[[0, 3.0 + s], [10, 1.0 + s]])
                 for s in (1, 2)]
        alone = finished(submit_pretrain(alice, team_a, dataset_a, seed=1, optim__lr=0.2))
        page = client_a.get("/compare/?id_list=" + ",".join(str(j.pk) for j in [*seeds, alone]))
        result = page.context["comparison"]
        group = "xdc · lr=0.05 · seeds 1,2 · n=2"
        assert [run.group for run in result.runs] == [group, group, ""]
        assert result.loss_chart.count('class="band"') == 1 and f'data-band="{group}"' in result.loss_chart
        assert f'data-series="{group}"' in result.loss_chart and 'data-series="xdc · lr=0.2 · seed 1"' in (
            result.loss_chart)
        assert result.round_chart.count('class="band"') == 1
        assert f"jobs #{seeds[0].pk}, #{seeds[1].pk}" in result.loss_chart

    def test_runtime_keys_do_not_split_a_group(self, alice, team_a, dataset_a, no_mlflow):
        runs = [finished(submit_pretrain(alice, team_a, dataset_a, seed=s, log_every=5 + s)) for s in (1, 2)]
        assert len(comparison.seed_groups(runs, {j.pk: comparison.flatten(j.config) for j in runs})) == 1


class TestRunsTable:
    def test_it_shows_last_and_best_of_each_curve(self, client_a, alice, team_a, dataset_a, no_mlflow):
        runs = [finished(submit_pretrain(alice, team_a, dataset_a, seed=s)) for s in (1, 2)]
        result = client_a.get(f"/compare/?ids={runs[0].pk}&ids={runs[1].pk}").context["comparison"]
        assert result.columns == ["train/loss", "cluster/nmi_video_audio"]
        loss, nmi = result.runs[0].cells
        assert (loss.last, loss.best, nmi.last, nmi.best) == (1.5, 1.5, 0.3, 0.4)

    def test_it_lists_each_runs_evaluation_results(self, client_a, alice, team_a, dataset_a, no_mlflow):
        run, other = (finished(submit_pretrain(alice, team_a, dataset_a, seed=s)) for s in (1, 2))
        [child] = services.submit_jobs(alice, team_a, "evaluate", [
            {"checkpoint": run.final_checkpoint, "benchmark": "folder", "data": dataset_a.path, "split": 1,
             "protocol": "linear"}], parent=run)
        services.store_result(child, {"benchmark": "folder", "split": 1, "protocol": {"name": "linear"},
                                      "metrics": {"top1": 0.625}})
        page = client_a.get(f"/compare/?ids={run.pk}&ids={other.pk}")
        runs = page.context["comparison"].runs
        assert [r.metric_value for r in runs[0].results] == [0.625] and runs[1].results == []
        assert f"<span title=\"job #{child.pk}\">folder · linear top1 0.6250</span>" in page.content.decode()

    def test_result_text_is_escaped(self):
        run = comparison.Run(job=Job(pk=1), label="x", group="",
                             results=[comparison.Downstream(7, "<b>folder</b>", "linear", "top1", 0.5)])
        assert run.results_html == '<span title="job #7">&lt;b&gt;folder&lt;/b&gt; · linear top1 0.5000</span>'

    def test_it_keeps_the_parameter_diff_and_mlflow_link(self, client_a, alice, team_a, dataset_a, no_mlflow):
        one = finished(submit_pretrain(alice, team_a, dataset_a, seed=1), run_id="r1")
        two = finished(submit_pretrain(alice, team_a, dataset_a, seed=2, optim__lr=0.2), run_id="r2")
        page = client_a.get(f"/compare/?ids={one.pk}&ids={two.pk}")
        assert dict(page.context["diff"]) == {"optim.lr": [0.05, 0.2], "seed": [1, 2]}
        assert [run.diff for run in page.context["comparison"].runs] == [[0.05, 1], [0.2, 2]]
        assert b'id="mlflow-compare"' in page.content


class TestCurvesFromTheDatabase:
    def test_finished_runs_draw_with_mlflow_unreachable(self, client_a, alice, team_a, dataset_a, settings):
        settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens there
        runs = [finished(submit_pretrain(alice, team_a, dataset_a, seed=s)) for s in (1, 2)]
        page = client_a.get(f"/compare/?ids={runs[0].pk}&ids={runs[1].pk}")
        assert page.content.count(b'data-testid="chart"') == 2 and b"MLflow is not reachable" not in page.content

    def test_a_finished_run_read_once_is_stored(self, alice, team_a, dataset_a, monkeypatch):
        run = submit_pretrain(alice, team_a, dataset_a)
        Job.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now(), mlflow_run_id="r9")
        monkeypatch.setattr(charts, "run_curves", lambda run_id: ({"train/loss": [(0, 1.0), (1, 0.5)]}, ""))
        comparison.compare_runs(alice, [run.pk])
        stored = JobCurves.objects.get(job=run).curves
        assert stored["series"] == stored["preview"] == {"train/loss": [[0, 1.0], [1, 0.5]]}

    def test_only_active_runs_ask_mlflow(self, alice, team_a, dataset_a, monkeypatch):
        done = finished(submit_pretrain(alice, team_a, dataset_a, seed=1))
        active = submit_pretrain(alice, team_a, dataset_a, seed=2)
        services.set_run(active.pk, run_id="live", experiment_id="4")
        asked = []
        monkeypatch.setattr(charts, "run_curves", lambda run_id: asked.append(run_id) or ({}, ""))
        comparison.compare_runs(alice, [done.pk, active.pk])
        assert asked == ["live"]

    def test_two_hundred_stored_runs_take_a_few_queries(self, client_a, alice, team_a, dataset_a, no_mlflow,
                                                        django_assert_max_num_queries):
        template = finished(submit_pretrain(alice, team_a, dataset_a, seed=0))
        copies = Job.objects.bulk_create([
            Job(team=team_a, creator=alice, kind="pretrain", config={**template.config, "seed": seed},
                variant="xdc", dataset=dataset_a, status="succeeded", finished_at=template.finished_at,
                mlflow_run_id=f"r{seed}", mlflow_experiment_id="4") for seed in range(1, 200)])
        JobCurves.objects.bulk_create([JobCurves(job_id=job.pk, curves=template.cached_curves.curves,
                                                 finished_at=template.finished_at) for job in copies])
        ids = ",".join(str(pk) for pk in [template.pk, *(job.pk for job in copies)])
        with django_assert_max_num_queries(12):
            page = client_a.get(f"/compare/?id_list={ids}")
        assert page.status_code == 200 and len(page.context["jobs"]) == 200
        assert "seeds 0,1,2," in page.context["comparison"].loss_chart  # one group of 200 seeds

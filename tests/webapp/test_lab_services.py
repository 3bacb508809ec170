"""The services layer on a real database: submission, the worker's state machine, fan-out, requeue."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from lab_helpers import eval_record, make_folder_dataset, pretrain_config, run_to_success, submit_pretrain
from django.db import connection
from django.utils import timezone

from webapp.lab import services
from webapp.lab.models import Job, Result

pytestmark = pytest.mark.django_db


class TestGrid:
    def test_it_makes_one_config_per_combination(self):
        configs = services.expand_grid({"rounds": 2}, {"variant": ["xdc", "sdc"], "cluster.k": [64, 128],
                                                       "seed": [1, 2, 3]})
        assert len(configs) == 12
        assert configs[0] == {"rounds": 2, "variant": "xdc", "seed": 1,
                              "cluster": {"k_video": 64, "k_audio": 64, "k_joint": 64}}
        assert {(c["variant"], c["cluster"]["k_audio"], c["seed"]) for c in configs} == {
            (v, k, s) for v in ("xdc", "sdc") for k in (64, 128) for s in (1, 2, 3)}

    def test_it_keeps_the_base_without_axes_and_does_not_mutate_it(self):
        base = {"optim": {"lr": 0.1}}
        assert services.expand_grid(base, {}) == [base]
        services.expand_grid(base, {"optim.lr": [0.5]})
        assert base == {"optim": {"lr": 0.1}}


class TestSubmit:
    def test_it_creates_validated_jobs_in_the_team_experiment(self, alice, team_a, dataset_a, settings):
        jobs = services.submit_jobs(alice, team_a, "pretrain",
                                    services.expand_grid(pretrain_config(dataset_a), {"seed": [1, 2]}),
                                    dataset=dataset_a, priority=7, resources={"resource": "cpu"})
        assert [j.config["seed"] for j in jobs] == [1, 2]
        job = jobs[0]
        assert job.status == "queued" and job.variant == "xdc" and job.priority == 7 and job.queue_name == "cpu"
        assert job.config["experiment"] == "lab-team-a"
        assert job.config["run_name"] == f"job-{job.pk}"
        assert job.config["optim"]["momentum"] == 0.9  # the full normalised tree is stored
        assert job.out_dir == str(settings.LAB_RUNS_DIR / "team-a" / f"job-{job.pk}")

    def test_it_creates_nothing_when_one_config_is_bad(self, alice, team_a, dataset_a):
        good, bad = pretrain_config(dataset_a), pretrain_config(dataset_a, cluster__k_video=1)
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "pretrain", [good, bad], dataset=dataset_a)
        assert "configs[1]" in caught.value.errors
        assert "config.cluster.k_video" in caught.value.errors
        assert Job.objects.count() == 0

    def test_it_refuses_unknown_keys_and_bad_meta(self, alice, team_a, dataset_a):
        with pytest.raises(services.LabError, match="unknown config key"):
            services.submit_jobs(alice, team_a, "pretrain", [{"nope": 1}])
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a)], priority=12)
        assert "priority" in caught.value.errors
        assert Job.objects.count() == 0

    def test_it_enqueues_after_commit(self, alice, team_a, dataset_a, settings, monkeypatch,
                                      django_capture_on_commit_callbacks):
        sent = []
        monkeypatch.setattr(services, "enqueue", lambda job: sent.append(job.pk))
        with django_capture_on_commit_callbacks(execute=True):
            jobs = services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a)], dataset=dataset_a)
            assert sent == []
        assert sent == [jobs[0].pk]

    def test_enqueue_sends_the_id_to_the_jobs_queue(self, alice, team_a, dataset_a, settings, monkeypatch):
        import sys
        import types

        calls = []

        class FakeTask:
            def apply_async(self, **kwargs):
                calls.append(kwargs)
                return types.SimpleNamespace(id="task-1")

        monkeypatch.setitem(sys.modules, "workers.tasks", types.SimpleNamespace(run_job=FakeTask()))
        settings.LAB_ENQUEUE = "celery"
        job = submit_pretrain(alice, team_a, dataset_a)
        assert services.enqueue(job) == "task-1"
        assert calls == [{"args": [job.pk], "queue": "gpu1", "priority": 5, "countdown": None, "retry": False}]
        job.refresh_from_db()
        assert job.celery_task_id == "task-1" and job.message_sent_at is not None


class TestWorkerSide:
    def test_claim_moves_queued_to_running_once(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        claimed = services.claim_job(job.pk, worker="w1", task_id="t1")
        assert claimed.status == "running" and claimed.attempt == 1 and claimed.worker == "w1"
        assert services.claim_job(job.pk, worker="w2", task_id="t2") is None

    def test_heartbeat_records_progress_and_answers_cancel(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(job.pk, worker="w1", task_id="t1")
        assert services.heartbeat(job.pk, progress=0.25, eta=30.0, stage="round 1") is False
        job.refresh_from_db()
        assert (job.progress, job.eta_seconds, job.stage) == (0.25, 30.0, "round 1")
        services.cancel_job(job)
        assert services.heartbeat(job.pk, progress=0.3, eta=None, stage="x") is True
        assert services.heartbeat(job.pk, progress=0.3, eta=None, stage="x", worker="someone-else") is True

    def test_append_log_keeps_a_bounded_tail(self, alice, team_a, dataset_a, settings):
        settings.LAB_LOG_TAIL_CHARS = 100
        job = submit_pretrain(alice, team_a, dataset_a)
        for index in range(30):
            services.append_log(job.pk, f"line {index:02d}\n")
        job.refresh_from_db()
        assert len(job.log_tail) == 100 and job.log_tail.endswith("line 29\n")

    def test_set_run_fail_and_mark_cancelled(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(job.pk, worker="w1", task_id="t1")
        services.set_run(job.pk, run_id="abc", experiment_id="7")
        failed = services.fail_job(job.pk, error="non-finite loss")
        assert failed.status == "failed" and failed.error == "non-finite loss" and failed.finished_at
        assert failed.mlflow_url == "http://mlflow.example/#/experiments/7/runs/abc"
        other = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(other.pk, worker="w1", task_id="t2")
        assert services.mark_cancelled(other.pk).status == "cancelled"

    def test_finish_stores_an_evaluation_result(self, alice, team_a, dataset_a):
        [job] = services.submit_jobs(alice, team_a, "evaluate", [{"checkpoint": "random", "benchmark": "folder",
                                                                  "data": dataset_a.path, "protocol": "retrieval"}])
        run_to_success(job, eval_record(protocol="retrieval", top1=0.4))
        result = Result.objects.get(job=job)
        assert (result.protocol, result.metric_name, result.metric_value) == ("retrieval", "recall@1", 0.4)
        assert result.protocol_version == "1" and result.team == team_a

    def test_finish_twice_changes_nothing_the_second_time(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 1}])
        run_to_success(job)
        assert services.finish_job(job.pk).status == "succeeded"
        assert Job.objects.filter(parent=job).count() == 1


class TestClaimAtomicity:
    def test_two_claims_of_one_job_one_wins(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        results = [services.claim_job(job.pk, worker=f"w{i}", task_id=f"t{i}") for i in range(2)]
        assert sum(r is not None for r in results) == 1
        job.refresh_from_db()
        assert job.attempt == 1

    @pytest.mark.django_db(transaction=True)
    def test_concurrent_claims_from_threads_one_wins(self, alice, team_a, tmp_path):
        dataset = services.register_dataset(team=team_a, name="d", layout="folder",
                                            path=str(make_folder_dataset(tmp_path / "d")))
        job = submit_pretrain(alice, team_a, dataset)
        barrier, wins = threading.Barrier(4), []

        def claim(index: int) -> None:
            barrier.wait()
            try:
                wins.append(services.claim_job(job.pk, worker=f"w{index}", task_id=f"t{index}"))
            finally:
                connection.close()

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(w is not None for w in wins) == 1
        assert Job.objects.get(pk=job.pk).attempt == 1


class TestCancelRetry:
    def test_cancel_a_queued_job_at_once(self, alice, team_a, dataset_a):
        job = services.cancel_job(submit_pretrain(alice, team_a, dataset_a))
        assert job.status == "cancelled" and job.finished_at
        assert services.claim_job(job.pk, worker="w", task_id="t") is None

    def test_cancel_a_running_job_asks_the_worker(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(job.pk, worker="w", task_id="t")
        job = services.cancel_job(job)
        assert job.status == "running" and job.cancel_requested

    def test_cancel_a_finished_job_is_refused(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        run_to_success(job)
        with pytest.raises(services.InvalidTransition):
            services.cancel_job(job)

    def test_retry_requeues_the_same_row_and_folder(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(job.pk, worker="w", task_id="t")
        services.fail_job(job.pk, error="boom")
        out_dir = job.out_dir
        job = services.retry_job(Job.objects.get(pk=job.pk))
        assert job.status == "queued" and job.error == "" and job.out_dir == out_dir
        again = services.claim_job(job.pk, worker="w", task_id="t2")
        assert again.attempt == 2

    def test_retry_of_a_queued_or_succeeded_job_is_refused(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        with pytest.raises(services.InvalidTransition):
            services.retry_job(job)
        run_to_success(job)
        with pytest.raises(services.InvalidTransition):
            services.retry_job(job)


class TestRequeueStale:
    def _running(self, alice, team_a, dataset_a, age_s: float, **fields):
        job = submit_pretrain(alice, team_a, dataset_a)
        services.claim_job(job.pk, worker="w", task_id="t")
        Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=age_s), **fields)
        return job

    def test_it_requeues_only_silent_running_jobs(self, alice, team_a, dataset_a):
        stale = self._running(alice, team_a, dataset_a, 600)
        fresh = self._running(alice, team_a, dataset_a, 5)
        assert services.requeue_stale_jobs(timeout_s=60) == [stale.pk]
        assert Job.objects.get(pk=stale.pk).status == "queued"
        assert Job.objects.get(pk=fresh.pk).status == "running"
        assert services.requeue_stale_jobs(timeout_s=60) == []  # a second sweep finds nothing
        assert services.claim_job(stale.pk, worker="w2", task_id="t2").attempt == 2

    def test_a_stale_job_with_a_pending_cancel_ends_cancelled(self, alice, team_a, dataset_a):
        job = self._running(alice, team_a, dataset_a, 600, cancel_requested=True)
        assert services.requeue_stale_jobs(timeout_s=60) == []
        assert Job.objects.get(pk=job.pk).status == "cancelled"

    def test_the_old_worker_is_told_to_stop(self, alice, team_a, dataset_a):
        job = self._running(alice, team_a, dataset_a, 600)
        services.requeue_stale_jobs(timeout_s=60)
        services.claim_job(job.pk, worker="w2", task_id="t2")
        assert services.heartbeat(job.pk, progress=0.5, eta=None, stage="late", worker="w") is True
        assert services.heartbeat(job.pk, progress=0.5, eta=None, stage="ok", worker="w2") is False


class TestFanOut:
    def test_success_queues_the_evaluations_on_the_final_checkpoint(self, alice, team_a, dataset_a):
        specs = [{"dataset": dataset_a.pk, "protocol": p, "split": 1} for p in ("linear", "retrieval")]
        job = submit_pretrain(alice, team_a, dataset_a, evaluations=specs)
        services.claim_job(job.pk, worker="w", task_id="t")
        services.set_run(job.pk, run_id="run-p", experiment_id="3")
        services.finish_job(job.pk)
        children = list(Job.objects.filter(parent=job).order_by("pk"))
        assert [c.config["protocol"] for c in children] == ["linear", "retrieval"]
        child = children[0]
        assert child.kind == "evaluate" and child.status == "queued" and child.dataset == dataset_a
        assert child.config["checkpoint"] == f"{job.out_dir}/final.pt"
        assert child.config["pretrain_run_id"] == "run-p" and child.config["experiment"] == "lab-team-a"

    def test_a_bad_evaluation_spec_is_refused_at_submission(self, alice, team_a, dataset_a):
        with pytest.raises(services.LabError) as caught:
            submit_pretrain(alice, team_a, dataset_a, evaluations=[{"dataset": dataset_a.pk, "protocol": "svm"}])
        assert "evaluations" in caught.value.errors
        assert Job.objects.count() == 0

    def test_a_failed_pretraining_queues_nothing(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 1}])
        services.claim_job(job.pk, worker="w", task_id="t")
        services.fail_job(job.pk, error="x")
        assert not Job.objects.filter(parent=job).exists()


class TestDatasets:
    def test_register_counts_files_and_classes(self, dataset_a):
        assert (dataset_a.files, dataset_a.classes, dataset_a.labeled) == (6, 2, True)

    def test_register_refuses_a_missing_path_a_bad_layout_and_a_taken_name(self, team_a, dataset_a, tmp_path):
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_a, name="x", layout="folder", path=str(tmp_path / "nope"))
        assert "path" in caught.value.errors
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_a, name="x", layout="ucf101", path=dataset_a.path)
        assert "path" in caught.value.errors and "ucf101" in caught.value.errors["path"][0]
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_a, name="synth", layout="folder", path=dataset_a.path)
        assert "name" in caught.value.errors


class TestLinksAreChecked:
    def _succeeded(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        run_to_success(job)
        return Job.objects.get(pk=job.pk)

    def test_an_evaluation_of_a_parent_runs_on_the_parents_checkpoint(self, alice, team_a, dataset_a):
        parent = self._succeeded(alice, team_a, dataset_a)
        cfg = {"checkpoint": "random", "benchmark": "folder", "data": dataset_a.path, "protocol": "linear"}
        [child] = services.submit_jobs(alice, team_a, "evaluate", [cfg], parent=parent, dataset=dataset_a)
        assert child.config["checkpoint"] == parent.final_checkpoint

    def test_a_parent_must_be_a_succeeded_pretraining_of_the_team(self, alice, team_a, team_b, dataset_a):
        cfg = {"checkpoint": "random", "benchmark": "folder", "data": dataset_a.path, "protocol": "linear"}
        queued = submit_pretrain(alice, team_a, dataset_a)
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "evaluate", [cfg], parent=queued)
        assert "parent" in caught.value.errors
        parent = self._succeeded(alice, team_a, dataset_a)
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_b, "evaluate", [cfg], parent=parent)
        assert "parent" in caught.value.errors
        assert Job.objects.filter(kind="evaluate").count() == 0

    def test_a_dataset_of_another_team_is_refused(self, alice, team_b, dataset_a):
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_b, "pretrain", [pretrain_config(dataset_a)], dataset=dataset_a)
        assert "dataset" in caught.value.errors and Job.objects.count() == 0

    def test_another_teams_checkpoint_path_is_refused(self, alice, team_a, team_b, dataset_a):
        theirs = self._succeeded(alice, team_a, dataset_a).final_checkpoint
        cfg = {"checkpoint": theirs, "benchmark": "folder", "data": dataset_a.path, "protocol": "linear"}
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_b, "evaluate", [cfg])
        assert "nor a succeeded pretraining of team team-b" in caught.value.errors["config.checkpoint"][0]
        [own] = services.submit_jobs(alice, team_a, "evaluate", [cfg])
        assert own.config["checkpoint"] == theirs
        assert own.parent.final_checkpoint == theirs  # named by its path, the job is still the parent

    def test_a_name_too_long_or_not_text_is_refused(self, alice, team_a, dataset_a):
        for name in ("x" * 201, {"a": 1}):
            with pytest.raises(services.LabError) as caught:
                services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a)], name=name)
            assert "name" in caught.value.errors
        assert Job.objects.count() == 0

    def test_a_huge_grid_is_refused_before_it_is_built(self, settings):
        keys = ("rounds", "seed", "batch_size", "optim.lr", "cluster.k", "data.fps")
        axes = {key: list(range(100)) for key in keys}  # 10**12 combinations: never built
        with pytest.raises(services.LabError) as caught:
            services.expand_grid({}, axes, limit=settings.LAB_MAX_GRID)
        assert "limit" in caught.value.errors["grid"][0]

    def test_a_grid_axis_that_is_no_config_key_is_refused(self):
        with pytest.raises(services.LabError) as caught:
            services.expand_grid({}, {"a" + ".b" * 5000: [1]})
        assert "no config key" in caught.value.errors["grid"][0]


class TestFinalWritesBelongToTheAttempt:
    def test_an_attempt_that_lost_its_row_cannot_end_the_next_one(self, alice, team_a, dataset_a):
        job = submit_pretrain(alice, team_a, dataset_a)
        first = services.claim_job(job.pk, worker="w1", task_id="t1")
        Job.objects.filter(pk=job.pk).update(status="queued", worker="")  # requeued as stale
        second = services.claim_job(job.pk, worker="w1", task_id="t2")  # same host, next attempt
        old = {"worker": first.worker, "attempt": first.attempt}
        services.finish_job(job.pk, owner=old)
        services.fail_job(job.pk, error="late", owner=old)
        services.mark_cancelled(job.pk, owner=old)
        assert Job.objects.get(pk=job.pk).status == "running"
        services.finish_job(job.pk, owner={"worker": second.worker, "attempt": second.attempt})
        assert Job.objects.get(pk=job.pk).status == "succeeded"


class TestEvents:
    def test_the_labs_lines_outlive_a_chatty_trainer_in_the_events(self, alice, team_a, dataset_a, settings):
        settings.LAB_LOG_TAIL_CHARS = 200
        job = submit_pretrain(alice, team_a, dataset_a)
        services.append_event(job.pk, "[worker] attempt 1 started\n")
        for step in range(50):
            services.append_log(job.pk, f"round {step}: a line of the trainer's\n")
        job.refresh_from_db()
        assert "attempt 1 started" not in job.log_tail and len(job.log_tail) == 200
        assert job.events == "[worker] attempt 1 started\n"

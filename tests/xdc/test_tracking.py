"""Tracking through the spool, against a real MLflow server that goes away: logging never blocks or fails, nothing
logged is lost, and a resumed run's history holds one value per step."""

from __future__ import annotations

import threading

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import _free_port, start_mlflow, stop_mlflow
from xdc.tracking import MLflowTracker, TrackingError


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server this test may stop and start again on the same port and store."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the spool retries; the client need not
    # A loaded machine's slow server is not an outage (a stopped one refuses connections at once).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    root, port = tmp_path / "mlflow", _free_port()
    root.mkdir()
    state = {"process": start_mlflow(root, port)[1]}

    class Server:
        uri = f"http://127.0.0.1:{port}"

        def stop(self):
            stop_mlflow(state["process"])

        def start(self):
            state["process"] = start_mlflow(root, port)[1]

    yield Server()
    stop_mlflow(state["process"])


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def in_thread(action) -> bool:
    """Run `action` and say whether it returned within 60 s (MLflow's own retries would take minutes)."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    thread.join(60)
    return not thread.is_alive()


def test_an_outage_neither_blocks_logging_nor_loses_a_metric(server, tmp_path):
    tracker = MLflowTracker(server.uri)
    tracker.open_spool(tmp_path / "spool")
    run_id = tracker.start(experiment="outage", run_name="r", run_id=None, tags={"kind": "test"})
    tracker.log_params({"lr": 0.1})
    for step in range(10):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    server.stop()

    def during_the_outage():
        for step in range(10, 60):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        tracker.set_tags({"stage": "outage"})
        tracker.flush()

    assert in_thread(during_the_outage), "logging blocked on an unreachable MLflow"
    server.start()
    tracker.finish("FINISHED")

    assert history(server.uri, run_id, "train/loss") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(60)]
    run = MlflowClient(server.uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1" and run.data.tags["stage"] == "outage"


def test_a_finish_during_an_outage_says_so_and_the_next_attempt_sends_the_rest(server, tmp_path, monkeypatch):
    monkeypatch.setattr("xdc.tracking.FINISH_WAIT_SECONDS", 3)
    first = MLflowTracker(server.uri)
    first.open_spool(tmp_path / "spool")
    run_id = first.start(experiment="late", run_name="r", run_id=None, tags={})
    server.stop()
    for step in range(5):
        first.log_metrics({"m": float(step)}, step=step)
    with pytest.raises(TrackingError, match="5 tracking records wait in"):
        first.finish("FINISHED")
    server.start()

    resumed = MLflowTracker(server.uri)  # the next attempt, on the same spool
    resumed.open_spool(tmp_path / "spool")
    resumed.start(experiment="late", run_name="r", run_id=run_id, tags={})
    resumed.finish("FINISHED")
    assert history(server.uri, run_id, "m") == [(s, float(s)) for s in range(5)]


def test_a_resumed_run_logs_each_step_once(server, tmp_path):
    killed = MLflowTracker(server.uri)
    killed.open_spool(tmp_path / "spool")
    run_id = killed.start(experiment="resume", run_name="r", run_id=None, tags={})
    for step in range(12):  # the checkpoint was at step 8; steps 8-11 are redone after the kill
        killed.log_metrics({"train/loss": float(step)}, step=step)
    killed._abandoned.set()  # SIGKILL: no finish, and its sender stops wherever it was
    killed._sender.join()

    resumed = MLflowTracker(server.uri)
    resumed.open_spool(tmp_path / "spool")
    resumed.start(experiment="resume", run_name="r", run_id=run_id, tags={})
    for step in range(8, 20):
        resumed.log_metrics({"train/loss": float(step) + 0.5 * (step < 12)}, step=step)
    resumed.finish("FINISHED")
    assert history(server.uri, run_id, "train/loss") == [(s, float(s)) for s in range(20)]


def test_experiments_are_marked_as_model_training_for_mlflows_ui(server, tmp_path):
    client = MlflowClient(server.uri)
    client.create_experiment("made-elsewhere")  # an experiment of an older lab: marked on its next run
    for name in ("fresh", "made-elsewhere"):
        tracker = MLflowTracker(server.uri)
        tracker.open_spool(tmp_path / name)
        tracker.start(experiment=name, run_name="r", run_id=None, tags={})
        tracker.finish("FINISHED")
        tags = client.get_experiment_by_name(name).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_folder_is_logged_with_its_files_in_place(server, tmp_path):
    folder = tmp_path / "round" / "media"
    folder.mkdir(parents=True)
    for name in ("v000001.jpg", "v000001.wav"):
        (folder / name).write_bytes(b"x")
    tracker = MLflowTracker(server.uri)
    tracker.open_spool(tmp_path / "spool")
    run_id = tracker.start(experiment="folders", run_name="r", run_id=None, tags={})
    tracker.log_artifact(folder, "gallery/round_000/media")
    tracker.finish("FINISHED")
    listed = MlflowClient(server.uri).list_artifacts(run_id, "gallery/round_000/media")
    assert sorted(item.path for item in listed) == ["gallery/round_000/media/v000001.jpg",
                                                    "gallery/round_000/media/v000001.wav"]

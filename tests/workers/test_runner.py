"""The attempt runner's own pieces (the whole attempt is exercised through real workers in test_tasks.py)."""

from __future__ import annotations

from types import SimpleNamespace


def test_each_teams_trainer_uses_a_cache_of_its_own(monkeypatch, tmp_path):
    from workers.runner import attempt_env

    monkeypatch.setenv("XDC_CACHE", str(tmp_path / "cache"))
    env = attempt_env(SimpleNamespace(team=SimpleNamespace(slug="team-a")))
    assert env["XDC_CACHE"] == str(tmp_path / "cache" / "teams" / "team-a")


def test_the_trainer_never_sees_the_labs_secrets(monkeypatch):
    from workers.runner import attempt_env

    monkeypatch.setenv("DATABASE_URL", "postgres://lab:secret@db/lab")
    monkeypatch.setenv("SECRET_KEY", "x" * 50)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "for-mlflow")
    env = attempt_env(SimpleNamespace(team=SimpleNamespace(slug="team-a")), gpus=["2", "3"])
    assert "DATABASE_URL" not in env and "SECRET_KEY" not in env
    assert env["MLFLOW_TRACKING_PASSWORD"] == "for-mlflow" and env["CUDA_VISIBLE_DEVICES"] == "2,3"


class EndedLaunch:
    """A launch that has ended, as the supervisor sees one: an exit status and what its placement says of it."""

    def __init__(self, verdict: str = ""):
        self._verdict = verdict

    def end_text(self, status: int) -> str:
        from xdc.launch import exit_text

        return exit_text(status)

    def verdict(self, status: int) -> str:
        return self._verdict


def concluded(tmp_path, *, ending: dict | None, status: int = 0, verdict: str = "", ranks: int = 1,
              stop_sent: bool = False):
    from workers.runner import Supervisor

    job = SimpleNamespace(out_dir=str(tmp_path), attempt=1)
    supervisor = Supervisor(job, heartbeat=None)
    supervisor.launch, supervisor.ranks, supervisor.ending, supervisor.stop_sent = (
        EndedLaunch(verdict), ranks, ending, stop_sent)
    return supervisor._conclude(status)


def test_how_an_attempt_ended_is_read_from_its_last_event_and_its_placement(tmp_path):
    import signal

    done = {"event": "done", "stopped": False, "record": {"metrics": {"top1": 0.5}}}
    assert concluded(tmp_path, ending=done).record == {"metrics": {"top1": 0.5}}
    warned = concluded(tmp_path, ending={**done, "stopped": True, "signal": "SIGUSR1"})
    assert warned.preempted and not warned.cancelled_outside
    preempted = concluded(tmp_path, ending={**done, "stopped": True, "signal": "SIGTERM"}, verdict="preempted")
    assert preempted.preempted
    scancelled = concluded(tmp_path, ending={**done, "stopped": True, "signal": "SIGTERM"}, verdict="cancelled")
    assert scancelled.cancelled_outside.startswith("stopped from outside the lab by SIGTERM")
    asked = concluded(tmp_path, ending={**done, "stopped": True, "signal": "SIGTERM"}, stop_sent=True)
    assert asked.stopped and not (asked.cancelled_outside or asked.preempted)
    failed = concluded(tmp_path, ending={"event": "failed", "error": "no usable video"}, status=1)
    assert failed.error == "no usable video"
    peers = concluded(tmp_path, ending={"event": "failed", "error": "DistBackendError: closed", "lost_peers": True},
                      status=1, ranks=2)
    assert peers.lost and not peers.error
    assert concluded(tmp_path, ending=None, status=1, ranks=2).lost  # rank 0 gone without a word
    crashed = concluded(tmp_path, ending=None, status=-signal.SIGSEGV)
    assert crashed.error.startswith("the trainer was killed by SIGSEGV before reporting an outcome")
    assert concluded(tmp_path, ending=None, status=1, verdict="lost").lost  # NODE_FAIL
    assert concluded(tmp_path, ending=None, status=1, verdict="cancelled").cancelled_outside
    # the lab asked it to stop and it ended without a checkpoint of that stop: stopped, not failed or lost
    for ranks in (1, 2):
        gone = concluded(tmp_path, ending=None, status=-signal.SIGKILL, ranks=ranks, stop_sent=True)
        assert gone.stopped and not (gone.error or gone.lost)

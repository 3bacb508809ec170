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

"""The attempt runner's own pieces (the whole attempt is exercised through real workers in test_tasks.py)."""

from __future__ import annotations

from types import SimpleNamespace


def test_each_teams_trainer_uses_a_cache_of_its_own(monkeypatch, tmp_path):
    from workers.runner import attempt_env

    monkeypatch.setenv("XDC_CACHE", str(tmp_path / "cache"))
    env = attempt_env(SimpleNamespace(team=SimpleNamespace(slug="team-a")))
    assert env["XDC_CACHE"] == str(tmp_path / "cache" / "teams" / "team-a")

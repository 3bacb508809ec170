"""The attempt runner's own pieces (the whole attempt is exercised through real workers in test_tasks.py)."""

from __future__ import annotations

import signal
from types import SimpleNamespace


def test_each_teams_trainer_uses_a_cache_of_its_own(monkeypatch, tmp_path):
    from workers.runner import attempt_env

    monkeypatch.setenv("XDC_CACHE", str(tmp_path / "cache"))
    env = attempt_env(SimpleNamespace(team=SimpleNamespace(slug="team-a")))
    assert env["XDC_CACHE"] == str(tmp_path / "cache" / "teams" / "team-a")


def test_exit_statuses_read_as_words():
    from xdc.launch import exit_text

    assert exit_text(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert "out of memory" in exit_text(-signal.SIGKILL)
    assert exit_text(3) == "exited with status 3"

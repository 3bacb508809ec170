"""The attempt runner's own pieces (the whole attempt is exercised through real workers in test_tasks.py)."""

from __future__ import annotations


def test_each_teams_jobs_use_a_cache_of_their_own(monkeypatch, tmp_path):
    from workers.runner import team_cache
    from xdc.data.index import default_cache_dir

    monkeypatch.setenv("XDC_CACHE", str(tmp_path / "cache"))
    with team_cache("team-a"):
        assert default_cache_dir() == tmp_path / "cache" / "teams" / "team-a"
    assert default_cache_dir() == tmp_path / "cache"

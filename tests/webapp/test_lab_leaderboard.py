"""The leaderboard on a real database: rows keyed by what sets their numbers, columns by protocol version and split
set, pins and deltas, staleness and its re-evaluation, exports, and the page."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import pytest
from lab_helpers import eval_record, make_folder_dataset, run_to_success, submit_pretrain

from webapp.lab import leaderboard, services
from webapp.lab.models import Job

pytestmark = pytest.mark.django_db


def evaluate(alice, team, dataset, value, *, parent=None, record=None, **cfg):
    base = {"checkpoint": "random", "benchmark": "folder", "data": dataset.path, "protocol": "linear"}
    [job] = services.submit_jobs(alice, team, "evaluate", [{**base, **cfg}], dataset=dataset, parent=parent)
    if value is not None:
        run_to_success(job, record or eval_record(top1=value, split=cfg.get("split", 1), seed=cfg.get("seed", 0)))
    return job


def pretrained(alice, team, dataset, seed=0, variant="xdc", **changes):
    job = submit_pretrain(alice, team, dataset, seed=seed, variant=variant, **changes)
    run_to_success(job)
    return Job.objects.get(pk=job.pk)


def only_column(board):
    [column] = board.columns
    return column


class TestRowsAndColumns:
    def test_seeds_of_one_config_are_one_row_with_mean_std_best_and_n(self, alice, team_a, dataset_a):
        for seed, value in ((1, 0.5), (2, 0.6), (3, 0.7)):
            evaluate(alice, team_a, dataset_a, value, parent=pretrained(alice, team_a, dataset_a, seed))
        board = leaderboard.build(team_a)
        [row] = board.rows
        cell = row.cells[only_column(board)]
        assert cell.n == 3 and cell.mean == pytest.approx(0.6) and cell.std == pytest.approx(0.1)
        assert cell.best == pytest.approx(0.7) and len(row.pretrain_jobs) == 3
        assert row.label == "xdc · synth · K=4 · tiny preset"

    def test_a_changed_key_is_another_row_and_its_label_says_which(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.5, parent=pretrained(alice, team_a, dataset_a, rounds=3))
        evaluate(alice, team_a, dataset_a, 0.4, parent=pretrained(alice, team_a, dataset_a))
        evaluate(alice, team_a, dataset_a, 0.3, parent=pretrained(alice, team_a, dataset_a, cluster__k_video=3,
                                                                     cluster__k_audio=3, cluster__k_joint=3))
        labels = sorted(row.label for row in leaderboard.build(team_a).rows)
        assert labels == ["xdc · synth · K=3 · tiny preset", "xdc · synth · K=4 · tiny preset",
                          "xdc · synth · K=4 · tiny preset, rounds=3"]

    def test_baselines_of_two_widths_are_never_averaged(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.517, width=16)
        evaluate(alice, team_a, dataset_a, 0.683, width=8)
        evaluate(alice, team_a, dataset_a, 0.70, width=8, seed=1)
        board = leaderboard.build(team_a)
        column = only_column(board)
        cells = {row.label: row.cells[column] for row in board.rows}
        assert set(cells) == {"random init · width 16", "random init · width 8"}
        assert cells["random init · width 16"].mean == pytest.approx(0.517)
        assert cells["random init · width 8"].n == 2

    def test_the_preset_sets_a_baselines_width_and_input(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.2, preset="tiny")
        evaluate(alice, team_a, dataset_a, 0.3, preset="small")
        labels = sorted(row.label for row in leaderboard.build(team_a).rows)
        assert labels == ["random init · width 16 · sobel input", "random init · width 8"]

    def test_protocol_versions_and_split_sets_are_columns_of_their_own(self, alice, team_a, dataset_a):
        job = pretrained(alice, team_a, dataset_a)
        for split in (1, 2, 3):
            evaluate(alice, team_a, dataset_a, 0.5, parent=job, split=split)
        other = pretrained(alice, team_a, dataset_a, variant="sdc")
        evaluate(alice, team_a, dataset_a, 0.3, parent=other)
        evaluate(alice, team_a, dataset_a, 0.9, parent=other, seed=4, record=eval_record(top1=0.9, version=2))
        board = leaderboard.build(team_a)
        assert [(c.version, c.splits) for c in board.columns] == [("1", "1"), ("1", "1,2,3"), ("2", "1")]
        sdc = next(row for row in board.rows if row.label.startswith("sdc"))
        assert [sdc.cells[c].mean if c in sdc.cells else None for c in board.columns] == [
            pytest.approx(0.3), None, pytest.approx(0.9)]

    def test_two_folder_datasets_and_a_shuffled_control_are_separate_columns(self, alice, team_a, dataset_a,
                                                                            tmp_path):
        other = services.register_dataset(team=team_a, name="other", layout="folder",
                                           path=str(make_folder_dataset(tmp_path / "other")))
        evaluate(alice, team_a, dataset_a, 0.2)
        evaluate(alice, team_a, other, 0.8)
        evaluate(alice, team_a, dataset_a, 0.1, shuffle_train_labels=True)
        names = [c.name for c in leaderboard.build(team_a).columns]
        assert names == ["folder:other · linear", "folder:synth · linear", "folder:synth · linear (shuffled labels)"]

    def test_pending_evaluations_mark_their_cell(self, alice, team_a, dataset_a):
        submit_pretrain(alice, team_a, dataset_a, evaluations=[
            {"dataset": dataset_a.pk, "protocol": "linear", "split": 1, "preset": "tiny"}])
        evaluate(alice, team_a, dataset_a, None)  # queued
        board = leaderboard.build(team_a)
        pending = {row.kind: [c.pending for c in row.cells.values()] for row in board.rows}
        assert pending == {"pretrained": [1], "baseline": [1]}
        assert {c.name for c in board.columns} == {"folder:synth · linear-tiny", "folder:synth · linear"}

    def test_filters_keep_baselines_and_another_teams_rows_never_show(self, alice, team_a, team_b, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.5, parent=pretrained(alice, team_a, dataset_a, variant="xdc"))
        evaluate(alice, team_a, dataset_a, 0.3, parent=pretrained(alice, team_a, dataset_a, variant="sdc"))
        evaluate(alice, team_a, dataset_a, 0.1)
        assert [r.kind for r in leaderboard.build(team_a, variant="sdc").rows] == ["baseline", "pretrained"]
        assert leaderboard.build(team_b).rows == []

    def test_sorting_by_a_column_puts_the_best_first_and_pages_split_the_rows(self, alice, team_a, dataset_a):
        for seed, value in enumerate((0.2, 0.9, 0.5)):
            evaluate(alice, team_a, dataset_a, value, parent=pretrained(alice, team_a, dataset_a, 0, cluster__k_video=seed + 2))
        column = only_column(leaderboard.build(team_a))
        board = leaderboard.build(team_a, sort=column.key, page_rows=2, page=1)
        assert [r.cells[column].mean for r in board.rows] == [pytest.approx(0.9), pytest.approx(0.5)]
        assert board.pages == 2 and leaderboard.build(team_a, sort=column.key, page_rows=2, page=2).rows[0].cells[
            column].mean == pytest.approx(0.2)
        # Any row can be pinned from any page, not only the rows the page shows.
        assert [key for key, _ in board.pin_choices] == [row.key for row in leaderboard.build(
            team_a, sort=column.key, page_rows=None).rows]
        assert len(board.pin_choices) == 3


class TestPins:
    def test_the_random_baseline_is_pinned_by_default_and_cells_show_their_delta(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25)
        evaluate(alice, team_a, dataset_a, 0.75, parent=pretrained(alice, team_a, dataset_a))
        board = leaderboard.build(team_a)
        column = only_column(board)
        rows = {row.kind: row for row in board.rows}
        assert board.pins[column.key] == rows["baseline"].key
        assert rows["pretrained"].cells[column].delta == pytest.approx(0.5)
        assert rows["baseline"].cells[column].delta is None

    def test_a_team_pins_another_row_and_cannot_pin_a_stranger(self, alice, team_a, team_b, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25)
        evaluate(alice, team_a, dataset_a, 0.75, parent=pretrained(alice, team_a, dataset_a))
        column = only_column(leaderboard.build(team_a))
        ours = next(r for r in leaderboard.build(team_a).rows if r.kind == "pretrained")
        services.pin_baseline(team_a, column=column.key, row=ours.key)
        board = leaderboard.build(team_a)
        baseline = next(r for r in board.rows if r.kind == "baseline")
        assert board.pins[column.key] == ours.key and baseline.cells[column].delta == pytest.approx(-0.5)
        with pytest.raises(services.LabError):
            services.pin_baseline(team_b, column=column.key, row=ours.key)
        team_b.refresh_from_db()
        assert team_b.leaderboard_pins == {}


class TestStaleness:
    @pytest.fixture
    def second_version(self, monkeypatch):
        from xdc.evaluation import protocols

        versions = dict(protocols.PROTOCOLS[("linear", "")])
        versions[2] = versions[1]
        monkeypatch.setitem(protocols.PROTOCOLS, ("linear", ""), versions)
        leaderboard.latest_versions.cache_clear()
        yield
        leaderboard.latest_versions.cache_clear()

    def test_an_older_version_is_stale_and_is_re_evaluated_once(self, alice, team_a, dataset_a, second_version):
        parent = pretrained(alice, team_a, dataset_a)
        for seed in (0, 1):
            evaluate(alice, team_a, dataset_a, 0.5, parent=parent, seed=seed)
        column = only_column(leaderboard.build(team_a))
        assert column.stale and column.latest == 2
        created = services.reevaluate_stale(alice, team_a, column)
        assert len(created) == 2 and all(job.config["version"] == 0 and job.parent_id == parent.pk
                                          for job in created)
        assert {job.config["seed"] for job in created} == {0, 1}
        assert services.reevaluate_stale(alice, team_a, column) == []  # already on their way

    def test_a_current_column_is_not_re_evaluated(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.5)
        column = only_column(leaderboard.build(team_a))
        assert not column.stale
        with pytest.raises(services.LabError):
            services.reevaluate_stale(alice, team_a, column)


class TestExports:
    @pytest.fixture
    def board(self, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25)
        parent = pretrained(alice, team_a, dataset_a)
        for seed, value in ((0, 0.7), (1, 0.8)):
            evaluate(alice, team_a, dataset_a, value, parent=parent, seed=seed)
        return leaderboard.build(team_a, page_rows=None)

    def test_csv_parses_with_measured_rows_then_published_ones(self, board):
        rows = list(csv.reader(io.StringIO(leaderboard.to_csv(board))))
        assert rows[0] == ["checkpoint", "kind", "folder:synth · linear v1 · split 1"]
        assert rows[1] == ["random init · width 64", "baseline", "0.250 (n=1)"]
        assert rows[2][1:] == ["pretrained", "0.750 ± 0.071 (n=2)"]
        published = [row for row in rows if row[1] == "published"]
        assert len(published) == len(leaderboard.references()) and "GDT (IG65M" in published[-1][0]

    def test_markdown_has_one_line_per_row(self, board):
        lines = leaderboard.to_markdown(board).splitlines()
        assert lines[1] == "|---|---|---|" and len(lines) == 2 + 2 + len(leaderboard.references())

    def test_latex_is_a_booktabs_table_that_compiles(self, board, tmp_path):
        tex = leaderboard.to_latex(board)
        lines = tex.splitlines()
        assert lines[0] == r"\begin{tabular}{lc}" and lines[1] == r"\toprule" and lines[-1] == r"\end{tabular}"
        body = [line for line in lines if line.endswith(r"\\")]
        assert all(line.count(" & ") == 1 for line in body)
        assert r"0.750 $\pm$ 0.071 (n=2)" in tex and "#" not in tex.replace(r"\#", "")
        if shutil.which("pdflatex") is None:
            return
        (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex
                                        + "\\end{document}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]

    def test_latex_escapes_what_a_label_may_hold(self):
        assert leaderboard.latex_escape("a_b & 50% #1 ~x") == r"a\_b \& 50\% \#1 \textasciitilde{}x"


class TestThePage:
    def test_it_shows_columns_cells_references_and_exports(self, client_a, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25, width=16)
        evaluate(alice, team_a, dataset_a, 0.5, width=8)
        page = client_a.get("/leaderboard/")
        assert page.status_code == 200
        html = page.content.decode()
        assert html.count('data-testid="leaderboard-row"') == 2 and "random init · width 8" in html
        assert html.count('data-testid="reference-row"') == len(leaderboard.references())
        assert "⏳" not in html
        export = client_a.get("/leaderboard/export.csv")
        assert export["Content-Type"].startswith("text/csv") and "attachment" in export["Content-Disposition"]
        assert "random init · width 16" in export.content.decode()
        assert client_a.get("/leaderboard/export.exe").status_code == 404

    def test_sort_links_are_keyboard_reachable_and_mark_aria_sort(self, client_a, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25)
        column = only_column(leaderboard.build(team_a))
        page = client_a.get("/leaderboard/", {"sort": column.key}).content.decode()
        assert 'aria-sort="descending"' in page and '<a class="sort" href="?sort=' in page

    def test_pin_and_reevaluate_posts_answer_with_a_message_not_an_error(self, client_a, alice, team_a, dataset_a):
        evaluate(alice, team_a, dataset_a, 0.25)
        for url, data in (("/leaderboard/pin/", {"column": "x", "row": "nope"}),
                          ("/leaderboard/reevaluate/", {"column": "no such"}),
                          ("/leaderboard/pin/", {"column": "\x00", "filters": "a=b\r\nSet-Cookie: x"})):
            response = client_a.post(url, data)
            assert response.status_code == 302 and response["Location"].startswith("/leaderboard/?")
            assert "\n" not in response["Location"]

    def test_a_user_of_no_team_and_a_nul_row_get_answers_not_errors(self, client, client_a, alice, team_a,
                                                                    dataset_a, django_user_model):
        evaluate(alice, team_a, dataset_a, 0.25)
        column = only_column(leaderboard.build(team_a))
        assert client_a.post("/leaderboard/pin/", {"column": column.key, "row": "a\x00b"}).status_code == 302
        assert client_a.post("/leaderboard/pin/", {"column": "junk", "row": ""}).status_code == 302
        team_a.refresh_from_db()
        assert team_a.leaderboard_pins == {}  # neither a NUL row nor a column the board lacks is stored
        client.force_login(django_user_model.objects.create_user("loner"))
        for url in ("/leaderboard/pin/", "/leaderboard/reevaluate/"):
            assert client.post(url, {"column": column.key}).status_code == 404

    def test_markdown_escapes_what_a_name_may_hold(self, alice, team_a, tmp_path):
        other = services.register_dataset(team=team_a, name="<b>x|y</b>", layout="folder",
                                           path=str(make_folder_dataset(tmp_path / "odd")))
        evaluate(alice, team_a, other, 0.5)
        text = leaderboard.to_markdown(leaderboard.build(team_a, page_rows=None))
        assert "<b>" not in text and "&lt;b&gt;x\\|y&lt;/b&gt;" in text

    def test_the_jobs_behind_a_row_are_listed(self, client_a, alice, team_a, dataset_a):
        job = evaluate(alice, team_a, dataset_a, 0.25)
        evaluate(alice, team_a, dataset_a, 0.25, width=8)
        page = client_a.get("/jobs/", {"row": job.board_row}).content.decode()
        assert page.count('data-testid="job-row"') == 1 and "random init · width 64" in page
        empty = client_a.get("/jobs/", {"row": "nothing"}).content.decode()
        assert "No jobs match these filters" in empty

    def test_a_cells_n_link_lists_exactly_the_jobs_it_counts(self, client_a, alice, team_a, dataset_a):
        import html
        import re

        job = pretrained(alice, team_a, dataset_a)
        evaluate(alice, team_a, dataset_a, 0.3, parent=job)
        evaluate(alice, team_a, dataset_a, 0.4, parent=job, seed=1)
        evaluate(alice, team_a, dataset_a, 0.9, parent=job, seed=4, record=eval_record(top1=0.9, version=2))
        evaluate(alice, team_a, dataset_a, None, parent=job, seed=5)  # queued: pending, not counted
        page = client_a.get("/leaderboard/").content.decode()
        links = dict((int(n), html.unescape(url)) for url, n in re.findall(r'href="(/jobs/\?team=[^"]+)">n=(\d+)<', page))
        assert set(links) == {1, 2}  # version 1 (two seeds) and version 2 (one) of the same column name
        assert all(url.startswith(f"/jobs/?team={team_a.slug}&row=") for url in links.values())
        for n, url in links.items():
            listed = client_a.get(url).content.decode()
            assert listed.count('data-testid="job-row"') == n, url
        assert " v2 in row" in client_a.get(links[1]).content.decode()

"""An evaluation's per-class accuracy and confusion matrix, drawn as SVG from its record, on its job page."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from lab_helpers import eval_record, run_to_success, submit_pretrain

from webapp.lab import figures, services

SVG = "{http://www.w3.org/2000/svg}"


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_per_class_bars_are_worst_first_and_as_wide_as_the_accuracy():
    root = parsed(figures.per_class_svg({"b<&>": 0.5, "a": 1.0, "c": 0.0}))
    labels = [t.text for t in root.iter(f"{SVG}text")][1::2]
    assert labels[:3] == ["c", "b<&>", "a"]  # escaped in the markup, read back whole
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    widths = [float(r.get("width")) for r in bars]
    assert widths[0] == 0 and widths[2] == pytest.approx(2 * widths[1])


def test_the_confusion_matrix_shades_cells_by_their_share_of_the_row():
    root = parsed(figures.confusion_svg([[3, 1], [0, 4]], ["cat", "dog"]))
    cells = {r.find(f"{SVG}title").text: float(r.get("fill-opacity")) for r in root.iter(f"{SVG}rect")}
    assert cells["true cat, predicted cat: 3"] == pytest.approx(0.15 + 0.85 * 0.75, abs=0.01)
    assert cells["true dog, predicted cat: 0"] == pytest.approx(0.15)
    assert figures.top_confusions([[3, 1], [0, 4]], ["cat", "dog"]) == [("cat", "dog", 1)]


def test_a_matrix_too_large_or_malformed_draws_nothing():
    assert figures.confusion_svg([[1] * 61] * 61, []) == ""
    assert figures.confusion_svg([[1, 2], [3]], ["a", "b"]) == ""
    assert figures.result_figures({"confusion": "x", "per_class": []}) == {}


@pytest.mark.django_db
def test_the_job_pages_show_figures_child_results_and_why_a_job_waits(client_a, alice, team_a, dataset_a):
    parent = submit_pretrain(alice, team_a, dataset_a)
    run_to_success(parent)
    [child] = services.submit_jobs(alice, team_a, "evaluate", [
        {"checkpoint": "random", "benchmark": "folder", "data": dataset_a.path, "protocol": "linear"}],
        dataset=dataset_a, parent=parent)
    run_to_success(child, eval_record(top1=0.625, per_class={"class0": 0.5, "class1": 0.75},
                                      confusion=[[2, 2], [1, 3]], dataset={"classes": ["class0", "class1"]}))
    page = client_a.get(f"/jobs/{child.pk}/").content.decode()
    assert 'data-testid="per-class"' in page and 'data-testid="confusion"' in page
    parent_page = client_a.get(f"/jobs/{parent.pk}/").content.decode()
    assert "top1 <strong>0.625</strong>" in parent_page
    waiting = submit_pretrain(alice, team_a, dataset_a, seed=3)
    assert "0 jobs ahead of it on queue" in client_a.get(f"/jobs/{waiting.pk}/").content.decode()

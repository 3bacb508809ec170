"""The comparison's report (the comparison itself is a benchmark, `make compare`) and its refusals."""

import pytest

from xdc.compare import Run, report, run_comparison
from xdc.errors import ConfigError


def run(encoder, seed, linear, svm, **diagnostics):
    return Run("spoken-digits", encoder, seed, linear, svm, 60.0, diagnostics)


def test_the_report_gives_mean_std_gap_closed_and_what_the_clusters_follow():
    runs = [run("xdc", 0, 0.5, 0.6, nmi_labels_video=0.3, nmi_factor_ink_video=0.1, nmi_factor_speaker_video=0.2,
                nmi_factor_background_video=0.05, nmi_labels_audio=0.4, nmi_video_audio=0.9),
            run("xdc", 1, 0.7, 0.8, nmi_labels_video=0.5, nmi_factor_ink_video=0.3, nmi_factor_speaker_video=0.2,
                nmi_factor_background_video=0.05, nmi_labels_audio=0.2),
            run("supervised", 0, 0.9, 0.9), run("random", 0, 0.1, 0.5), run("random", 1, 0.1, 0.5)]
    text = report(runs)
    row = next(line for line in text.splitlines() if line.startswith("| xdc "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["xdc", "2", "0.600 ± 0.141", "62 %", "0.700 ± 0.141"]  # (0.6 - 0.1) / (0.9 - 0.1)
    assert cells[5] == "class 0.40, ink 0.20, speaker 0.20"  # the two factors followed most, means over seeds
    assert cells[6] == "class 0.30"
    assert "| random | 2 | 0.100 ± 0.000 | 0 % |" in text


@pytest.mark.parametrize("kwargs,message", [
    ({"sets": ["kinetics"]}, "unknown set 'kinetics'"),
    ({"variants": ["simclr"]}, "unknown variant 'simclr'"),
    ({"seeds": []}, "at least one seed"),
    ({"preset": "huge\x00"}, "unknown preset"),
])
def test_it_refuses_unknown_sets_variants_and_no_seeds_before_doing_anything(tmp_path, kwargs, message):
    args = {"sets": ["synthetic"], "variants": ["xdc"], "seeds": [0], **kwargs}
    with pytest.raises(ConfigError, match=message):
        run_comparison(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_a_rerun_reads_finished_runs_back_with_their_wall_time_instead_of_redoing_them(tmp_path):
    import json

    folder = tmp_path / "out" / "synthetic"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "labels.csv").write_text("path,label\n")  # nothing here could be pretrained on
    for encoder, linear in (("xdc", 0.7), ("random", 0.2)):
        (folder / "measured").mkdir(exist_ok=True)
        (folder / "measured" / f"{encoder}-seed0.json").write_text(json.dumps({
            "budget": {"preset": "small", "overrides": []},
            "run": run(encoder, 0, linear, 0.9).__dict__ | {"set": "synthetic", "seconds": 300.0}}))
    report_path = run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0])
    assert "| xdc | 1 | 0.700 |" in report_path.read_text() and "| 5.0 |" in report_path.read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["encoder"], r["seconds"]) for r in results] == [("xdc", 300.0), ("random", 300.0)]
    # Another budget in the same folder is refused, not answered with these numbers.
    with pytest.raises(ConfigError, match="give the comparison another --out"):
        run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0],
                       overrides=["cluster.k_video=8"])

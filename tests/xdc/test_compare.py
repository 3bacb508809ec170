"""The comparison's report (the comparison itself is a benchmark, `make compare`) and its refusals."""

import json

import pytest

from xdc.compare import Run, platform, report, run_comparison, set_digest
from xdc.errors import ConfigError

CPU = "cpu, 2 threads, fp32"


def run(encoder, seed, linear, svm, where=CPU, data="a1b2c3", **diagnostics):
    return Run("spoken-digits", encoder, seed, linear, svm, 60.0, diagnostics, where, data)


def test_the_report_gives_mean_std_gap_closed_and_what_the_clusters_follow():
    runs = [run("xdc", 0, 0.5, 0.6, nmi_labels_video=0.3, nmi_factor_ink_video=0.1, nmi_factor_speaker_video=0.2,
                nmi_factor_background_video=0.05, nmi_labels_audio=0.4, nmi_video_audio=0.9),
            run("xdc", 1, 0.7, 0.8, nmi_labels_video=0.5, nmi_factor_ink_video=0.3, nmi_factor_speaker_video=0.2,
                nmi_factor_background_video=0.05, nmi_labels_audio=0.2, fit_video_from_audio=0.4,
                fit_audio_from_video=0.9, ceiling_video_from_audio=0.3),
            run("supervised", 0, 0.9, 0.9), run("random", 0, 0.1, 0.5), run("random", 1, 0.1, 0.5)]
    text = report(runs)
    row = next(line for line in text.splitlines() if line.startswith("| xdc "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["xdc", "2", "0.600 ± 0.141", "62 %", "0.700 ± 0.141"]  # (0.6 - 0.1) / (0.9 - 0.1)
    assert cells[5] == "class 0.40, ink 0.20, speaker 0.20"  # the two factors followed most, means over seeds
    assert cells[6] == "class 0.30"
    # Each head's fit of its targets, last round, and what a class recogniser would fit where that was recorded.
    assert cells[7] == "audio←video 0.90, video←audio 0.40 of 0.30"
    assert cells[9] == CPU
    assert "| random | 2 | 0.100 ± 0.000 | 0 % |" in text
    assert "generations" not in text


def test_the_report_says_when_a_row_pools_platforms_or_generations_of_a_set():
    runs = [run("xdc", 0, 0.5, 0.6), run("xdc", 1, 0.7, 0.8, where="NVIDIA H200, bf16"),
            run("xdc", 2, 0.6, 0.7, data="ffff00"), run("random", 0, 0.1, 0.5, where="")]
    text = report(runs)
    xdc_row = next(line for line in text.splitlines() if line.startswith("| xdc "))
    assert xdc_row.endswith(f"| {CPU} (2); NVIDIA H200, bf16 (1) |")
    assert next(line for line in text.splitlines() if line.startswith("| random ")).endswith("| not recorded |")
    assert "**Pooled over 2 generations of this set** (a1b2c3 (3); ffff00 (1))" in text


def test_the_platform_names_the_cpu_threads_it_ran_with():
    import torch

    assert platform("cpu", "auto") == f"cpu, {torch.get_num_threads()} threads, fp32"


def test_the_set_digest_follows_every_file_name_and_byte(tmp_path):
    def make(folder, files):
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return set_digest(folder)

    files = {"labels.csv": b"path,label\n", "videos/a.mp4": b"\x00" * 3000, "ucf101/b.avi": b"xyz"}
    first = make(tmp_path / "one", files)
    assert make(tmp_path / "two", dict(reversed(files.items()))) == first  # the order files were written in
    assert make(tmp_path / "three", files | {"ucf101/b.avi": b"xyZ"}) != first
    assert make(tmp_path / "four", {"labels.csv": files["labels.csv"], "videos/a2.mp4": files["videos/a.mp4"],
                                    "ucf101/b.avi": b"xyz"}) != first


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


def measured(tmp_path, seeds=(0,)):
    """A comparison folder whose runs are all measured already (its data could not be pretrained on)."""
    folder = tmp_path / "out" / "synthetic"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "labels.csv").write_text("path,label\n")
    (folder / "measured").mkdir()
    for seed in seeds:
        for encoder, linear in (("xdc", 0.7), ("random", 0.2)):
            (folder / "measured" / f"{encoder}-seed{seed}.json").write_text(json.dumps({
                "budget": {"preset": "small", "overrides": []},
                "run": run(encoder, seed, linear + seed / 100, 0.9).__dict__ | {"set": "synthetic", "seconds": 300.0}}))


def test_a_rerun_reads_finished_runs_back_with_their_wall_time_instead_of_redoing_them(tmp_path):
    measured(tmp_path)
    report_path = run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0])
    assert "| xdc | 1 | 0.700 |" in report_path.read_text() and "| 5.0 |" in report_path.read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["encoder"], r["seconds"]) for r in results] == [("xdc", 300.0), ("random", 300.0)]
    # Another budget in the same folder is refused, not answered with these numbers.
    with pytest.raises(ConfigError, match="give the comparison another --out"):
        run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0],
                       overrides=["cluster.k_video=8"])


def test_the_report_holds_every_unit_measured_into_the_folder_under_the_same_budget(tmp_path):
    measured(tmp_path, seeds=(0, 1, 2))
    other = tmp_path / "out" / "synthetic" / "measured" / "sdc-seed0.json"
    other.write_text(json.dumps({"budget": {"preset": "small", "overrides": ["rounds=2"]},
                                 "run": run("sdc", 0, 0.3, 0.9).__dict__ | {"set": "synthetic"}}))
    run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[1])  # seed 1 only, this time
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # This run's seed first, then seeds 0 and 2 as measured before; the unit of another budget is left out.
    assert [(r["encoder"], r["seed"]) for r in results] == [("xdc", 1), ("random", 1), ("xdc", 0), ("random", 0),
                                                            ("xdc", 2), ("random", 2)]
    assert "| xdc | 3 | 0.710 ± 0.010 |" in (tmp_path / "out" / "report.md").read_text()
    assert "sdc" not in (tmp_path / "out" / "report.md").read_text()


BAD_UNITS = ["{not json", '{"budget": {}}', '{"budget": {}, "run": {"set": "synthetic"}}', "[]",
             json.dumps({"budget": {}, "run": run("sdc", 0, "0.3", 0.9).__dict__}),
             json.dumps({"budget": {}, "run": run("sdc", 0, 0.3, 0.9).__dict__ | {"diagnostics": []}}),
             json.dumps({"budget": {}, "run": run("sdc", 0, float("nan"), 0.9).__dict__}),
             json.dumps({"budget": {}, "run": run("sdc", 0, 0.3, 0.9).__dict__ | {"seed": True}})]


@pytest.mark.parametrize("text", BAD_UNITS)
def test_a_file_in_the_folder_that_is_no_measured_unit_is_refused_by_name(tmp_path, text):
    measured(tmp_path)
    (tmp_path / "out" / "synthetic" / "measured" / "sdc-seed0.json").write_text(text)
    with pytest.raises(ConfigError, match="sdc-seed0.json is not a unit this comparison measured"):
        run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0])


def test_runs_measured_in_parallel_are_reported_in_the_sequential_order(tmp_path, monkeypatch):
    import os

    measured(tmp_path, seeds=(0, 1, 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0, 1, 2], jobs=3)
    assert os.environ["OMP_NUM_THREADS"] == "7"  # the children's share of threads does not stay in the caller
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["encoder"], r["seed"]) for r in results] == [(e, s) for s in (0, 1, 2) for e in ("xdc", "random")]
    assert "| xdc | 3 | 0.710 ± 0.010 |" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("jobs", [0, 65])
def test_it_refuses_a_number_of_jobs_out_of_bounds(tmp_path, jobs):
    with pytest.raises(ConfigError, match="--jobs must be between 1 and 64"):
        run_comparison(tmp_path / "out", sets=["synthetic"], variants=["xdc"], seeds=[0], jobs=jobs)
    assert not (tmp_path / "out").exists()

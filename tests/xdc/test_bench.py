"""The benchmark suite runs end to end on a CPU and records every measurement; no speed is asserted."""

from __future__ import annotations

import json
import math

import pytest

from xdc.bench import bf16_peak_flops, run_benchmarks
from xdc.errors import ConfigError

PIPELINE = {f"data.{name}.w{workers}" for name in ("clip_pipeline", "store_pipeline", "clips_per_decode4")
            for workers in (0, 2)}
CPU_RESULTS = {
    "train.plain_step", "train.xdc_step", "train.gflop_per_clip", "train.xdc_end_to_end",
    "train.xdc_end_to_end_store", "train.xdc_end_to_end_store_w0", "data.loader_vs_step.source", "data.loader_vs_step.store",
    "memory.host_peak_rss", "memory.host_peak_rss_with_workers", "train.gallery_overhead", "ddp.one_rank",
    "ddp.two_ranks",
    "data.raw_decode.w0", "data.raw_decode.w2", *PIPELINE,
    "cluster.faiss_kmeans", "cluster.sklearn_kmeans", "cluster.nmi_faiss_sklearn",
}  # no train.mfu: a CPU has no bf16 tensor-core peak to measure against
RATIOS = {"train.xdc_step", "train.xdc_end_to_end", "train.xdc_end_to_end_store", "train.xdc_end_to_end_store_w0",
          "ddp.two_ranks", *PIPELINE,
          "cluster.faiss_kmeans"}


@pytest.mark.slow
def test_it_writes_every_measurement_to_bench_json_and_the_table(tmp_path, capsys):
    returned = run_benchmarks(tmp_path, device="cpu", tiny=True)

    saved = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["name"]: row for row in saved["results"]}
    assert set(rows) == CPU_RESULTS
    assert saved["results"] == returned["results"]
    for row in saved["results"]:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    assert {name for name, row in rows.items() if "ratio" in row} == RATIOS
    assert all(math.isfinite(rows[name]["ratio"]) and rows[name]["ratio"] > 0 for name in RATIOS)
    assert rows["cluster.nmi_faiss_sklearn"]["value"] > 0.5  # both k-means find the same mixture
    assert "R2Plus1D18" in rows["train.plain_step"]["notes"]  # says which reference network ran
    assert "all-reduce" in rows["ddp.two_ranks"]["notes"] and "gloo" in rows["ddp.one_rank"]["notes"]
    machine = saved["machine"]
    assert machine["device"] == "cpu" and machine["cpu_count"] >= 1 and machine["torch"]
    table = capsys.readouterr().out
    assert all(name in table for name in CPU_RESULTS)


def test_it_refuses_an_unknown_device_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        run_benchmarks(tmp_path / "out", device="tpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.1),
                                          ("NVIDIA A10", 125.0), ("NVIDIA GeForce GTX 1080", None)])
def test_mfu_divides_by_the_peak_of_the_device_named(name, tflops):
    assert bf16_peak_flops(name) == (tflops * 1e12 if tflops else None)


def test_the_gallery_is_timed_from_the_first_logging_of_its_rounds_diagnostics(tmp_path, monkeypatch):
    import xdc.bench
    from xdc.bench import ClockedTracker, gallery_share

    marks = iter(range(100))
    monkeypatch.setattr(xdc.bench.time, "perf_counter", lambda: float(next(marks)))
    (summary := tmp_path / "round_000.json").write_text("{}")
    (gallery := tmp_path / "gallery.json").write_text("{}")
    tracker = ClockedTracker()
    tracker.log_metrics({"train/round": 0}, step=0)  # t=0
    tracker.log_artifact(summary, "diagnostics")  # t=1: the gallery starts
    tracker.log_artifact(gallery, "gallery/round_000")  # t=2: and ends
    tracker.log_artifact(summary, "diagnostics")  # t=3: again, with the heads' fit
    tracker.finish("FINISHED")  # t=4
    assert gallery_share(tracker.clock, 1) == (0.25, [0.25])

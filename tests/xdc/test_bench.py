"""The benchmark suite runs end to end on a CPU and records every measurement; no speed is asserted."""

from __future__ import annotations

import json
import math

import pytest

from xdc.bench import run_benchmarks
from xdc.errors import ConfigError

CPU_RESULTS = {
    "train.plain_step", "train.xdc_step", "train.xdc_end_to_end",
    "memory.host_peak_rss", "memory.host_peak_rss_with_workers", "ddp.one_rank", "ddp.two_ranks",
    "data.raw_decode.w0", "data.clip_pipeline.w0", "data.raw_decode.w2", "data.clip_pipeline.w2",
    "cluster.faiss_kmeans", "cluster.sklearn_kmeans", "cluster.nmi_faiss_sklearn",
}
RATIOS = {"train.xdc_step", "train.xdc_end_to_end", "ddp.two_ranks", "data.clip_pipeline.w0",
          "data.clip_pipeline.w2", "cluster.faiss_kmeans"}


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

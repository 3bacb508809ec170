"""`xdc compare`: every variant under the same budget on every set, measured downstream, side by side.

For each set (the generated smoke-test set and the real-material sets of xdc.data.material): generate it once,
pretrain each variant with each seed on its UCF101 split-1 training videos (`--preset small` unless told
otherwise), then measure every encoder, random init of the same architecture included, with the protocols of the same
preset (whose inputs are the pretraining's): video linear probe on the UCF101 split 1, audio SVM on the ESC-50
fold 1. The report gives mean ± std over seeds, the
share of the random → supervised gap each variant closes, and the last round's cluster diagnostics (NMI of the
video, audio and joint clusters with the class and with each known nuisance), so a number comes with its why.
Each unit records where it ran (CPU threads or GPU and precision) and a digest of the set's files, and the report
says when it pools units of different platforms or of different generations of a set: such numbers differ by
more than seeds do, so a grid finished on another machine is labelled, not silently averaged.

Everything is resumable: a finished pretraining or evaluation is read back, not redone. A benchmark, not a test.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from xdc.config import load_config
from xdc.data.material import make_material_set
from xdc.data.synthetic import make_synthetic
from xdc.errors import ConfigError
from xdc.report import followed, head_fit
from xdc.tracking import NullTracker

SETS: dict[str, Callable[[Path, int], object]] = {
    "synthetic": lambda out, videos: make_synthetic(out, videos=videos, seed=0),
    "spoken-digits": lambda out, videos: make_material_set("spoken-digits", out, videos=videos, seed=0),
    "instrument-glyphs": lambda out, videos: make_material_set("instrument-glyphs", out, videos=videos, seed=0),
}
VARIANTS = ("xdc", "mdc", "cdc", "sdc", "supervised")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PROBES = {"linear": ("ucf101", "ucf101"), "svm": ("esc50", "esc50")}  # protocol -> (benchmark, folder)


@dataclass
class Run:
    set: str
    encoder: str  # a variant, or "random"
    seed: int
    linear: float
    svm: float
    seconds: float
    diagnostics: dict[str, float]
    platform: str = ""  # where it ran: "cpu, 2 threads, fp32" or "<GPU name>, bf16" ("" for units measured before)
    data: str = ""  # digest of the set's files it was measured on


def run_comparison(out: Path, *, sets: list[str], variants: list[str], seeds: list[int], preset: str = "small",
                   videos: int = 480, overrides: list[str] | None = None, jobs: int = 1,
                   log: Callable[[str], None] = print) -> Path:
    """Run (or resume) the comparison under `out` and write out/report.md and out/results.json; returns the report.

    `jobs` > 1 measures that many (set, encoder, seed) units at once, each in its own process with an equal share of
    the CPU threads (a machine with many cores, or a GPU that one small run leaves mostly idle); the report is the
    same, in the same order, as a sequential run's."""
    _check(sets, variants, seeds, preset)
    if not 1 <= jobs <= 64:
        raise ConfigError(f"--jobs must be between 1 and 64, got {jobs}")
    digests = {}
    for name in sets:
        if not (out / name / "data" / "labels.csv").exists():
            log(f"{name}: generating {videos} videos")
            SETS[name](out / name / "data", videos)
        digests[name] = set_digest(out / name / "data")
    # Seed by seed across the sets, so a comparison stopped early still has every set at its first seeds.
    units = [(out / name, out / name / "data", digests[name], name, variant, seed, preset, overrides or [])
             for seed in seeds for name in sets for variant in [*variants, "random"]]
    # The report also holds what earlier runs measured into this folder under the same budget (other seeds,
    # variants or sets), so a grid measured piece by piece reads as one.
    earlier = _measured_before(out, {"preset": preset, "overrides": overrides or []},
                               {(unit[3], unit[4], unit[5]) for unit in units})
    if jobs == 1:
        runs: list[Run] = []
        for unit in units:
            runs.append(_measure(*unit, log))
            _write(out, runs + earlier)
        return out / "report.md"
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    done: dict[int, Run] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch or CUDA state in the children
    # The children read their thread counts (torch, faiss's OpenMP, BLAS) from the environment they start with.
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, threads))
    try:
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(_measure, *unit, print): index for index, unit in enumerate(units)}
            for future in as_completed(futures):
                done[futures[future]] = future.result()  # a failed unit raises here, after the others started
                _write(out, [done[index] for index in sorted(done)] + earlier)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return out / "report.md"


def _measured_before(out: Path, budget: dict, skip: set[tuple[str, str, int]]) -> list[Run]:
    """The units measured into `out` under `budget` other than the (set, encoder, seed) in `skip`, seed by seed."""
    found = []
    for path in sorted(out.glob("*/measured/*.json")):
        saved_budget, run = _read_unit(path)
        if saved_budget == budget and (run.set, run.encoder, run.seed) not in skip:
            found.append(run)
    order = {encoder: index for index, encoder in enumerate([*VARIANTS, "random"])}
    return sorted(found, key=lambda run: (run.seed, run.set, order.get(run.encoder, len(order))))


def _read_unit(path: Path) -> tuple[dict, Run]:
    """A measured unit's budget and result, as `_measure` wrote them; anything else is refused by name."""
    try:
        saved = json.loads(path.read_text())
        run = Run(**saved["run"])
        numbers = (run.linear, run.svm, run.seconds, *run.diagnostics.values())
        if not (type(run.seed) is int and all(type(n) in (int, float) and math.isfinite(n) for n in numbers)
                and all(isinstance(text, str) for text in (run.set, run.encoder, run.platform, run.data))):
            raise TypeError("a field of the wrong type, or a number that is not finite")
        return saved["budget"], run
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path} is not a unit this comparison measured ({type(exc).__name__}): move it out of "
                          "the folder or give the comparison another --out") from None


def _check(sets: list[str], variants: list[str], seeds: list[int], preset: str) -> None:
    from xdc.config import PRESETS as BUDGETS
    from xdc.evaluation import PRESETS as PROTOCOL_PRESETS

    if preset not in BUDGETS or preset not in PROTOCOL_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; a comparison runs under one of "
                          f"{', '.join(p for p in BUDGETS if p in PROTOCOL_PRESETS)}")
    for name in sets:
        if name not in SETS:
            raise ConfigError(f"unknown set {name!r}; known: {', '.join(SETS)}")
    for variant in variants:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if not seeds:
        raise ConfigError("give at least one seed")


def set_digest(data: Path) -> str:
    """A short digest of every file of a generated set (names and bytes): two machines whose renderers or libraries
    differ generate different sets from the same seed, and their numbers are not one experiment's."""
    digest = hashlib.sha256()
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(data)).encode() + b"\0")
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def platform(device_name: str, precision: str) -> str:
    """Where a unit runs, as the report names it: the kernels, thread count and precision all move the numbers."""
    import torch

    from xdc.train import resolve_device, uses_bf16

    device = resolve_device(device_name)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {'bf16' if uses_bf16(device, precision) else 'fp32'}"
    return f"cpu, {torch.get_num_threads()} threads, fp32"


def _measure(folder: Path, data: Path, data_digest: str, name: str, encoder: str, seed: int, preset: str,
             overrides: list[str], log: Callable[[str], None]) -> Run:
    from xdc.train import pretrain

    done = folder / "measured" / f"{encoder}-seed{seed}.json"  # the unit a rerun reads back, wall time included
    budget = {"preset": preset, "overrides": overrides}
    if done.is_file():
        saved_budget, run = _read_unit(done)
        if saved_budget != budget:
            raise ConfigError(f"{done} was measured with {saved_budget}, not {budget}: give the comparison "
                              "another --out")
        return run
    started = time.monotonic()
    cfg = load_config(preset=preset, overrides=[f"data.path={data / 'ucf101'}", "data.layout=ucf101",
                                                f"seed={seed}", *overrides,
                                                f"variant={'xdc' if encoder == 'random' else encoder}"])
    diagnostics: dict[str, float] = {}
    if encoder == "random":
        checkpoint = "random"
    else:
        run_dir = folder / f"{encoder}-seed{seed}"
        log(f"{name}: pretraining {encoder}, seed {seed}")
        result = pretrain(cfg, NullTracker(), out_dir=run_dir)
        checkpoint = str(result.final_checkpoint)
        diagnostics = _last_round(run_dir)
    scores = {}
    for protocol, (benchmark, tree) in PROBES.items():
        scores[protocol] = _evaluate(checkpoint, benchmark, data / tree, protocol, preset, seed,
                                     cfg.model.video_width, folder / "eval" / f"{encoder}-seed{seed}-{protocol}")
    run = Run(name, encoder, seed, scores["linear"], scores["svm"], round(time.monotonic() - started, 1),
              diagnostics, platform(cfg.device, cfg.precision), data_digest)
    log(f"{name}: {encoder} seed {seed}: linear {run.linear:.3f}, svm {run.svm:.3f} ({run.seconds:.0f} s)")
    done.parent.mkdir(parents=True, exist_ok=True)
    partial = done.with_suffix(".partial")
    partial.write_text(json.dumps({"budget": budget, "run": run.__dict__}))
    partial.replace(done)  # a rerun never reads half a file
    return run


def _evaluate(checkpoint: str, benchmark: str, data: Path, protocol: str, preset: str, seed: int, width: int,
              out: Path) -> float:
    from xdc.evaluation import EvalConfig, evaluate

    done = out / "result.json"
    if done.is_file():
        return float(json.loads(done.read_text())["metrics"]["top1"])
    raw = {"checkpoint": checkpoint, "benchmark": benchmark, "data": str(data), "split": 1, "protocol": protocol,
           "preset": preset, "seed": seed}
    if checkpoint == "random":
        raw["width"] = width
    result = evaluate(EvalConfig.from_dict(raw), NullTracker(), out_dir=out)
    return float(result.record["metrics"]["top1"])


def _last_round(run_dir: Path) -> dict[str, float]:
    rounds = sorted((run_dir / "diagnostics").glob("round_*.json"))
    return json.loads(rounds[-1].read_text()) if rounds else {}


# --------------------------------------------------------------------------------------------------- the report


def _write(out: Path, runs: list[Run]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([run.__dict__ for run in runs], indent=1))
    (out / "report.md").write_text(report(runs))


def report(runs: list[Run]) -> str:
    """Markdown: per set, a row per encoder with mean ± std over seeds, the gap closed, what clusters follow and
    how well each head fits its targets."""
    lines = ["# XDC Lab comparison", ""]
    for name in dict.fromkeys(run.set for run in runs):
        mine = [run for run in runs if run.set == name]
        lines += [f"## {name}", ""]
        generations = _tally(run.data for run in mine)
        if len(generations) > 1:
            lines += [f"**Pooled over {len(generations)} generations of this set** ({_counted(generations)}): their "
                      "rows mix numbers measured on different files.", ""]
        lines += ["| encoder | seeds | video linear top-1 | gap closed | audio SVM top-1 | "
                  "video clusters follow (NMI) | audio clusters follow (NMI) | heads fit their targets | minutes | "
                  "ran on |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        random_linear = _mean([r.linear for r in mine if r.encoder == "random"])
        supervised_linear = _mean([r.linear for r in mine if r.encoder == "supervised"])
        for encoder in dict.fromkeys(run.encoder for run in mine):
            group = [run for run in mine if run.encoder == encoder]
            linear = [r.linear for r in group]
            gap = ""
            if random_linear is not None and supervised_linear is not None and supervised_linear > random_linear:
                gap = f"{100 * (_mean(linear) - random_linear) / (supervised_linear - random_linear):.0f} %"
            lines.append(f"| {encoder} | {len(group)} | {_mean_std(linear)} | {gap} | "
                         f"{_mean_std([r.svm for r in group])} | {_follows(group, 'video')} | "
                         f"{_follows(group, 'audio')} | {_fits(group)} | {sum(r.seconds for r in group) / 60:.1f} | "
                         f"{_counted(_tally(r.platform for r in group))} |")
        lines.append("")
    return "\n".join(lines)


def _follows(group: list[Run], space: str) -> str:
    """The labels' NMI and the two factors the clusters follow most, averaged over the group's seeds."""
    values: dict[str, list[float]] = {}
    for run in group:
        for key, value in followed(run.diagnostics, space).items():
            values.setdefault(key, []).append(value)
    if not values:
        return ""
    means = {key: statistics.fmean(v) for key, v in values.items()}
    labels = means.pop("labels", None)
    top = sorted(means.items(), key=lambda item: -item[1])[:2]
    parts = ([f"class {labels:.2f}"] if labels is not None else []) + [f"{k} {v:.2f}" for k, v in top]
    return ", ".join(parts)


def _fits(group: list[Run]) -> str:
    """Each head's training top-1 on its targets over the last round's last epoch, and what a perfect class
    recogniser would score on them ('video←audio 0.17 of 0.30'), averaged over the group's seeds: whether an encoder
    could follow its teacher's clusters at all, and whether by the class or by something else."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in group:
        for key, value in run.diagnostics.items():
            kind, _, head = key.partition("_")
            if kind in ("fit", "ceiling") and head:
                values.setdefault(head, {}).setdefault(kind, []).append(value)
    return ", ".join(head_fit(head, statistics.fmean(v["fit"]), _mean(v.get("ceiling", [])))
                     for head, v in sorted(values.items()) if "fit" in v)


def _tally(values: Iterable[str]) -> Counter[str]:
    return Counter(value or "not recorded" for value in values)


def _counted(counts: Counter[str]) -> str:
    """'a' when every unit says a, else 'a (2); b (1)': a group measured in more than one place says so."""
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{value} ({count})" for value, count in counts.items())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"

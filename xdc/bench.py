"""Benchmarks of the training step, the end-to-end trainer, the clip pipeline and the clustering (`xdc bench`).

These are measurements, not tests: nothing here asserts a speed. `run_benchmarks` prints one table and writes
`out/bench.json` ({"machine": ..., "results": [{"name", "value", "unit", "ratio"?, "notes"?}]}). Its media come
from `make_synthetic`, generated once under `out/data/<spec>` and reused by later runs.

What is compared with what, and why:

- Training step (`train.plain_step`, `train.xdc_step`): the model step only, so the two loops differ in nothing but
  their step code. Both start every step from the same real clips held in host memory (pinned on CUDA), in the form
  each loop's data pipeline hands over: float32, already normalised, for the plain loop (torchvision-reference
  style); uint8 for ours (normalised on the device, a quarter of the bytes to move). The plain loop is the
  textbook one: video encoder + audio encoder, each with a linear head, fp32 eager, SGD, `loss.backward();
  opt.step()`. At width 64 (GPU sizes) its encoders are torchvision's `r2plus1d_18(num_classes=K)` and
  `resnet18(num_classes=K)` with a 1-channel stem; at the narrower CPU sizes torchvision has no such model, so
  they are xdc's `R2Plus1D18` / `AudioResNet18` at the same width plus a `Linear` (the `notes` say which). Ours is
  the trainer's own code path, not a copy: a `_Pretraining` is set up with its own `_load_data` and `_build`
  (model, channels-last on CUDA, optimizer, scheduler) and `_train_step` is called as the epoch loop calls it
  (`normalize_video`, bf16 autocast on CUDA, `variant_loss`, scheduler step). Neither loop reads the loss back per
  step; warm-up steps are excluded, CUDA is synchronised around every timed block, and the two loops alternate
  over several blocks (median reported) so a change in machine load hits both alike.
- FLOPs and compile (`train.gflop_per_clip`, `train.mfu`, `train.xdc_step_compiled`): forward + backward FLOPs of
  one clip through the trainer's step, counted by `torch.utils.flop_counter`; on CUDA, model FLOPs utilisation =
  FLOPs per clip x `train.xdc_step` / the device's dense bf16 peak (a table of data-sheet peaks; no row for a GPU it
  does not know), and the same step with `compile=true` (torch.compile of both encoders) timed beside the others.
- End to end (`train.xdc_end_to_end`, `train.xdc_end_to_end_store`, `..._store_w0`): a real `pretrain()` on the
  generated set, the same on its prepared store (`xdc prepare`, frames at the clips' short side), and on the store
  read in the trainer's own process (`data.num_workers=0`: on a CPU the loader's processes take cores from the step), read back from the trainer's own
  `train/epoch_clips_per_s` metric (clips trained over the epoch's wall time, the loader's start-up included; median
  over epochs). Its ratio is to `train.xdc_step`: the share of the model-step ceiling that survives decoding,
  feature extraction and clustering being outside. (The per-window `train/clips_per_s` is not used: once the
  loader's workers have prefetched, a window measures the model step alone.) `train.gallery_overhead`: in the same
  run, the seconds of each round's cluster gallery (xdc.gallery: decoding its members, strips, WAVs, map, logging)
  over the round's wall time, both read from when the trainer logs to the tracker (round start, the round's
  diagnostics, its gallery.json), so nothing inside the trainer is timed by hand.
- Clip pipeline (`data.clip_pipeline.wN` vs `data.raw_decode.wN`): `ClipDataset` + `clip_loader` (decode, crop,
  log-mel, collate) against `read_clip` alone on the same requests, batch size, worker count and prefetch depth.
  A loader's start-up is timed, as every training epoch pays it. `data.store_pipeline.wN`: the same requests read
  from the prepared store (ratio to `data.clip_pipeline.wN`; w0 is one core); `data.clips_per_decode4.wN`: the
  source with 4 clips per decoded stretch (`stretch_requests`, the same videos). `data.loader_vs_step.*`: the
  pipeline at the trainer's worker count over `train.xdc_step` (above 1, the loader outpaces the step).
- Clustering (`cluster.faiss_kmeans` vs `cluster.sklearn_kmeans`): `cluster_features` (PCA-whitening, L2 norm,
  faiss k-means, assignment, empty-cluster split) against the same preprocessing followed by scikit-learn's
  `KMeans(n_init=1, max_iter=same, tol=0)` (so it cannot stop early) on a Gaussian mixture; NMI between the two.
- DDP scaling (`ddp.one_rank`, `ddp.two_ranks`): the trainer's step as 1 rank and as 2 DDP ranks on the same total
  cores (CPU: gloo ranks with half the threads each; CUDA: one GPU per rank, where two are present), each rank on
  its own batch of the per-rank size, as in training; clips/s over both ranks, and the ratio 2 ranks / 1 rank. The
  all-reduce share of the 2-rank step is 1 - (step time under DDP's `no_sync`, which skips the gradient all-reduce)
  / (the full step's time), the two alternating block by block.
- Memory: peaks during the end-to-end run, which goes first so nothing an earlier benchmark left allocated counts:
  host RSS sampled every 50 ms (this process alone, and with its loader workers, whose shared pages are then
  counted more than once), and `torch.cuda.max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psutil
import sklearn
import torch
import torch.nn.functional as F
import torchvision
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from xdc.clustering import cluster_features, preprocess
from xdc.config import DataConfig, PretrainConfig, StoreSettings
from xdc.data.clips import ClipDataset, Video, clip_loader, random_requests, stretch_requests
from xdc.data.media import read_clip
from xdc.data.store import prepare_store
from xdc.data.synthetic import make_synthetic
from xdc.data.transforms import normalize_video
from xdc.distributed import Dist, init_distributed, shutdown
from xdc.errors import ConfigError
from xdc.models import AudioResNet18, R2Plus1D18
from xdc.tracking import NullTracker
from xdc.train import _Pretraining, pretrain, resolve_device

MIB = 1024 * 1024
CLIPS_PER_DECODE = 4  # the clip pipeline's row with several clips per decoded stretch


@dataclass(frozen=True)
class Sizes:
    """Everything a benchmark mode sizes: media, model, timing loops, the end-to-end run and the synthetic sets."""

    mode: str
    videos: int  # generated media
    video_size: tuple[int, int]  # width x height
    seconds: float
    width: int  # model and clips
    frames: int
    resize: int
    crop: int
    batch: int
    warmup: int  # training-step timing: steps before timing, steps per block, blocks per loop
    iters: int
    repeats: int
    rounds: int  # end-to-end run
    clips_per_video: int
    k: int
    train_workers: int
    log_every: int
    data_clips: int  # clip pipeline
    data_workers: tuple[int, ...]
    points: int  # clustering
    dim: int
    clusters: int
    iterations: int


# About 3 minutes on 2 idle CPU cores: the `small` preset's clips and width (the demo's run on a CPU).
CPU_FULL = Sizes(mode="full", videos=96, video_size=(96, 72), seconds=3.0, width=16, frames=8, resize=64, crop=56,
                 batch=16, warmup=2, iters=6, repeats=5, rounds=4, clips_per_video=2, k=8, train_workers=2,
                 log_every=2, data_clips=512, data_workers=(0, 2), points=20000, dim=128, clusters=64, iterations=20)
# Well under a minute and a half: the `tiny` preset's clips and width.
CPU_QUICK = replace(CPU_FULL, mode="quick", videos=32, width=8, frames=4, resize=40, crop=32, batch=8, warmup=2,
                    iters=8, repeats=5, rounds=2, clips_per_video=4, k=4, log_every=2, data_clips=192, points=5000,
                    dim=64, clusters=32)
# For the test suite: every benchmark runs, each as briefly as still means something.
CPU_TINY = replace(CPU_QUICK, mode="tiny", videos=12, seconds=2.0, width=4, batch=4, warmup=1, iters=2, repeats=1,
                   rounds=1, clips_per_video=1, k=3, train_workers=0, log_every=1, data_clips=16, points=2000, dim=32,
                   clusters=8, iterations=10)
# The published networks (width 64, 16 x 112 x 112 clips) on a GPU, with Kinetics-like 128 px frames.
GPU_FULL = Sizes(mode="full", videos=128, video_size=(172, 128), seconds=4.0, width=64, frames=16, resize=128,
                 crop=112, batch=32, warmup=5, iters=10, repeats=3, rounds=4, clips_per_video=4, k=16,
                 train_workers=8, log_every=4, data_clips=512, data_workers=(0, 2, 8), points=20000, dim=128,
                 clusters=64, iterations=20)
GPU_QUICK = replace(GPU_FULL, mode="quick", videos=64, frames=8, rounds=2, warmup=3, iters=5, repeats=2,
                    clips_per_video=2, data_clips=256, points=5000, dim=64, clusters=32)


@dataclass
class Result:
    name: str
    value: float
    unit: str
    ratio: float | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.ratio is not None:
            row["ratio"] = self.ratio
        if self.notes:
            row["notes"] = self.notes
        return row


def run_benchmarks(out: Path, *, device: str = "auto", quick: bool = False, tiny: bool = False) -> dict[str, Any]:
    """Run every benchmark, print a table, write `out/bench.json` and return what it holds.

    `device` is auto, cpu or cuda; GPU machines get the published model sizes. `tiny` (for tests) is smaller still
    than `quick`.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda, got {device!r}")
    target = resolve_device(device)  # device=cuda without one fails here, before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = choose_sizes(target, quick=quick, tiny=tiny)
    machine = machine_info(target, sizes)
    source = dataset(out / "data", sizes)
    cfg = train_config(sizes, source, target)
    end_to_end = bench_end_to_end(cfg, target, out / "runs" / "end_to_end")  # first: its memory peaks start clean
    store_cfg = replace(cfg, data=replace(cfg.data, path=str(prepared(source, sizes))))
    from_store = bench_end_to_end(store_cfg, target, out / "runs" / "end_to_end_store", name="store")
    inline = bench_end_to_end(replace(store_cfg, data=replace(store_cfg.data, num_workers=0)), target,
                              out / "runs" / "end_to_end_store_w0", name="store_w0")
    step = bench_train_step(cfg, sizes, target, out / "runs" / "step")
    step_rate = next(r.value for r in step if r.name == "train.xdc_step")
    for row in (end_to_end[0], from_store[0], inline[0]):
        row.ratio = row.value / step_rate
    pipeline = bench_clip_pipeline(cfg, store_cfg, sizes)
    results = [*step, *end_to_end, from_store[0], inline[0], *loader_capacity(pipeline, step_rate, cfg.data.num_workers),
               *bench_ddp_scaling(cfg, sizes, target, out / "runs" / "ddp"), *pipeline, *bench_clustering(sizes)]
    machine["load_average_end"] = _load_average()
    report = {"machine": machine, "results": [r.to_dict() for r in results]}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(machine, results))
    return report


def choose_sizes(device: torch.device, *, quick: bool, tiny: bool) -> Sizes:
    if device.type == "cuda":
        workers = min(8, os.cpu_count() or 1)
        sizes = GPU_QUICK if (quick or tiny) else GPU_FULL
        return replace(sizes, train_workers=workers, data_workers=tuple(sorted({0, 2, workers})))
    return CPU_TINY if tiny else CPU_QUICK if quick else CPU_FULL


def dataset(root: Path, sizes: Sizes) -> Path:
    """The generated set for these sizes: reused when a finished one is there (labels.csv is written last)."""
    width, height = sizes.video_size
    path = root / f"synthetic-{sizes.videos}x{sizes.seconds:g}s-{width}x{height}"
    if not (path / "labels.csv").exists():
        _say(f"generating {sizes.videos} videos in {path}")
        shutil.rmtree(path, ignore_errors=True)  # an interrupted generation leaves files but no labels.csv
        make_synthetic(path, videos=sizes.videos, classes=6, duration=sizes.seconds, size=sizes.video_size,
                       seed=0, layouts=False)
    return path


def prepared(source: Path, sizes: Sizes) -> Path:
    """The generated set as a prepared store (`xdc prepare`) with frames at the clips' short side: reused when
    finished (a rerun of `prepare_store` keeps every shard)."""
    store = source.with_name(f"{source.name}-store{sizes.resize}")
    _say(f"preparing the clip store {store}")
    summary = prepare_store(source, "folder", store, StoreSettings(short_side=sizes.resize),
                            workers=max(1, min(os.cpu_count() or 1, 16)))
    _say(summary.text())
    return store


def train_config(sizes: Sizes, data_path: Path, device: torch.device) -> PretrainConfig:
    # PCA well below the video count: whitening components near rank n - 1 can give non-finite features.
    pca_dim = max(4, min(32, sizes.videos // 4))
    return PretrainConfig.from_dict({
        "variant": "xdc", "rounds": sizes.rounds, "epochs_per_round": 1, "batch_size": sizes.batch, "seed": 0,
        "device": device.type, "log_every": sizes.log_every, "experiment": "xdc-bench",
        "data": {"path": str(data_path), "clip_frames": sizes.frames, "fps": 8.0, "resize_short": sizes.resize,
                 "crop_size": sizes.crop, "n_mels": 40, "num_workers": sizes.train_workers,
                 "clips_per_video": sizes.clips_per_video},
        "model": {"video_width": sizes.width, "audio_width": sizes.width},
        "cluster": {"k_video": sizes.k, "k_audio": sizes.k, "k_joint": sizes.k, "pca_dim": pca_dim},
        "optim": {"lr": 0.05},
    })


# -- (a) the training step ---------------------------------------------------------------------------------------


def bench_train_step(cfg: PretrainConfig, sizes: Sizes, device: torch.device, workdir: Path) -> list[Result]:
    """Clips/s of a plain reference step and of the trainer's step, on the same in-memory clips."""
    _say("timing the training step: plain loop vs the trainer's step")
    ours = _trainer(cfg, device, workdir)
    videos = ours.data.videos
    batches = _host_batches(videos, cfg, count=2, pin=device.type == "cuda")
    targets = {space: torch.randint(0, sizes.k, (len(videos),), device=device) for space in ("video", "audio")}
    plain = PlainStep(width=sizes.width, k=sizes.k, cfg=cfg, device=device)
    plain_batches = [plain.prepare(batch, targets) for batch in batches]
    ours.net.train()
    steps = {"plain": lambda i: plain(plain_batches[i % len(plain_batches)]),
             "ours": lambda i: ours._train_step(batches[i % len(batches)], targets)}
    compiled = None
    if device.type == "cuda":  # the same step with the encoders compiled (`compile=true`); the warm-up compiles
        compiled = _trainer(replace(cfg, compile=True), device, workdir / "compiled")
        compiled.net.train()
        steps["compiled"] = lambda i: compiled._train_step(batches[i % len(batches)], targets)
    began = time.perf_counter()
    rates = _alternate_blocks(steps, sizes=sizes, device=device)
    elapsed = time.perf_counter() - began
    with FlopCounterMode(display=False) as counter:  # after the timing: counting slows the step it watches
        ours._train_step(batches[0], targets)
    flops = counter.get_total_flops() / batches[0]["size"]
    description = plain.description
    del ours, plain, plain_batches, targets, steps, compiled
    _free_device_memory(device)
    our_notes = ("xdc _Pretraining._train_step: uint8 in, normalised on device"
                 + (", channels-last + bf16 autocast" if device.type == "cuda" else ", fp32 (no bf16 on CPU)"))
    results = [
        Result("train.plain_step", rates["plain"], "clips/s", notes=description),
        Result("train.xdc_step", rates["ours"], "clips/s", rates["ours"] / rates["plain"],
               f"{our_notes}; ratio = xdc / plain"),
        Result("train.gflop_per_clip", flops / 1e9, "GFLOP", notes=(
            "forward + backward of both encoders and heads per clip, counted by torch.utils.flop_counter on the "
            "trainer's step")),
    ]
    if "compiled" in rates:
        results.append(Result("train.xdc_step_compiled", rates["compiled"], "clips/s",
                              rates["compiled"] / rates["ours"], notes=(
                                  f"train.xdc_step with compile=true (torch.compile of both encoders); ratio = "
                                  f"compiled / eager; the warm-up steps, which compile, are not timed (the step "
                                  f"timing took {elapsed:.0f} s in all)")))
    peak = bf16_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak:
        results.append(Result("train.mfu", flops * rates["ours"] / peak, "fraction", notes=(
            f"model FLOPs utilisation: train.gflop_per_clip x train.xdc_step / {peak / 1e12:.0f} TFLOP/s, the "
            f"device's dense bf16 peak")))
    return results


# Dense (no sparsity) bf16 tensor-core peaks from the vendor's data sheets, by a name torch reports for the device.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "GH200": 989.4,
                    "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


def bf16_peak_flops(device_name: str) -> float | None:
    """A GPU's dense bf16 peak in FLOP/s from the name torch gives it, when the table knows it (the longest
    matching key: "NVIDIA L40S" is an L40S, not an L4)."""
    known = [key for key in BF16_PEAK_TFLOPS if key in device_name]
    return BF16_PEAK_TFLOPS[max(known, key=len)] * 1e12 if known else None


def _trainer(cfg: PretrainConfig, device: torch.device, workdir: Path) -> _Pretraining:
    """A trainer set up as `pretrain()` sets it up, without running rounds: its step is the one timed."""
    run = _Pretraining(cfg, NullTracker(), workdir, Dist(), device, None, None)
    run.data = run._load_data()
    run._build(None)
    return run


def _host_batches(videos: list[Video], cfg: PretrainConfig, *, count: int, pin: bool) -> list[dict]:
    """`count` batches of real decoded clips, as the trainer's loader delivers them (uint8 video, log-mel audio)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(videos), size=count * cfg.batch_size)
    requests = random_requests(videos, ids, cfg.data.clip_seconds, rng)
    loader = clip_loader(ClipDataset(videos, requests, cfg.data, train=True), batch_size=cfg.batch_size, workers=0)
    batches = [batch for batch in loader if batch["size"] == cfg.batch_size]
    if not batches:
        raise RuntimeError("no clip of the generated set decoded; the benchmark has nothing to train on")
    return [_pinned(batch) for batch in batches] if pin else batches


def _pinned(batch: dict) -> dict:
    return {key: value.pin_memory() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


class PlainStep:
    """The reference loop's step: two encoders with linear heads, fp32 eager, SGD, backward, step."""

    def __init__(self, *, width: int, k: int, cfg: PretrainConfig, device: torch.device):
        self.device = device
        self.video, self.audio, self.description = plain_networks(width=width, k=k)
        if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
            self.description += " (convolutions in TF32, PyTorch's default)"
        self.video.to(device).train()
        self.audio.to(device).train()
        params = [*self.video.parameters(), *self.audio.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)

    def prepare(self, batch: dict, targets: dict[str, torch.Tensor]) -> dict:
        """The same clips as a float pipeline would hand them over: normalised on the host, targets gathered."""
        video = normalize_video(batch["video"])  # B x 3 x T x S x S float32
        index = batch["video_index"].to(self.device)
        prepared = {"video": video, "audio": batch["audio"],
                    "video_target": targets["video"][index], "audio_target": targets["audio"][index]}  # each B
        if self.device.type == "cuda":
            prepared["video"] = prepared["video"].pin_memory()
        return prepared

    def __call__(self, batch: dict) -> None:
        video = batch["video"].to(self.device, non_blocking=True)  # B x 3 x T x S x S
        audio = batch["audio"].to(self.device, non_blocking=True)  # B x 1 x n_mels x frames
        # XDC's cross-modal targets: the video head predicts audio clusters and the audio head video clusters.
        loss = (F.cross_entropy(self.video(video), batch["audio_target"])
                + F.cross_entropy(self.audio(audio), batch["video_target"]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def plain_networks(*, width: int, k: int) -> tuple[nn.Module, nn.Module, str]:
    """torchvision's networks at the published width; xdc's encoders at the same width plus a Linear otherwise."""
    if width == 64:
        audio = torchvision.models.resnet18(num_classes=k)
        audio.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return (torchvision.models.video.r2plus1d_18(num_classes=k), audio,
                "torchvision r2plus1d_18 + resnet18 (1-ch stem), fp32 eager, SGD")
    video, audio = R2Plus1D18(width=width), AudioResNet18(width=width)
    return (nn.Sequential(video, nn.Linear(video.feature_dim, k)),
            nn.Sequential(audio, nn.Linear(audio.feature_dim, k)),
            f"xdc R2Plus1D18 + AudioResNet18 at width {width} (no torchvision model that narrow) + Linear, "
            "fp32 eager, SGD")


def _alternate_blocks(steps: dict[str, Callable[[int], Any]], *, sizes: Sizes,
                      device: torch.device) -> dict[str, float]:
    """Median clips/s per step function over `repeats` timed blocks, the functions taking turns block by block."""
    for step in steps.values():
        for i in range(sizes.warmup):
            step(i)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(sizes.repeats):
        for name, step in steps.items():
            _sync(device)
            begin = time.perf_counter()
            for i in range(sizes.iters):
                step(i)
            _sync(device)
            rates[name].append(sizes.batch * sizes.iters / (time.perf_counter() - begin))
    return {name: statistics.median(values) for name, values in rates.items()}


# -- DDP scaling ---------------------------------------------------------------------------------------------------


def bench_ddp_scaling(cfg: PretrainConfig, sizes: Sizes, device: torch.device, workdir: Path) -> list[Result]:
    """The trainer's step as 1 rank and as 2 DDP ranks on the same cores (or one GPU each), and the all-reduce
    share of the 2-rank step; no rows where two ranks cannot be had (one GPU, one core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        _say("DDP scaling: skipped, one GPU only")
        return []
    if device.type == "cpu" and cores < 2:
        _say("DDP scaling: skipped, one core only")
        return []
    _say("timing DDP: the trainer's step as 1 rank and as 2 ranks")
    one = _ddp_rates(cfg, sizes, device, workdir / "one", world=1, threads=cores)
    two = _ddp_rates(cfg, sizes, device, workdir / "two", world=2, threads=max(1, cores // 2))
    share = max(0.0, 1.0 - two["no_sync"] / two["synced"]) if two["no_sync"] else 0.0  # times per step, not rates
    where = (f"gloo on CPU, {cores} cores in all (1 rank x {cores} threads, 2 ranks x {max(1, cores // 2)})"
             if device.type == "cpu" else "NCCL, one GPU per rank")
    return [
        Result("ddp.one_rank", one["clips_per_s"], "clips/s", notes=f"the trainer's step, 1 process; {where}"),
        Result("ddp.two_ranks", two["clips_per_s"], "clips/s", two["clips_per_s"] / one["clips_per_s"],
               f"2 DDP ranks, batch {cfg.batch_size} each, clips/s over both; ratio = 2 ranks / 1 rank; all-reduce "
               f"{share:.0%} of the step (1 - no_sync step time / full step time)"),
    ]


def _ddp_rates(cfg: PretrainConfig, sizes: Sizes, device: torch.device, workdir: Path, *, world: int,
               threads: int) -> dict[str, float]:
    import torch.multiprocessing as mp

    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / "rates.json"
    result.unlink(missing_ok=True)
    port = _free_port()
    mp.start_processes(_ddp_rank, args=(world, port, cfg.to_dict(), asdict(sizes), device.type, threads,
                                        str(workdir)), nprocs=world, join=True, start_method="spawn")
    return json.loads(result.read_text())


def _ddp_rank(rank: int, world: int, port: int, raw_cfg: dict, raw_sizes: dict, device_type: str, threads: int,
              workdir: str) -> None:
    """One rank of the DDP benchmark (a spawned process): the trainer set up as `pretrain()` does under torchrun,
    timed on its own batches; rank 0 writes the rates."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    cfg, sizes = PretrainConfig.from_dict(raw_cfg), Sizes(**{**raw_sizes, "video_size": tuple(raw_sizes["video_size"])})
    group = init_distributed(device_type)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    run = None
    try:
        run = _Pretraining(cfg, NullTracker(), Path(workdir), group, device, None, None)
        run.data = run._load_data()
        run._build(None)
        run.net.train()
        batches = _host_batches(run.data.videos, cfg, count=2, pin=device.type == "cuda")
        targets = {space: torch.randint(0, sizes.k, (len(run.data.videos),), device=device)
                   for space in ("video", "audio")}

        def step(i: int) -> None:
            run._train_step(batches[i % len(batches)], targets)

        def unsynced(i: int) -> None:
            with run.net.no_sync():
                step(i)

        steps = {"synced": step, **({"no_sync": unsynced} if group.active else {})}
        rates = _alternate_blocks(steps, sizes=sizes, device=device)
        if group.main:
            seconds = {name: sizes.batch * 1.0 / rate for name, rate in rates.items()}  # per step, one rank's batch
            Path(workdir, "rates.json").write_text(json.dumps({
                "clips_per_s": rates["synced"] * world, "synced": seconds["synced"],
                "no_sync": seconds.get("no_sync", 0.0)}))
    finally:
        del run  # DDP's reducer goes before the process group (see xdc.train.pretrain)
        gc.collect()
        shutdown(group)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- (a) end to end, and (d) its peak memory -----------------------------------------------------------------------


END_TO_END_SOURCES = {"": "", "store": "from the prepared store: ",
                      "store_w0": "from the prepared store, read in the trainer (no loader workers): "}


def bench_end_to_end(cfg: PretrainConfig, device: torch.device, workdir: Path, *, name: str = "") -> list[Result]:
    """A real `pretrain()` run from scratch: its own clips/s metric, wall time and peak memory. `name` tells a
    second run (on the prepared store) from the first; only the first one's memory rows are reported."""
    _say(f"end-to-end pretrain(): {cfg.rounds} round(s) on {cfg.data.path}")
    shutil.rmtree(workdir, ignore_errors=True)  # a finished run in the folder would make pretrain() return at once
    tracker = ClockedTracker()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as rss:
        begin = time.perf_counter()
        pretrain(cfg, tracker, out_dir=workdir)
        wall = time.perf_counter() - begin
    epochs = [value for _, value in tracker.metrics["train/epoch_clips_per_s"]]
    results = [
        Result("train.xdc_end_to_end" + (f"_{name}" if name else ""), statistics.median(epochs), "clips/s", notes=(
            f"{END_TO_END_SOURCES[name]}"
            f"pretrain() train/epoch_clips_per_s (clips / epoch wall time, loader start-up included), median of "
            f"{len(epochs)} epochs, {cfg.data.num_workers} loader workers; ratio = end-to-end / train.xdc_step; "
            f"the run took {wall:.1f} s in all, feature extraction and clustering included")),
        Result("memory.host_peak_rss", rss.peak_main / MIB, "MiB", notes="this process, during the end-to-end run"),
        Result("memory.host_peak_rss_with_workers", rss.peak_total / MIB, "MiB",
               notes="this process + its loader workers; an upper bound: shared pages count once per process"),
    ]
    share, per_round = gallery_share(tracker.clock, cfg.rounds)
    results.append(Result("train.gallery_overhead", share, "fraction", notes=(
        f"the rounds' cluster galleries ({cfg.gallery_members} members a cluster and view) over the rounds' wall "
        f"time, all {cfg.rounds} together; per round {', '.join(f'{x:.3f}' for x in per_round)}")))
    if device.type == "cuda":
        results.append(Result("memory.device_peak", torch.cuda.max_memory_allocated(device) / MIB, "MiB",
                              notes="torch.cuda.max_memory_allocated during the end-to-end run"))
    return results


class ClockedTracker(NullTracker):
    """A NullTracker that notes when each artifact was first logged, each round's start (`train/round`) and the
    run's end: marks to time the trainer's phases by, from outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        super().log_metrics(metrics, step=step)
        if "train/round" in metrics:
            self.clock[f"round {int(metrics['train/round'])}"] = time.perf_counter()

    def log_artifact(self, path: Path, artifact_path: str = "") -> None:
        super().log_artifact(path, artifact_path)
        # The first time: a round's diagnostics JSON is logged again with its heads' fit once the round trained.
        self.clock.setdefault(self.artifacts[-1], time.perf_counter())

    def finish(self, status: str, *, error: str = "") -> None:
        super().finish(status, error=error)
        self.clock["end"] = time.perf_counter()


def gallery_share(clock: dict[str, float], rounds: int) -> tuple[float, list[float]]:
    """The galleries' seconds over the rounds' (together, and per round). A round runs from its start to the next
    one's (the last to the run's end); its gallery from its diagnostics JSON, the last thing logged before it, to
    its gallery.json, the gallery's last file."""
    bounds = [clock[f"round {r}"] for r in range(rounds)] + [clock["end"]]
    spent = [clock[f"gallery/round_{r:03d}/gallery.json"] - clock[f"diagnostics/round_{r:03d}.json"]
             for r in range(rounds)]
    lengths = np.diff(bounds)
    return float(sum(spent) / lengths.sum()), [float(s / n) for s, n in zip(spent, lengths)]


class PeakRss:
    """Samples the resident memory of this process and of its children every `interval` seconds, in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.process = psutil.Process()
        self.peak_main = 0
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        main = self.process.memory_info().rss
        children = 0
        for child in self.process.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.Error:  # a worker that exited between the listing and the read
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_total = max(self.peak_total, main + children)


# -- (b) the clip pipeline -----------------------------------------------------------------------------------------


def bench_clip_pipeline(cfg: PretrainConfig, store_cfg: PretrainConfig, sizes: Sizes) -> list[Result]:
    """Clips/s of decode + crop + log-mel through `clip_loader`, against `read_clip` alone, per worker count; the
    same requests served by the prepared store; and the source with CLIPS_PER_DECODE clips per decoded stretch."""
    _say(f"timing the clip pipeline on {sizes.data_clips} clips, workers {list(sizes.data_workers)}")
    videos, stored = _usable_videos(cfg), _usable_videos(store_cfg)
    same = [Path(v.path).relative_to(cfg.data.path) for v in videos] == \
        [Path(v.path).relative_to(store_cfg.data.path) for v in stored]
    if not same:
        raise RuntimeError("the prepared store does not hold the source's usable videos in its order")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, len(videos), size=sizes.data_clips)
    requests = random_requests(videos, ids, cfg.data.clip_seconds, rng)
    stretches = stretch_requests(videos, ids[:sizes.data_clips // CLIPS_PER_DECODE], cfg.data.clip_seconds,
                                 CLIPS_PER_DECODE, rng)
    for video in videos:  # the first pass should not be the one that pays for cold files
        Path(video.path).read_bytes()
    results = []
    for workers in sizes.data_workers:
        raw = _raw_rate(videos, requests, cfg, workers)
        ours = _pipeline_rate(videos, requests, cfg, workers)
        store = _pipeline_rate(stored, requests, store_cfg, workers)
        grouped = _pipeline_rate(videos, stretches, cfg, workers, clips_per_item=CLIPS_PER_DECODE)
        results += [
            Result(f"data.raw_decode.w{workers}", raw, "clips/s", notes="read_clip only (frames + audio)"),
            Result(f"data.clip_pipeline.w{workers}", ours, "clips/s", ours / raw,
                   "ClipDataset + clip_loader (decode, crop, log-mel); ratio = pipeline / raw decode"),
            Result(f"data.store_pipeline.w{workers}", store, "clips/s", store / ours,
                   "the same requests from the prepared store (JPEG frames, PCM sound); ratio = store / "
                   "clip_pipeline" + (", both on one core" if workers == 0 else "")),
            Result(f"data.clips_per_decode{CLIPS_PER_DECODE}.w{workers}", grouped, "clips/s", grouped / ours,
                   f"the source, {CLIPS_PER_DECODE} clips per decoded stretch (data.clips_per_decode); ratio = / "
                   f"clip_pipeline"),
        ]
    return results


def loader_capacity(pipeline: list[Result], step_rate: float, workers: int) -> list[Result]:
    """What the trainer's loader can deliver (its worker count) over what the model step consumes."""
    rows = {row.name: row.value for row in pipeline}
    found = [(name, f"data.{name}_pipeline.w{workers}") for name in ("clip", "store")]
    return [Result(f"data.loader_vs_step.{'source' if name == 'clip' else name}", rows[key] / step_rate, "x",
                   notes=f"{key} / train.xdc_step: above 1 the loader outpaces the step")
            for name, key in found if key in rows]


def _usable_videos(cfg: PretrainConfig) -> list[Video]:
    from xdc.data import load_video_set

    return load_video_set(cfg.data).videos


class RawClips(Dataset):
    """The requests of a ClipDataset executed by `read_clip` alone: the decode cost the pipeline starts from."""

    def __init__(self, videos: list[Video], requests: np.ndarray, cfg: DataConfig):
        self.videos, self.requests, self.cfg = videos, requests, cfg

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, position: int) -> tuple[np.ndarray, np.ndarray | None]:
        video_index, start, _ = self.requests[position]
        return read_clip(self.videos[int(video_index)].path, start=float(start), num_frames=self.cfg.clip_frames,
                         fps=self.cfg.fps, short_side=self.cfg.resize_short, sample_rate=self.cfg.sample_rate)


def _as_list(items: list) -> list:
    return items


def _raw_rate(videos: list[Video], requests: np.ndarray, cfg: PretrainConfig, workers: int) -> float:
    loader = DataLoader(RawClips(videos, requests, cfg.data), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_as_list, prefetch_factor=4 if workers > 0 else None)
    begin = time.perf_counter()
    clips = sum(len(items) for items in loader)
    return clips / (time.perf_counter() - begin)


def _pipeline_rate(videos: list[Video], requests: np.ndarray, cfg: PretrainConfig, workers: int, *,
                   clips_per_item: int = 1) -> float:
    dataset = ClipDataset(videos, requests, cfg.data, train=True, clips_per_item=clips_per_item)
    loader = clip_loader(dataset, batch_size=cfg.batch_size, workers=workers)
    begin = time.perf_counter()
    clips = sum(batch["size"] for batch in loader)
    return clips / (time.perf_counter() - begin)


# -- (c) clustering ------------------------------------------------------------------------------------------------


def bench_clustering(sizes: Sizes) -> list[Result]:
    """Seconds of faiss `cluster_features` and of the same preprocessing + scikit-learn KMeans, and their NMI."""
    n, dim, k, iterations = sizes.points, sizes.dim, sizes.clusters, sizes.iterations
    _say(f"clustering {n} x {dim} features into {k} clusters: faiss vs scikit-learn")
    features, truth = gaussian_mixture(n=n, dim=dim, k=k, seed=0)
    _faiss_kmeans(features[: 20 * k], k=k, iterations=2)  # warm-up: thread pools, first-call set-up
    _sklearn_kmeans(features[: 20 * k], k=k, iterations=2)
    faiss_s, faiss_labels = _timed(lambda: _faiss_kmeans(features, k=k, iterations=iterations))
    sklearn_s, (sklearn_labels, sklearn_iterations) = _timed(
        lambda: _sklearn_kmeans(features, k=k, iterations=iterations))
    agreement = normalized_mutual_info_score(faiss_labels, sklearn_labels)
    truth_nmi = (f"NMI to the mixture's components: faiss {normalized_mutual_info_score(truth, faiss_labels):.3f}, "
                 f"scikit-learn {normalized_mutual_info_score(truth, sklearn_labels):.3f}")
    setting = f"{n} x {dim} Gaussian mixture, k={k}, {iterations} iterations"
    return [
        Result("cluster.faiss_kmeans", faiss_s, "s", sklearn_s / faiss_s,
               f"xdc cluster_features (PCA-whitening, L2, faiss); {setting}; ratio = speed-up over scikit-learn"),
        Result("cluster.sklearn_kmeans", sklearn_s, "s", notes=(
            f"same preprocessing + KMeans(n_init=1, max_iter={iterations}, tol=0, k-means++ init), "
            f"ran {sklearn_iterations} iterations")),
        Result("cluster.nmi_faiss_sklearn", agreement, "NMI", notes=truth_nmi),
    ]


def gaussian_mixture(*, n: int, dim: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N x D float32 points of k isotropic unit-variance components, centres about 6 standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0 / np.sqrt(2 * dim), size=(k, dim))  # k x D
    labels = rng.integers(0, k, size=n)
    points = centres[labels] + rng.normal(size=(n, dim))  # N x D
    return points.astype(np.float32), labels


def _faiss_kmeans(features: np.ndarray, *, k: int, iterations: int) -> np.ndarray:
    return cluster_features(features, k=k, iterations=iterations, pca_dim=features.shape[1], whiten=True,
                            seed=0).assignments


def _sklearn_kmeans(features: np.ndarray, *, k: int, iterations: int) -> tuple[np.ndarray, int]:
    data = preprocess(features, pca_dim=features.shape[1], whiten=True, seed=0)  # N x D
    kmeans = KMeans(n_clusters=k, n_init=1, max_iter=iterations, tol=0.0, random_state=0).fit(data)
    return kmeans.labels_, int(kmeans.n_iter_)


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    begin = time.perf_counter()
    value = work()
    return time.perf_counter() - begin, value


# -- machine, output, helpers --------------------------------------------------------------------------------------


def machine_info(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torchvision": torchvision.__version__,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": _load_average(),
        "sizes": asdict(sizes),
    }


def format_table(machine: dict[str, Any], results: list[Result]) -> str:
    header = (f"xdc bench ({machine['sizes']['mode']}) on {machine['device_name']} [{machine['device']}], "
              f"{machine['cpu_count']} CPUs, torch {machine['torch']}; load average "
              f"{machine['load_average_start']} at start, {machine['load_average_end']} at end")
    width = max(len(r.name) for r in results)
    lines = [header, f"{'name':<{width}}  {'value':>10}  {'unit':<8}  {'ratio':>6}  notes"]
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        lines.append(f"{r.name:<{width}}  {r.value:>10.4g}  {r.unit:<8}  {ratio:>6}  {r.notes}")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)

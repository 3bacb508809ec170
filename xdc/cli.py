"""Command line: `xdc pretrain`, `xdc evaluate`, `xdc prepare`, `xdc make-dataset`, `xdc compare`, `xdc bench`.

Input errors print one line and exit with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from xdc.config import StoreSettings, field_specs
from xdc.errors import ConfigError, XDCError

EXIT_INPUT_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except XDCError as exc:
        print(f"xdc: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xdc", description="Cross-Modal Deep Clustering (XDC) for audio-video.")
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("pretrain", help="pretrain video and audio encoders on a folder of videos")
    pre.add_argument("--data", required=True, help="dataset root")
    pre.add_argument("--variant", help="xdc, sdc, mdc, cdc or supervised (default: xdc)")
    pre.add_argument("--out", required=True, help="output directory (checkpoints; reruns resume from it)")
    pre.add_argument("--layout", help="dataset layout (default: folder)")
    pre.add_argument("--preset", help="start from a preset: tiny (smoke test) or small (demo)")
    pre.add_argument("--config", help="YAML file of config keys")
    pre.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key, e.g. cluster.k_video=128 (repeatable)")
    pre.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(handler=_pretrain)

    ev = commands.add_parser("evaluate", help="evaluate an encoder downstream under a versioned protocol")
    ev.add_argument("--checkpoint", required=True, help="final.pt of `xdc pretrain`, 'random' or 'supervised'")
    ev.add_argument("--benchmark", required=True, help="ucf101, hmdb51, esc50, dcase or folder")
    ev.add_argument("--data", required=True, help="dataset root in the benchmark's layout")
    ev.add_argument("--split", type=int, help="UCF101/HMDB51 split 1-3; ESC-50 fold 1-5 or 0 for all (default 1)")
    ev.add_argument("--protocol", help="finetune, linear or retrieval (video); svm (audio) (default: linear/svm)")
    ev.add_argument("--version", type=int, help="protocol version (default: the latest)")
    ev.add_argument("--preset", help="small: the 2-core CPU budget's protocol sizes; tiny: the smoke test's")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--supervised-data", help="labelled video folder for --checkpoint supervised")
    ev.add_argument("--out", help="output directory (default: runs/eval/<benchmark>-<protocol>-split<N>-<ckpt>)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="set an evaluation config key, e.g. width=16 (repeatable); protocol hyperparameters are "
                         "fixed by --protocol/--version")
    ev.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_evaluate)

    make = commands.add_parser("make-dataset", help="generate a dataset of real encoded media files")
    make.add_argument("kind", choices=["synthetic", "spoken-digits", "instrument-glyphs"],
                      help="synthetic: drifting stripes with tones (the smoke-test set); spoken-digits and "
                           "instrument-glyphs: real material (xdc.data.material)")
    make.add_argument("out", help="output directory")
    make.add_argument("--videos", type=int, default=48)
    make.add_argument("--classes", type=int, default=6, help="synthetic only; the real-material sets have their own")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--duration", type=float, default=3.0, help="seconds per video (synthetic only)")
    make.set_defaults(handler=_make_dataset)

    prep = commands.add_parser("prepare", help="transcode a video dataset once into a clip store that trains faster")
    prep.add_argument("data", help="dataset root")
    prep.add_argument("--layout", help="dataset layout (default: folder); the store keeps its splits and is read "
                                       "with the same layout")
    prep.add_argument("--out", required=True, help="store folder (a rerun resumes it)")
    for key, spec in field_specs(StoreSettings).items():
        prep.add_argument(f"--{key.replace('_', '-')}", dest=key, type=spec.type, help=_described(spec))
    prep.add_argument("--workers", type=int, help="processes (default: every core)")
    prep.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(handler=_prepare)

    compare = commands.add_parser("compare", help="every variant on every set, same budget, measured downstream")
    compare.add_argument("--out", default="compare-results", help="working folder; a rerun resumes from it")
    compare.add_argument("--sets", default="synthetic,spoken-digits,instrument-glyphs")
    compare.add_argument("--variants", default="xdc,mdc,cdc,sdc,supervised")
    compare.add_argument("--seeds", default="0,1,2")
    compare.add_argument("--preset", default="small",
                         help="the pretraining budget and the protocols' preset (default: small)")
    compare.add_argument("--videos", type=int, default=480, help="videos per generated set")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a pretraining config key for every run (repeatable)")
    compare.add_argument("--jobs", type=int, default=1,
                         help="runs measured at once, each with an equal share of the CPU threads (default 1)")
    compare.set_defaults(handler=_compare)

    bench = commands.add_parser("bench", help="benchmarks: trainer vs plain loop, data pipeline, clustering")
    bench.add_argument("--out", default="bench-results", help="directory for the dataset and the JSON result")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    bench.set_defaults(handler=_bench)
    return parser


def _pretrain(args: argparse.Namespace) -> int:
    from xdc.config import load_config
    from xdc.train import pretrain

    base = {"data": {"path": args.data}}
    if args.variant:
        base["variant"] = args.variant
    if args.layout:
        base["data"]["layout"] = args.layout
    cfg = load_config(preset=args.preset, file=args.config, overrides=args.overrides, base=base)
    result, tracker = _tracked(args, lambda tracker, bar, stop: pretrain(cfg, tracker, out_dir=args.out,
                                                                         on_progress=bar, should_stop=stop))
    _print_summary(result, tracker)
    return 0


def _tracked(args: argparse.Namespace, work):
    """(what `work(tracker, on_progress, should_stop)` returns, the tracker), run as every long command runs: logged
    to MLflow unless --no-track, a progress bar unless --quiet, SIGINT/SIGTERM asking it to stop."""
    from xdc.tracking import MLflowTracker, NullTracker

    tracker = NullTracker() if args.no_track else MLflowTracker()
    stop = _stop_on_signals()
    bar = None if args.quiet else _ProgressBar()
    result = work(tracker, bar, stop.is_set)
    if bar:
        bar.close()
    return result, tracker


def _print_summary(result, tracker) -> None:
    skipped = ", ".join(f"{n} {reason}" for reason, n in result.skipped.items()) or "none"
    if result.resumed_from:
        where = result.resumed_from
        print(f"resumed from the checkpoint at round {where['round']}, epoch {where['epoch']}, "
              f"global step {where['global_step']}")
    print(f"skipped files: {skipped}")
    if result.stopped:
        print(f"stopped on request; checkpoint in {result.out_dir / 'checkpoints'} (rerun the same command to resume)")
    else:
        print(f"final checkpoint: {result.final_checkpoint}")
    if result.run_id and hasattr(tracker, "tracking_uri"):
        print(f"MLflow run {result.run_id} at {tracker.tracking_uri}")


def _evaluate(args: argparse.Namespace) -> int:
    from xdc.config import deep_merge, parse_override
    from xdc.evaluation import EvalConfig, default_out_dir, evaluate
    from xdc.evaluation.protocols import AUDIO_BENCHMARKS

    raw = {"checkpoint": args.checkpoint, "benchmark": args.benchmark, "data": args.data,
           "protocol": args.protocol or ("svm" if args.benchmark in AUDIO_BENCHMARKS else "linear")}
    for key in ("split", "version", "preset", "seed", "supervised_data"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    for item in args.overrides:
        raw = deep_merge(raw, parse_override(item))
    cfg = EvalConfig.from_dict(raw)
    out = Path(args.out) if args.out else default_out_dir(cfg)
    result, tracker = _tracked(args, lambda tracker, bar, stop: evaluate(cfg, tracker, out_dir=out, on_progress=bar,
                                                                         should_stop=stop))
    if result.stopped:
        print("stopped on request; nothing written (run the same command again)")
        return 130
    print(_metrics_line(result.record))
    print(f"result: {result.path}")
    if result.run_id and hasattr(tracker, "tracking_uri"):
        print(f"MLflow run {result.run_id} at {tracker.tracking_uri}")
    return 0


def _metrics_line(record: dict) -> str:
    metrics = " ".join(f"{name} {value:.3f}" for name, value in record["metrics"].items())
    ckpt = record["checkpoint"]
    which = ckpt["kind"] if ckpt["kind"] != "pretrained" else f"{ckpt['variant']} {ckpt['sha256'][:8]}"
    return (f"{record['benchmark']} split {record['split']}, {record['protocol']['name']} "
            f"v{record['protocol']['version']}, {which}: {metrics}")


def _make_dataset(args: argparse.Namespace) -> int:
    from xdc.data.material import make_material_set
    from xdc.data.synthetic import make_synthetic

    if args.kind == "synthetic":
        summary = make_synthetic(Path(args.out), videos=args.videos, seed=args.seed, classes=args.classes,
                                 duration=args.duration)
    else:
        summary = make_material_set(args.kind, Path(args.out), videos=args.videos, seed=args.seed)
    print(f"wrote {summary.videos} videos of {len(summary.classes)} classes ({summary.mismatched} with mismatched "
          f"audio) to {summary.root}")
    return 0


def _described(spec) -> str:
    return f"{spec.help} (default {spec.default:g})" if spec.help else f"default {spec.default:g}"


def _prepare(args: argparse.Namespace) -> int:
    from xdc.config import PrepareConfig
    from xdc.data.store import prepare

    raw = {"path": args.data, "store": {key: getattr(args, key) for key in field_specs(StoreSettings)
                                        if getattr(args, key) is not None}}
    for key in ("layout", "workers"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    try:
        cfg = PrepareConfig.from_dict(raw)
    except ConfigError as exc:  # name the option, not the field
        option = f"--{(exc.key or '').removeprefix('store.').replace('_', '-')}"
        raise ConfigError(str(exc).replace(exc.key or "", option, 1), key=exc.key) from None
    summary, _ = _tracked(args, lambda tracker, bar, stop: prepare(cfg, tracker, out_dir=args.out, on_progress=bar,
                                                                   should_stop=stop))
    print(summary.text())
    if summary.skipped:
        print(f"skipped files and why: {summary.root / 'skipped.tsv'}")
    return 130 if summary.stopped else 0


def _compare(args: argparse.Namespace) -> int:
    from xdc.compare import run_comparison
    from xdc.errors import ConfigError

    try:
        seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    report = run_comparison(Path(args.out), sets=_names(args.sets), variants=_names(args.variants), seeds=seeds,
                            preset=args.preset, videos=args.videos, overrides=args.overrides,
                            jobs=args.jobs)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _bench(args: argparse.Namespace) -> int:
    from xdc.bench import run_benchmarks

    run_benchmarks(Path(args.out), device=args.device, quick=args.quick)
    return 0


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop; a second SIGINT interrupts at once."""
    stop = threading.Event()

    def request(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print("\nstop requested: saving a checkpoint...", file=sys.stderr)

    signal.signal(signal.SIGINT, request)
    signal.signal(signal.SIGTERM, request)
    return stop


class _ProgressBar:
    """Shown from the first report, so an input error refused before any work prints no empty bar."""

    def __init__(self):
        self.bar = None

    def __call__(self, fraction: float, eta: float | None, stage: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, bar_format="{percentage:3.0f}%|{bar:24}| {desc}", dynamic_ncols=True)
        self.bar.n = int(fraction * 1000)
        eta_text = f"ETA {int(eta // 60)}m{int(eta % 60):02d}s" if eta is not None else "ETA --"
        self.bar.set_description_str(f"{stage} | {eta_text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())

"""The demo's steps inside the lab, run by deploy/demo.sh through the lab's own services:

    demo_lab.py setup DATA     the demo user and team, and DATA registered as datasets (folder, ucf101, esc50)
    demo_lab.py submit         a small XDC pretraining that queues its evaluations when it succeeds, and the same
                               evaluations of a random-init encoder (the leaderboard's baseline row); with --slurm
                               also a 2-node pretraining that SLURM places (the tiny preset: the nodes share this
                               machine's cores)
    demo_lab.py wait JOB       wait until JOB, its evaluations and the baselines have finished; print what they gave
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db.models import Q  # noqa: E402

from webapp.lab import services  # noqa: E402
from webapp.lab.models import Dataset, Job, Membership, Team  # noqa: E402
from xdc.config import load_config  # noqa: E402

SITE_URL = os.environ.get("DEMO_SITE_URL", "http://127.0.0.1:8000")
USER, PASSWORD = "demo", "xdc-demo-lab"
TEAM, TEAM_SLUG = "Demo team", "demo"
DATASETS = (("demo-videos", "folder", "."), ("demo-ucf101", "ucf101", "ucf101"), ("demo-esc50", "esc50", "esc50"))
# What the pretraining fans out to: one video and one audio benchmark under the small protocols, whose inputs are
# the small pretraining preset's (4 frames of 56 px crops, 32 mel bands).
EVALUATIONS = (("demo-ucf101", "linear", 1), ("demo-esc50", "svm", 1))
EVAL_PRESET = "small"
BASELINE_NAME = "demo: random-init baseline"
SLURM_NAME = "demo: XDC on 2 SLURM nodes"


def setup(data: Path) -> None:
    user = get_user_model().objects.filter(username=USER).first()
    if user is None:
        user = get_user_model().objects.create_user(USER, password=PASSWORD)
    team, _ = Team.objects.get_or_create(slug=TEAM_SLUG, defaults={"name": TEAM})
    Membership.objects.get_or_create(user=user, team=team)
    for name, layout, folder in DATASETS:
        if not Dataset.objects.filter(team=team, name=name).exists():
            dataset = services.register_dataset(team=team, name=name, layout=layout, path=str(data / folder),
                                                user=user)
            print(f"registered dataset {name}: {dataset.files} files of {dataset.classes} classes ({layout})")


def submit(*, slurm: bool = False) -> None:
    team = Team.objects.get(slug=TEAM_SLUG)
    datasets = {d.name: d for d in Dataset.objects.filter(team=team)}
    # Pretrained on the UCF101 layout's training split, so split 1's test videos stay unseen until evaluation.
    training = datasets["demo-ucf101"]
    config = load_config(preset="small", base={"data": {"path": training.path, "layout": "ucf101"}}).to_dict()
    evaluations = [{"dataset": datasets[name].pk, "protocol": protocol, "split": split, "preset": EVAL_PRESET}
                   for name, protocol, split in EVALUATIONS]
    user = get_user_model().objects.get(username=USER)
    [job] = services.submit_jobs(user, team, Job.Kind.PRETRAIN, [config], dataset=training, evaluations=evaluations,
                                 resources={"resource": "cpu"}, name="demo: XDC, small preset")
    # The leaderboard's baseline row: random init of the same architecture (the small protocols give it the small
    # preset's input layers) under the same protocols, queued after the pretraining (a larger number runs later).
    for name, protocol, split in EVALUATIONS:
        dataset = datasets[name]
        baseline = {"checkpoint": "random", "benchmark": dataset.benchmark, "data": dataset.path,
                    "protocol": protocol, "split": split, "preset": EVAL_PRESET,
                    "width": config["model"]["video_width"]}
        services.submit_jobs(user, team, Job.Kind.EVALUATE, [baseline], dataset=dataset,
                             resources={"resource": "cpu"}, priority=6, name=BASELINE_NAME)
    if slurm:
        tiny = load_config(preset="tiny", base={"data": {"path": training.path, "layout": "ucf101"}}).to_dict()
        services.submit_jobs(user, team, Job.Kind.PRETRAIN, [tiny], dataset=training, name=SLURM_NAME,
                             resources={"resource": "cpu", "nodes": 2, "launcher": "slurm"})
    print(job.pk)


def wait(job_id: int, timeout: float) -> int:
    """0 when the pretraining and all its evaluations succeeded, 1 otherwise."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        jobs = list(Job.objects.filter(Q(pk=job_id) | Q(parent_id=job_id) | Q(name__in=[BASELINE_NAME, SLURM_NAME]))
                    .order_by("pk"))
        line = "  ".join(f"#{j.pk} {j.kind} {j.status} {j.progress:4.0%}" for j in jobs)
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last = line
        if not any(j.is_active for j in jobs):  # a pretraining's evaluations are queued as it succeeds
            return _report(jobs)
        time.sleep(2)
    print(f"the demo's jobs did not finish within {timeout:.0f} s", file=sys.stderr)
    return 1


def _report(jobs: list[Job]) -> int:
    print()
    for job in jobs:
        result = getattr(job, "result", None) if job.kind == Job.Kind.EVALUATE else None
        encoder = f"job #{job.parent_id}'s encoder" if job.parent_id else f"{job.config.get('checkpoint')} init"
        outcome = (f"{result.benchmark} {result.protocol}, {encoder}: {result.metric_name} = {result.metric_value:.3f}"
                   if result is not None and result.metric_value is not None else job.summary)
        print(f"job #{job.pk} {job.status:9} {outcome}")
        print(f"    site {SITE_URL}/jobs/{job.pk}/   MLflow {job.mlflow_url or '-'}")
        if job.error:
            print(f"    error: {job.error}")
    return 0 if all(j.status == Job.Status.SUCCEEDED for j in jobs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup").add_argument("data", type=Path)
    commands.add_parser("submit").add_argument("--slurm", action="store_true")
    waiting = commands.add_parser("wait")
    waiting.add_argument("job", type=int)
    waiting.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.data.resolve())
    elif args.command == "submit":
        submit(slurm=args.slurm)
    else:
        return wait(args.job, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

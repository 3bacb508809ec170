"""`python manage.py bench_lab [--database-url URL] [--requests N] [--out PATH]` (`make bench-lab`): how fast the lab's
heaviest pages answer on a team of 10,000 jobs.

It creates its own PostgreSQL database (BENCH_DATABASE) on the server of --database-url, runs itself again there
(the site's settings read DATABASE_URL once, at start-up), and drops that database at the end; it touches no other.
The inner run migrates, seeds one team with 1,000 pretraining runs and 9,000 evaluations with their results (a
leaderboard of 1,000 rows by 10 columns, a tenth of its cells empty) and the stored curves of 200 runs, then times
each page with Django's test client, logged in: p50 and p95 over --requests requests after a few warm-up ones.
MLflow points at a closed port: a page that asked it would show it in its time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

BENCH_DATABASE = "xdc_bench_lab"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PRETRAININGS = 1_000
COLUMNS = (("ucf101", "linear"), ("ucf101", "finetune"), ("ucf101", "retrieval"), ("hmdb51", "linear"),
           ("hmdb51", "finetune"), ("hmdb51", "retrieval"), ("esc50", "svm"), ("esc50", "linear"),
           ("dcase", "svm"), ("dcase", "linear"))  # each run has 9 of them: 9,000 evaluations
COMPARED = 200  # runs on the compare page, their curves stored
WARM_UP = 3


class Command(BaseCommand):
    help = "Time the leaderboard, its API, the jobs page and a 200-run comparison on a seeded throw-away database."

    def add_arguments(self, parser):
        parser.add_argument("--database-url", default=DEFAULT_URL,
                            help=f"the PostgreSQL server to create (and drop) {BENCH_DATABASE} on")
        parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
        parser.add_argument("--out", default="bench-results/lab.json", help="where to write the numbers as JSON")
        parser.add_argument("--inner", action="store_true", help="(internal) seed and time in this process")

    def handle(self, *args, database_url: str, requests: int, out: str, inner: bool, **options):
        if not 1 <= requests <= 10_000:
            raise CommandError("--requests must be 1 to 10000")
        if inner:
            self._bench(requests, Path(out))
        else:
            self._around_database(database_url, requests, out)

    def _around_database(self, url: str, requests: int, out: str) -> None:
        bench_url = bench_database_url(url)
        _admin(url, f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')  # a run stopped half-way
        _admin(url, f'CREATE DATABASE "{BENCH_DATABASE}"')
        try:
            env = {**os.environ, "DATABASE_URL": bench_url, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
            command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "bench_lab",
                       "--inner", "--requests", str(requests), "--out", out]
            if subprocess.run(command, env=env).returncode:
                raise CommandError("the benchmark failed (its output is above)")
        finally:
            _admin(url, f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')

    def _bench(self, requests: int, out: Path) -> None:
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import setup_test_environment

        setup_test_environment(debug=False)  # the test client's host; no query log
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        user, compared = seed()
        with connection.cursor() as cursor:  # the statistics autovacuum would gather after such an insert
            cursor.execute("ANALYZE")
        self.stdout.write(f"seeded {PRETRAININGS * len(COLUMNS)} jobs in {time.perf_counter() - began:.1f} s")
        pages = measure(user, compared, requests)
        self.stdout.write(table(pages))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report(pages, requests), indent=2) + "\n")
        self.stdout.write(f"wrote {out}")


def bench_database_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise CommandError(f"--database-url must be a postgresql:// URL, got {url!r}")
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


def _admin(url: str, statement: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(statement)
    except psycopg.Error as exc:
        raise CommandError(f"PostgreSQL at {urlsplit(url).hostname}: {exc}") from exc


# -- seeding ---------------------------------------------------------------------------------------------------


def seed():
    """The bench team's user and the COMPARED runs whose curves are stored."""
    from django.contrib.auth import get_user_model

    from webapp.lab.models import Membership, Team

    team = Team.objects.create(name="Bench", slug="bench")
    user = get_user_model().objects.create_user("bench")
    Membership.objects.create(user=user, team=team)
    datasets = _datasets(team)
    runs = _pretrainings(team, user, datasets["clips"])
    evaluations = _evaluations(runs, datasets)
    _results(evaluations)
    _stored_curves(runs[:COMPARED])
    return user, runs[:COMPARED]


def _datasets(team) -> dict:
    from webapp.lab.models import Dataset

    layouts = {"clips": "folder", "ucf101": "ucf101", "hmdb51": "hmdb51", "esc50": "esc50", "dcase": "dcase"}
    return {name: Dataset.objects.create(team=team, name=name, layout=layout, path=f"/bench/data/{name}", files=100,
                                         classes=10, labeled=True) for name, layout in layouts.items()}


def _finished(index: int) -> dict:
    from django.utils import timezone

    end = timezone.now() - timedelta(minutes=index)
    return {"status": "succeeded", "progress": 1.0, "started_at": end - timedelta(hours=1), "finished_at": end,
            "queued_at": end - timedelta(hours=1), "worker": "bench", "attempt": 1}


def _pretrainings(team, user, dataset) -> list:
    """PRETRAININGS runs, each of its own config (variant × K × learning rate): one leaderboard row each."""
    from webapp.lab.leaderboard import board_fields
    from webapp.lab.models import Job
    from xdc.config import PretrainConfig

    jobs = []
    for i in range(PRETRAININGS):
        cfg = PretrainConfig().to_dict()
        k = (16, 32, 64, 128, 256)[i // 4 % 5]
        cfg |= {"variant": ("xdc", "sdc", "mdc", "cdc")[i % 4], "experiment": "lab-bench", "run_name": f"bench-{i}"}
        cfg["cluster"] |= {"k_video": k, "k_audio": k, "k_joint": k}
        cfg["optim"]["lr"] = round(0.001 * (1 + i // 20), 6)
        cfg["data"] |= {"path": dataset.path, "layout": dataset.layout}
        jobs.append(Job(team=team, creator=user, kind="pretrain", name=f"bench-{i}", config=cfg,
                        variant=cfg["variant"], dataset=dataset, out_dir=f"/bench/runs/{i}",
                        mlflow_run_id=f"bench-run-{i}", mlflow_experiment_id="1", **_finished(i),
                        **board_fields("pretrain", cfg, dataset=dataset)))
    return Job.objects.bulk_create(jobs, batch_size=500)


def _evaluations(runs: list, datasets: dict) -> list:
    from webapp.lab.leaderboard import board_fields
    from webapp.lab.models import Job

    jobs = []
    for i, run in enumerate(runs):
        for column, (benchmark, protocol) in enumerate(COLUMNS):
            if column == i % len(COLUMNS):
                continue  # a tenth of the board's cells are empty
            data = datasets[benchmark]
            cfg = {"checkpoint": run.final_checkpoint, "benchmark": benchmark, "data": data.path, "split": 1,
                   "protocol": protocol, "seed": 0, "preset": ""}
            jobs.append(Job(team=run.team, creator=run.creator, kind="evaluate", config=cfg, dataset=data,
                            parent=run, **_finished(i), **board_fields("evaluate", cfg, dataset=data, parent=run)))
    return Job.objects.bulk_create(jobs, batch_size=1000)


def _results(evaluations: list) -> None:
    import random

    from webapp.lab.models import Result

    rng = random.Random(0)
    rows = []
    for job in evaluations:
        protocol = job.config["protocol"]
        metric = "recall@1" if protocol == "retrieval" else "top1"
        value = round(rng.uniform(0.1, 0.9), 4)
        record = {"schema": "xdc-eval-result/1", "benchmark": job.config["benchmark"], "split": 1, "seed": 0,
                  "protocol": {"name": protocol, "version": 1, "params": {}}, "checkpoint": {"kind": "pretrained"},
                  "metrics": {metric: value}, "seconds": 60.0}
        rows.append(Result(job=job, team=job.team, record=record, benchmark=job.config["benchmark"], split="1",
                           protocol=protocol, protocol_version="1", seed=0, checkpoint_kind="pretrained",
                           metric_name=metric, metric_value=value))
    Result.objects.bulk_create(rows, batch_size=1000)


def _stored_curves(runs: list) -> None:
    """Each run's curves as charts stores them after a first read: 500 loss points, 10 rounds of cluster metrics."""
    from webapp.lab import charts
    from webapp.lab.models import JobCurves

    rows = []
    for i, run in enumerate(runs):
        loss = [[step * 20, 4.0 * math.exp(-step / (150 + i)) + 0.5] for step in range(charts.STORED_POINTS)]
        rounds = {f"cluster/{key}": [[r, 0.1 + r * 0.03 + i * 1e-4] for r in range(10)]
                  for key in ("nmi_video_audio", "stability_video", "stability_audio")}
        curves = {charts.LOSS_KEY: loss, charts.ROUND_KEY: [[r * 1000, r] for r in range(10)], **rounds}
        rows.append(JobCurves(job=run, curves=charts.stored_form(charts.tidy_curves(curves)),
                              finished_at=run.finished_at))
    JobCurves.objects.bulk_create(rows, batch_size=100)


# -- timing ----------------------------------------------------------------------------------------------------


def measure(user, compared: list, requests: int) -> dict[str, dict]:
    """{page: {url, p50_ms, p95_ms, bytes}} over `requests` timed requests each."""
    from django.test import Client

    from webapp.wsgi import settle

    settle()  # as a web process is after start-up (webapp/wsgi.py)
    client = Client()
    client.force_login(user)
    ids = ",".join(str(run.pk) for run in compared)
    pages = {"leaderboard page": "/leaderboard/", "leaderboard API": "/api/leaderboard", "jobs page": "/jobs/",
             f"compare {len(compared)} runs": f"/compare/?id_list={ids}"}
    return {name: _time(client, url, requests) for name, url in pages.items()}


def _time(client, url: str, requests: int) -> dict:
    """Wall-clock percentiles, and the same of the web process's CPU time (steadier on a shared machine, but
    without the database's own work)."""
    wall, cpu, size = [], [], 0
    for index in range(WARM_UP + requests):
        began, began_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        if index >= WARM_UP:
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        if response.status_code != 200:
            raise CommandError(f"{url[:80]} answered {response.status_code}")
        size = len(response.content)
    return {"url": url if len(url) <= 80 else url[:77] + "...", "p50_ms": _percentile(wall, 50),
            "p95_ms": _percentile(wall, 95), "cpu_p50_ms": _percentile(cpu, 50), "cpu_p95_ms": _percentile(cpu, 95),
            "bytes": size}


def _percentile(seconds: list[float], percent: int) -> float:
    """The nearest-rank percentile, in milliseconds."""
    ordered = sorted(seconds)
    return round(ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)] * 1000, 1)


def table(pages: dict[str, dict]) -> str:
    lines = [f"{'page':<20} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'cpu p95':>8} {'KiB':>6}"]
    lines += [f"{name:<20} {p['p50_ms']:>8.1f} {p['p95_ms']:>8.1f} {p['cpu_p50_ms']:>8.1f} {p['cpu_p95_ms']:>8.1f} "
              f"{p['bytes'] / 1024:>6.0f}" for name, p in pages.items()]
    return "\n".join(lines)


def report(pages: dict[str, dict], requests: int) -> dict:
    from django.db import connection

    from webapp.lab.models import Job, Result

    return {"database": f"{connection.vendor} {connection.pg_version if connection.vendor == 'postgresql' else ''}",
            "jobs": Job.objects.count(), "results": Result.objects.count(), "compared_runs": COMPARED,
            "requests_per_page": requests, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "pages": pages}

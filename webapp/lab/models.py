"""The lab's tables: teams and their members, registered datasets, jobs (pretraining and evaluation), results and
API tokens. Writes go through `webapp.lab.services`; these classes hold only fields and small derived values."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")
    data_roots = models.TextField(blank=True, help_text="folders only this team may register datasets from, one "
                                                        "absolute path a line (LAB_DATA_ROOTS are open to all teams)")
    checkpoint_roots = models.TextField(blank=True, help_text="folders of checkpoints trained outside the lab that "
                                                              "this team may evaluate, one absolute path a line")
    # The leaderboard's pinned baseline per column ({column key: row key}), chosen by the team's members.
    leaderboard_pins = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def data_root_paths(self) -> list[Path]:
        return _root_paths(self.data_roots)

    def checkpoint_root_paths(self) -> list[Path]:
        return _root_paths(self.checkpoint_roots)

    @property
    def mlflow_experiment(self) -> str:
        """One MLflow experiment per team: every job of the team logs its run there."""
        return f"lab-{self.slug}"


def _root_paths(text: str) -> list[Path]:
    """The absolute folders of a one-path-a-line field, symlinks resolved (a relative line means nothing, so none)."""
    lines = (line.strip() for line in (text or "").splitlines())
    return [Path(line).expanduser().resolve() for line in lines if line and Path(line).expanduser().is_absolute()]


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class DatasetQuerySet(models.QuerySet):
    def usable(self) -> DatasetQuerySet:
        """Datasets whose listing finished: the only ones a job may read."""
        return self.filter(status=Dataset.Status.READY)


class Dataset(models.Model):
    """A folder of media registered for a team, read with one of xdc's layout readers: at once from the shell and
    the tests, by a worker (status `listing` until then) when registered on the site or the API."""

    class Status(models.TextChoices):
        LISTING = "listing"
        READY = "ready"
        FAILED = "failed"

    objects = DatasetQuerySet.as_manager()

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    layout = models.CharField(max_length=30)
    path = models.CharField(max_length=1000)
    files = models.PositiveIntegerField(default=0)
    classes = models.PositiveIntegerField(default=0)
    labeled = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)  # why the listing failed
    listing_sent_at = models.DateTimeField(null=True, blank=True)  # when the broker took the listing's message
    listed_at = models.DateTimeField(null=True, blank=True)
    # A prepared clip store (`xdc prepare`, a prepare job): the dataset it was made from, read with the same layout.
    prepared_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="stores")

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_name_unique_in_team")]

    def __str__(self) -> str:
        return self.name

    @property
    def benchmark(self) -> str:
        """The evaluation benchmark this dataset stands for: its layout when xdc knows it as one, else 'folder'."""
        return self.layout if self.layout in ("ucf101", "hmdb51", "esc50", "dcase") else "folder"


def default_resources() -> dict:  # also named by migration 0006
    from xdc.launch import Resources

    return Resources().to_dict()


class Job(models.Model):
    class Kind(models.TextChoices):
        PRETRAIN = "pretrain"
        EVALUATE = "evaluate"
        PREPARE = "prepare"  # a dataset's clip store (xdc.data.store), registered as a dataset when it succeeds

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    DONE = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jobs")
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="jobs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True)
    config = models.JSONField()
    variant = models.CharField(max_length=20, blank=True, db_index=True)  # pretraining only, from config
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    evaluations = models.JSONField(default=list, blank=True)  # specs queued when this pretraining succeeds

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0)
    eta_seconds = models.FloatField(null=True, blank=True)
    stage = models.CharField(max_length=300, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    # The lab's and the worker's own lines (started, requeued, resumed, cancelled...), also in log_tail but kept apart
    # so that a chatty trainer's output never pushes them out of what the page shows.
    events = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=0)
    worker_losses = models.PositiveIntegerField(default=0, help_text="attempts whose worker vanished since the last retry")

    priority = models.PositiveSmallIntegerField(default=5, validators=[MinValueValidator(0), MaxValueValidator(9)],
                                                help_text="0 runs first, 9 last (the Redis broker serves low numbers first)")
    resources = models.JSONField(default=default_resources)  # xdc.launch.Resources.to_dict(), checked at submission
    out_dir = models.CharField(max_length=1000, blank=True)
    celery_task_id = models.CharField(max_length=100, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)  # when it last entered the queue
    message_sent_at = models.DateTimeField(null=True, blank=True)  # when the broker took its message (None: not yet)
    worker = models.CharField(max_length=200, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    # Where its results sit on the leaderboard (webapp.lab.leaderboard.board_fields, set at submission): the row
    # (what determines the encoder's numbers) and, for an evaluation, the column (benchmark and protocol label).
    board_row = models.CharField(max_length=80, blank=True)
    board_label = models.CharField(max_length=300, blank=True)
    board_column = models.CharField(max_length=200, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "status"]), models.Index(fields=["status", "heartbeat_at"]),
                   models.Index(fields=["team", "kind", "board_row"])]
        constraints = [models.CheckConstraint(condition=models.Q(priority__lte=9), name="job_priority_0_9")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.name}".strip()

    def get_absolute_url(self) -> str:
        return reverse("lab:job", args=[self.pk])

    @property
    def resource(self) -> str:
        return self.resources.get("resource", "gpu") if isinstance(self.resources, dict) else "gpu"

    @property
    def queue_name(self) -> str:
        """The Celery queue of the workers that run it: 'cpu'; 'gpu<g>' for a job of g GPUs, which a worker consumes
        while g of its GPUs are free (workers/gpus.py); or 'slurm' (the cluster's head-node worker submits and
        supervises) when SLURM places it."""
        spec = self.resources if isinstance(self.resources, dict) else {}
        if spec.get("launcher") == "slurm":
            return "slurm"
        return f"gpu{spec.get('gpus', 1)}" if self.resource == "gpu" else "cpu"

    @property
    def placement(self) -> str:
        """What the job runs on, in words ('cpu', '4 GPUs', '2 nodes x 8 GPUs, slurm')."""
        from xdc.errors import ConfigError
        from xdc.launch import Resources

        try:
            return Resources.from_dict(self.resources).describe()
        except ConfigError:  # a row edited by hand in the admin, or a rule tightened since it was stored
            return str(self.resources)[:200]

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def elapsed_seconds(self) -> float | None:
        """Seconds it has run: from its start to its end, or to now while it runs."""
        if self.started_at is None:
            return None
        from django.utils import timezone

        return max(((self.finished_at or timezone.now()) - self.started_at).total_seconds(), 0.0)

    @property
    def elapsed_text(self) -> str:
        return duration_text(self.elapsed_seconds)

    @property
    def eta_text(self) -> str:
        return duration_text(self.eta_seconds)

    @property
    def final_checkpoint(self) -> str:
        return f"{self.out_dir.rstrip('/')}/final.pt" if self.out_dir else ""

    @property
    def mlflow_url(self) -> str:
        if not (self.mlflow_run_id and self.mlflow_experiment_id and settings.MLFLOW_UI_URL):
            return ""
        return f"{settings.MLFLOW_UI_URL}/#/experiments/{self.mlflow_experiment_id}/runs/{self.mlflow_run_id}"

    @property
    def summary(self) -> str:
        """A one-line description: variant, data and K for pretraining; the store's settings for a prepare job;
        checkpoint, benchmark, protocol for an evaluation."""
        cfg = self.config or {}
        if self.kind == self.Kind.PREPARE:
            store = cfg.get("store", {})
            data = self.dataset.name if self.dataset else cfg.get("path", "")
            return (f"clip store of {data} · {store.get('short_side', '?')} px · "
                    f"{store.get('fps') or 'source'} fps · JPEG q{store.get('quality', '?')}")
        if self.kind == self.Kind.PRETRAIN:
            cluster = cfg.get("cluster", {})
            data = self.dataset.name if self.dataset else cfg.get("data", {}).get("path", "")
            return f"{cfg.get('variant', '?')} · {data} · K={cluster.get('k_video', '?')} · seed {cfg.get('seed', 0)}"
        checkpoint = f"job #{self.parent_id}" if self.parent_id else cfg.get("checkpoint", "?")
        return (f"{checkpoint} → {cfg.get('benchmark', '?')} {cfg.get('split', '')} "
                f"{cfg.get('protocol', '?')} · seed {cfg.get('seed', 0)}")


def duration_text(seconds: float | None) -> str:
    """'45 s', '6 min 39 s', '2 h 05 min'; '' for None."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Result(models.Model):
    """One evaluation's record as xdc wrote it (schema xdc-eval-result/1), with the columns the leaderboard needs."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="result")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="results")
    record = models.JSONField()
    benchmark = models.CharField(max_length=30)
    split = models.CharField(max_length=30, blank=True)
    protocol = models.CharField(max_length=30)
    protocol_version = models.CharField(max_length=30, blank=True)
    seed = models.IntegerField(default=0)
    checkpoint_kind = models.CharField(max_length=30, blank=True)  # random | supervised | pretrained
    metric_name = models.CharField(max_length=40)
    metric_value = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "benchmark", "protocol"])]

    def __str__(self) -> str:
        return f"{self.benchmark}/{self.protocol} {self.metric_name}={self.metric_value}"


class JobCurves(models.Model):
    """A finished job's curves as its MLflow run logged them, downsampled (`webapp.lab.charts`): pages draw finished
    runs from here without asking MLflow. Kept apart from Job so that lists of jobs do not load them."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="cached_curves")
    # {"series": {metric key: [[step, value], ...]}, "preview": the same, fewer points}, finite values only
    curves = models.JSONField()
    finished_at = models.DateTimeField(null=True)  # the job's when stored: a retried job's new run is read afresh
    stored_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"curves of job #{self.job_id}"


def _new_key() -> str:  # also named by migration 0001
    return secrets.token_hex(20)


def hash_key(key: str) -> str:
    """What the database keeps of a token: SHA-256 of its key (a 160-bit random key needs no slow hash)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    """`Authorization: Token <key>` for the JSON API and `python -m webapp.client`.

    Only a hash of the key is stored; `issue` returns the key once, to show to its owner. A token with `expires_at`
    in the past no longer authenticates."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="the key's first characters, to recognise it")
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} · {self.name or self.prefix + '…'}"

    @classmethod
    def issue(cls, user, *, name: str = "", expires_at=None) -> tuple[ApiToken, str]:
        """A new token for `user` and its key, which is not stored and cannot be shown again."""
        key = _new_key()
        token = cls.objects.create(user=user, name=name, key_hash=hash_key(key), prefix=key[:8],
                                   expires_at=expires_at)
        return token, key

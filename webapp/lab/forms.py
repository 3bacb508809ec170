"""Forms of the lab. A submission form turns its fields into one or more xdc configs (a grid), checks each with
xdc's own config classes and puts any refusal on the field it is about; the view then calls `services.submit_jobs`.

Field names are the config keys' last segments (variant, rounds, epochs_per_round, batch_size, lr, seed, …) so
a browser test can fill `[name=rounds]`; `k` sets cluster.k_video, k_audio and k_joint together.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from django import forms

from webapp.lab import services
from webapp.lab.models import Dataset, Job, Team
from xdc.config import PRESETS, deep_merge, parse_override
from xdc.errors import ConfigError
from xdc.evaluation import PRESETS as EVAL_PRESETS

PRESET_CHOICES = [("tiny", "tiny: a 2-round smoke run (seconds on CPU)"), ("small", "small: the demo's budget"),
                  ("full", "full: the paper-style defaults")]
EVAL_PRESET_CHOICES = list(EVAL_PRESETS.items())
PROTOCOLS = [("linear", "linear"), ("finetune", "finetune"), ("retrieval", "retrieval"), ("svm", "svm")]
# Which form field shows an error about a config key.
PRETRAIN_FIELDS = {
    "variant": "variant", "rounds": "rounds", "epochs_per_round": "epochs_per_round", "batch_size": "batch_size",
    "seed": "seed", "optim.lr": "lr", "data.clip_frames": "clip_frames", "data.fps": "fps",
    "data.crop_size": "crop_size", "data.resize_short": "crop_size", "cluster.k_video": "k",
    "cluster.k_audio": "k", "cluster.k_joint": "k", "data.path": "dataset", "data.layout": "dataset",
}
EVALUATE_FIELDS = {"checkpoint": "checkpoint", "benchmark": "dataset", "data": "dataset", "split": "split",
                   "protocol": "protocol", "seed": "seed", "preset": "preset", "supervised_data": "supervised_data"}


def parse_int_list(text: str, *, name: str, minimum: int | None = None) -> list[int]:
    """'1-3, 7' -> [1, 2, 3, 7]; ValidationError naming the bad item."""
    values: list[int] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        low, dash, high = item.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash and low else [int(item)]
        except ValueError:
            raise forms.ValidationError(f"{name}: {item!r} is not an integer or a range like 1-3") from None
        if len(span) > 100:
            raise forms.ValidationError(f"{name}: the range {item} is too long")
        values.extend(span)
    if minimum is not None and any(v < minimum for v in values):
        raise forms.ValidationError(f"{name}: every value must be at least {minimum}")
    return list(dict.fromkeys(values))


def add_lab_error(form: forms.Form, exc: services.LabError, fields: dict[str, str] | None = None) -> None:
    """Put a service's refusal on the form: 'config.cluster.k_video' lands on the field shown for that key."""
    fields = fields or {}
    placed = False
    for key, messages in exc.errors.items():
        target = key.removeprefix("config.")
        target = fields.get(target, target)
        if target in form.fields and target not in form.errors:
            for message in messages:
                form.add_error(target, message)
            placed = True
    if not placed:
        form.add_error(None, "; ".join(m for ms in exc.errors.values() for m in ms))


class TeamFormMixin:
    def _init_team(self, user, team: Team | None) -> None:
        teams = Team.objects.filter(memberships__user=user)
        self.fields["team"].queryset = teams
        self.fields["team"].initial = team
        if teams.count() <= 1:
            self.fields["team"].widget = forms.HiddenInput()

    def clean_team(self):
        team = self.cleaned_data.get("team")
        if team is None:
            raise forms.ValidationError("choose a team")
        return team

    @staticmethod
    def _expand(base: dict[str, Any], axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
        try:
            return services.expand_grid(base, axes)
        except services.LabError as exc:
            raise forms.ValidationError(exc.errors["grid"]) from None

    def _check_datasets_in_team(self, cleaned: dict[str, Any], *names: str) -> None:
        """The dataset choices list every team of the user; a job may only use datasets of the team it runs in."""
        team = cleaned.get("team")
        for name in names:
            dataset = cleaned.get(name)
            if team is not None and dataset is not None and dataset.team_id != team.pk:
                self.add_error(name, f"{dataset.name} belongs to {dataset.team}, not to {team}")


class MetaFields(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False)
    name = forms.CharField(max_length=150, required=False, help_text="optional label")
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="0 runs first, 9 last")
    resource = forms.ChoiceField(choices=Job.Resource.choices, initial=Job.Resource.GPU)
    gpus = forms.IntegerField(min_value=0, max_value=64, initial=1, label="GPUs")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("resource") == Job.Resource.GPU and cleaned.get("gpus") == 0:
            self.add_error("gpus", "a GPU job needs at least one GPU")
        return cleaned

    def meta(self) -> dict[str, Any]:
        return {k: self.cleaned_data[k] for k in ("priority", "resource", "gpus")} | {
            "name": self.cleaned_data.get("name", "")}


class PretrainForm(TeamFormMixin, MetaFields):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), help_text="training data")
    preset = forms.ChoiceField(choices=PRESET_CHOICES, initial="tiny",
                               help_text="starting values; the fields below override them when filled")
    variant = forms.MultipleChoiceField(choices=(), widget=forms.CheckboxSelectMultiple, initial=["xdc"],
                                        help_text="one job per variant (grid)")
    k = forms.CharField(required=False, label="K (clusters)", help_text="comma list, e.g. 64,128 (grid)")
    seed = forms.CharField(initial="0", help_text="comma list or range, e.g. 1-3 (grid)")
    rounds = forms.IntegerField(required=False, min_value=1)
    epochs_per_round = forms.IntegerField(required=False, min_value=1)
    batch_size = forms.IntegerField(required=False, min_value=1)
    lr = forms.FloatField(required=False, min_value=0, label="learning rate")
    clip_frames = forms.IntegerField(required=False, min_value=1, help_text="frames per clip")
    fps = forms.FloatField(required=False, min_value=0.1)
    crop_size = forms.IntegerField(required=False, min_value=8, help_text="pixels")
    overrides = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                help_text="more config keys, one key=value a line (optim.weight_decay=0.0005)")
    eval_datasets = forms.ModelMultipleChoiceField(queryset=Dataset.objects.none(), required=False,
                                                   widget=forms.CheckboxSelectMultiple,
                                                   label="evaluate on", help_text="queued when pretraining succeeds")
    eval_protocols = forms.MultipleChoiceField(choices=PROTOCOLS, required=False,
                                               widget=forms.CheckboxSelectMultiple, label="with protocols")
    eval_splits = forms.CharField(required=False, initial="1", label="splits", help_text="e.g. 1-3")
    eval_preset = forms.ChoiceField(choices=EVAL_PRESET_CHOICES, required=False, label="eval preset")
    base_config = forms.CharField(required=False, widget=forms.HiddenInput())

    def __init__(self, *args, user, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from xdc.variants import VARIANTS

        self._init_team(user, team)
        datasets = Dataset.objects.filter(team__memberships__user=user)
        self.fields["dataset"].queryset = datasets
        self.fields["eval_datasets"].queryset = datasets
        self.fields["variant"].choices = [(name, name) for name in VARIANTS]
        if self.data.get("base_config") or self.initial.get("base_config"):
            self.fields["preset"].choices = [("clone", "as the cloned job"), *PRESET_CHOICES]
        self.configs: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []

    @classmethod
    def initial_from(cls, job: Job) -> dict[str, Any]:
        """Prefill from a job's stored config (clone-with-edits); untouched keys come along through base_config."""
        cfg = job.config
        initial = {"team": job.team, "dataset": job.dataset, "preset": "clone", "variant": [cfg.get("variant")],
                   "k": str(cfg["cluster"]["k_video"]), "seed": str(cfg.get("seed", 0)), "rounds": cfg["rounds"],
                   "epochs_per_round": cfg["epochs_per_round"], "batch_size": cfg["batch_size"],
                   "lr": cfg["optim"]["lr"], "clip_frames": cfg["data"]["clip_frames"], "fps": cfg["data"]["fps"],
                   "crop_size": cfg["data"]["crop_size"], "priority": job.priority, "resource": job.resource,
                   "gpus": job.gpus, "base_config": json.dumps(cfg)}
        specs = job.evaluations or []
        if specs:
            initial["eval_datasets"] = sorted({s["dataset"] for s in specs})
            initial["eval_protocols"] = sorted({s["protocol"] for s in specs})
            initial["eval_splits"] = ",".join(str(s) for s in sorted({s["split"] for s in specs}))
            initial["eval_preset"] = specs[0].get("preset", "")
        return initial

    def clean_k(self):
        return parse_int_list(self.cleaned_data["k"], name="K", minimum=2)

    def clean_seed(self):
        seeds = parse_int_list(self.cleaned_data["seed"], name="seed", minimum=0)
        if not seeds:
            raise forms.ValidationError("give at least one seed")
        return seeds

    def clean_eval_splits(self):
        return parse_int_list(self.cleaned_data["eval_splits"], name="splits", minimum=0) or [1]

    def clean_overrides(self):
        raw: dict[str, Any] = {}
        for line in self.cleaned_data["overrides"].splitlines():
            if line.strip() and not line.strip().startswith("#"):
                try:
                    raw = deep_merge(raw, parse_override(line.strip()))
                except ConfigError as exc:
                    raise forms.ValidationError(str(exc)) from None
        return raw

    def clean_base_config(self):
        text = self.cleaned_data["base_config"]
        if not text:
            return None
        try:
            base = json.loads(text)
        except json.JSONDecodeError:
            raise forms.ValidationError("the cloned config is not valid JSON") from None
        if not isinstance(base, dict):
            raise forms.ValidationError("the cloned config must be a JSON object")
        return base

    def clean(self):
        cleaned = super().clean()
        self._check_datasets_in_team(cleaned, "dataset")
        if self.errors:
            return cleaned
        base = self._base(cleaned)
        axes = {"variant": cleaned["variant"], "cluster.k": cleaned["k"], "seed": cleaned["seed"]}
        configs = self._expand(base, axes)
        team = cleaned["team"]
        try:
            self.configs = [services.validate_config(Job.Kind.PRETRAIN, {**cfg, "experiment": team.mlflow_experiment})
                            for cfg in configs]
        except ConfigError as exc:
            self._config_error(exc)
            return cleaned
        self._evaluations(cleaned)
        return cleaned

    def _base(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        from xdc.data.layouts import LAYOUTS

        preset = cleaned["preset"]
        base = cleaned.get("base_config") if preset == "clone" and cleaned.get("base_config") else {}
        if preset in PRESETS:
            base = deep_merge(base, PRESETS[preset])
        dataset = cleaned["dataset"]
        reader = LAYOUTS.get(dataset.layout)
        split = "train" if reader is None or "train" in reader.splits else "all"
        base = deep_merge(base, {"data": {"path": dataset.path, "layout": dataset.layout, "split": split}})
        scalars = {"rounds": "rounds", "epochs_per_round": "epochs_per_round", "batch_size": "batch_size",
                   "lr": "optim.lr", "clip_frames": "data.clip_frames", "fps": "data.fps",
                   "crop_size": "data.crop_size"}
        for field_name, key in scalars.items():
            if cleaned.get(field_name) is not None:
                base = services.set_dotted(base, key, cleaned[field_name])
        if cleaned.get("crop_size") and base.get("data", {}).get("resize_short", 128) < cleaned["crop_size"]:
            base = services.set_dotted(base, "data.resize_short", cleaned["crop_size"])
        base = deep_merge(base, cleaned.get("overrides") or {})
        base.pop("run_name", None)
        return base

    def _config_error(self, exc: ConfigError) -> None:
        key = services.config_error_key(str(exc))
        field_name = PRETRAIN_FIELDS.get(key or "", "overrides" if self.cleaned_data.get("overrides") else None)
        self.add_error(field_name if field_name in self.fields else None, str(exc))

    def _evaluations(self, cleaned: dict[str, Any]) -> None:
        datasets, protocols = cleaned.get("eval_datasets") or [], cleaned.get("eval_protocols") or []
        if bool(datasets) != bool(protocols):
            self.add_error("eval_protocols" if datasets else "eval_datasets",
                           "choose both datasets and protocols to queue evaluations")
            return
        self.evaluations = [{"dataset": d.pk, "protocol": p, "split": s, "preset": cleaned.get("eval_preset", ""),
                             "seed": 0}
                            for d, p, s in itertools.product(datasets, protocols, cleaned["eval_splits"])]
        try:
            services.check_evaluations(self.evaluations, cleaned["team"])
        except services.LabError as exc:
            self.add_error("eval_datasets", " ".join(exc.errors.get("evaluations", [str(exc)])))


class EvaluateForm(TeamFormMixin, MetaFields):
    checkpoint = forms.ChoiceField(choices=(), help_text="a finished pretraining job, or a baseline")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="benchmark dataset")
    split = forms.CharField(initial="1", help_text="split / fold numbers, e.g. 1 or 1-3 (grid)")
    protocol = forms.MultipleChoiceField(choices=PROTOCOLS, widget=forms.CheckboxSelectMultiple,
                                         initial=["linear"], help_text="one job per protocol (grid)")
    seed = forms.CharField(initial="0", help_text="comma list or range (grid)")
    preset = forms.ChoiceField(choices=EVAL_PRESET_CHOICES, required=False)
    supervised_data = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False,
                                             help_text="labelled data for the supervised baseline")

    def __init__(self, *args, user, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_team(user, team)
        datasets = Dataset.objects.filter(team__memberships__user=user)
        self.fields["dataset"].queryset = datasets
        self.fields["supervised_data"].queryset = datasets
        finished = Job.objects.filter(team__memberships__user=user, kind=Job.Kind.PRETRAIN,
                                      status=Job.Status.SUCCEEDED).select_related("dataset")[:200]
        self.fields["checkpoint"].choices = [("random", "baseline: random init"),
                                             ("supervised", "baseline: supervised")] + [
            (f"job:{job.pk}", f"job #{job.pk}: {job.summary}") for job in finished]
        self.parent: Job | None = None
        self.configs: list[dict[str, Any]] = []

    @classmethod
    def initial_from(cls, job: Job) -> dict[str, Any]:
        cfg = job.config
        checkpoint = f"job:{job.parent_id}" if job.parent_id else cfg.get("checkpoint", "random")
        return {"team": job.team, "checkpoint": checkpoint, "dataset": job.dataset, "split": str(cfg.get("split", 1)),
                "protocol": [cfg.get("protocol")], "seed": str(cfg.get("seed", 0)), "preset": cfg.get("preset", ""),
                "priority": job.priority, "resource": job.resource, "gpus": job.gpus}

    def clean_split(self):
        return parse_int_list(self.cleaned_data["split"], name="split", minimum=0) or [1]

    def clean_seed(self):
        return parse_int_list(self.cleaned_data["seed"], name="seed", minimum=0) or [0]

    def clean(self):
        cleaned = super().clean()
        self._check_datasets_in_team(cleaned, "dataset", "supervised_data")
        if self.errors:
            return cleaned
        base = self._base(cleaned)
        if base is None:
            return cleaned
        configs = self._expand(base, {"protocol": cleaned["protocol"], "split": cleaned["split"],
                                      "seed": cleaned["seed"]})
        team = cleaned["team"]
        try:
            self.configs = [services.validate_config(Job.Kind.EVALUATE, {**cfg, "experiment": team.mlflow_experiment})
                            for cfg in configs]
        except ConfigError as exc:
            key = services.config_error_key(str(exc)) or ""
            self.add_error(EVALUATE_FIELDS.get(key.split(".")[0]), str(exc))
        return cleaned

    def _base(self, cleaned: dict[str, Any]) -> dict[str, Any] | None:
        choice, dataset = cleaned["checkpoint"], cleaned["dataset"]
        base = {"benchmark": dataset.benchmark, "data": dataset.path, "preset": cleaned.get("preset", "")}
        if choice.startswith("job:"):
            self.parent = Job.objects.filter(pk=int(choice[4:]), team=cleaned["team"]).first()
            if self.parent is None:
                self.add_error("checkpoint", "that pretraining job is not in the chosen team")
                return None
            base |= {"checkpoint": self.parent.final_checkpoint, "pretrain_run_id": self.parent.mlflow_run_id}
        else:
            base["checkpoint"] = choice
        if choice == "supervised":
            if cleaned.get("supervised_data") is None:
                self.add_error("supervised_data", "the supervised baseline needs labelled training data")
                return None
            base["supervised_data"] = cleaned["supervised_data"].path
        return base


class DatasetForm(TeamFormMixin, forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False)
    name = forms.CharField(max_length=100)
    layout = forms.ChoiceField(choices=())
    path = forms.CharField(max_length=1000, help_text="absolute path on the lab's machines")

    def __init__(self, *args, user, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from xdc.data.layouts import LAYOUTS

        self._init_team(user, team)
        self.fields["layout"].choices = [(name, name) for name in LAYOUTS]

"""Forms of the lab. A submission form turns its fields into one or more raw xdc configs (a grid); the view hands
them to `services.submit_jobs`, which validates them once against xdc's config classes, and the form shows any
refusal on the field of the key it is about (`add_lab_error`). Forms parse and display; they hold no bounds of
their own: a config field's input takes its bounds, help and choices from the field's declaration in xdc.

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
from xdc.config import PRESETS, PrepareConfig, PretrainConfig, deep_merge, field_specs, flatten, parse_override
from xdc.errors import ConfigError
from xdc.evaluation import PRESETS as EVAL_PRESETS
from xdc.launch import RESOURCE_KEYS, Resources

PRESET_CHOICES = [("tiny", "tiny: a 2-round smoke run (20 s on 2 CPU cores for 480 short videos)"),
                  ("small", "small: the demo's budget"), ("full", "full: the paper-style defaults")]
EVAL_PRESET_CHOICES = list(EVAL_PRESETS.items())
SAME_PRESET = "same"  # the evaluations' preset follows the pretraining's (tiny, small; full for full)
PROTOCOLS = [("linear", "linear"), ("finetune", "finetune"), ("retrieval", "retrieval"), ("svm", "svm")]
EVAL_FIELD = "eval_"  # + a dataset's id: the protocols queued on that dataset when the pretraining succeeds
# The one map from a pretraining form's fields to the config keys they set (a grid axis for variant, k, seed;
# 'cluster.k' is services.GRID_ALIASES' k_video, k_audio and k_joint). It builds the config, prefills a clone and
# places the service's errors; SCALARS are the single-valued ones, which override the preset when filled.
PRETRAIN_KEYS = {"variant": "variant", "k": "cluster.k", "seed": "seed", "rounds": "rounds",
                 "epochs_per_round": "epochs_per_round", "batch_size": "batch_size", "lr": "optim.lr",
                 "clip_frames": "data.clip_frames", "fps": "data.fps", "crop_size": "data.crop_size",
                 "audio_seconds": "data.audio_seconds", "dataset": "data.path", "overrides": ""}
SCALARS = ("rounds", "epochs_per_round", "batch_size", "lr", "clip_frames", "fps", "crop_size", "audio_seconds")
# Keys the form sets through another field: the dataset fills the layout and split, a crop widens the short side.
PRETRAIN_ALSO = {"data.layout": "dataset", "data.split": "dataset", "data.fold": "dataset",
                 "data.resize_short": "crop_size", "evaluations": "eval_splits"}
EVALUATE_KEYS = {"checkpoint": "checkpoint", "dataset": "data", "split": "split", "protocol": "protocol",
                 "seed": "seed", "preset": "preset", "supervised_data": "supervised_data"}
EVALUATE_ALSO = {"benchmark": "dataset", "parent": "checkpoint"}


def config_input(key: str, *, of: type = PretrainConfig, required: bool = False, **kwargs) -> forms.Field:
    """A form input for a key of a typed config (the pretraining config unless `of` names another, e.g. the job's
    Resources): its type, bounds (as the browser's min/max hints; the service validates), choices and help text all
    come from the key's declaration in xdc."""
    spec = field_specs(of)[key]
    attrs = {name: value for name, value in (("min", spec.low), ("max", spec.high)) if value is not None}
    kwargs.setdefault("help_text", spec.help)
    if spec.choices is not None:
        return forms.ChoiceField(required=required, choices=[(c, c) for c in spec.choices], initial=spec.default,
                                 **kwargs)
    if spec.type is int:
        return forms.IntegerField(required=required, widget=forms.NumberInput(attrs=attrs), **kwargs)
    if spec.type is float:
        return forms.FloatField(required=required, widget=forms.NumberInput(attrs={**attrs, "step": "any"}), **kwargs)
    if spec.type is str:
        return forms.CharField(required=required, max_length=spec.longest, **kwargs)
    raise TypeError(f"no form input for {key} of type {spec.type.__name__}")  # pragma: no cover - a coding error


def field_for(key: str, keys: dict[str, str], also: dict[str, str]) -> str | None:
    """The form field that shows an error about config key `key` ('cluster.k_audio' -> 'k')."""
    for name, target in keys.items():
        if target and (key == target or key in services.GRID_ALIASES.get(target, ())):
            return name
    return also.get(key)


def parse_int_list(text: str, *, name: str) -> list[int]:
    """'1-3, 7' -> [1, 2, 3, 7]; ValidationError naming the bad item. The values' bounds are the service's to
    check."""
    values: list[int] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        low, dash, high = item.partition("-")
        try:
            if not item.isascii():
                raise ValueError(item)  # int() reads other scripts' digits; a config takes ASCII ones
            span = range(int(low), int(high) + 1) if dash and low else [int(item)]
        except ValueError:
            raise forms.ValidationError(f"{name}: {item!r} is not an integer or a range like 1-3") from None
        if len(span) > 100:
            raise forms.ValidationError(f"{name}: the range {item} is too long")
        values.extend(span)
    return list(dict.fromkeys(values))


def add_lab_error(form: forms.Form, exc: services.LabError) -> None:
    """Put a service's refusal on the form: 'config.cluster.k_video' lands on the field shown for that key (the
    form's `field_for`), anything else on the field of its name or, failing both, above the form."""
    placed = False
    for key, messages in exc.errors.items():
        if key.startswith("config.") and hasattr(form, "field_for"):
            target = form.field_for(key.removeprefix("config."))
        else:
            target = getattr(form, "ALSO", {}).get(key, key)
        if target in form.fields and target not in form.errors:
            for message in messages:
                form.add_error(target, message)
            placed = True
    if not placed:
        form.add_error(None, "; ".join(m for ms in exc.errors.values() for m in ms))


class TeamFormMixin:
    KEYS: dict[str, str] = {}  # form field -> the config key it sets
    ALSO: dict[str, str] = {}  # other keys (and service error names) -> the field that shows their errors
    KIND = ""

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

    def field_for(self, key: str) -> str | None:
        """The field that shows an error about config key `key`; a key set only through the overrides box shows
        there."""
        name = field_for(key, self.KEYS, self.ALSO)
        if name is None and self.cleaned_data.get("overrides"):
            return "overrides"
        return name

    def _expand(self, base: dict[str, Any], axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
        return services.expand_grid(base, axes, kind=self.KIND)

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
    resource = config_input("resource", of=Resources, required=True)
    gpus = config_input("gpus", of=Resources, label="GPUs per node",
                        help_text="empty: 1 for a GPU job, none for a CPU job")
    nodes = config_input("nodes", of=Resources, help_text="empty: 1; more than one needs the slurm launcher")
    launcher = config_input("launcher", of=Resources)
    partition = config_input("partition", of=Resources)
    cpu_ranks = config_input("cpu_ranks", of=Resources, label="CPU ranks per node",
                             help_text="empty: 1; gloo processes of a CPU job")

    def meta(self) -> dict[str, Any]:
        """The submission's priority, name and resources (the service checks the resources; an empty number box
        leaves the field's default)."""
        resources = {name: self.cleaned_data[name] for name in RESOURCE_KEYS
                     if self.cleaned_data.get(name) not in (None, "")}
        return {"priority": self.cleaned_data["priority"], "name": self.cleaned_data.get("name", ""),
                "resources": resources}

    @staticmethod
    def initial_meta(job: Job) -> dict[str, Any]:
        return {"team": job.team, "priority": job.priority, **job.resources}


class PretrainForm(TeamFormMixin, MetaFields):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), help_text="training data")
    preset = forms.ChoiceField(choices=PRESET_CHOICES, initial="tiny",
                               help_text="starting values; the fields below override them when filled")
    variant = forms.MultipleChoiceField(choices=(), widget=forms.CheckboxSelectMultiple, initial=["xdc"],
                                        help_text="one job per variant (grid)")
    k = forms.CharField(required=False, label="K (clusters)", help_text="comma list, e.g. 64,128 (grid)")
    seed = forms.CharField(initial="0", help_text="comma list or range, e.g. 1-3 (grid)")
    rounds = config_input("rounds")
    epochs_per_round = config_input("epochs_per_round")
    batch_size = config_input("batch_size")
    lr = config_input("optim.lr", label="learning rate")
    clip_frames = config_input("data.clip_frames")
    fps = config_input("data.fps")
    crop_size = config_input("data.crop_size")
    audio_seconds = config_input("data.audio_seconds", label="audio seconds")
    overrides = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                help_text="more config keys, one key=value a line (optim.weight_decay=0.0005)")
    eval_splits = forms.CharField(required=False, initial="1", label="splits", help_text="e.g. 1-3, for every "
                                                                                         "evaluation above")
    eval_preset = forms.ChoiceField(choices=[(SAME_PRESET, "the pretraining's preset"), *EVAL_PRESET_CHOICES],
                                    required=False, initial=SAME_PRESET, label="evaluation preset")
    base_config = forms.CharField(required=False, widget=forms.HiddenInput())
    KEYS, ALSO, KIND = PRETRAIN_KEYS, PRETRAIN_ALSO, Job.Kind.PRETRAIN

    def __init__(self, *args, user, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from xdc.variants import VARIANTS

        self._init_team(user, team)
        datasets = Dataset.objects.usable().filter(team__memberships__user=user)
        self.fields["dataset"].queryset = datasets
        self._add_evaluation_fields(datasets)
        self.fields["variant"].choices = [(name, name) for name in VARIANTS]
        if self.data.get("base_config") or self.initial.get("base_config"):
            self.fields["preset"].choices = [("clone", "as the cloned job"), *PRESET_CHOICES]
        self.configs: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []

    def _add_evaluation_fields(self, datasets) -> None:
        """One row of protocol boxes per dataset, offering the protocols its benchmark takes (svm for sound,
        linear, finetune and retrieval for video), so a pairing such as UCF101 linear + ESC-50 svm is one form."""
        from xdc.evaluation.protocols import AUDIO_BENCHMARKS

        for dataset in datasets:
            audio = dataset.benchmark in AUDIO_BENCHMARKS
            offered = [(name, label) for name, label in PROTOCOLS if (name == "svm") == audio]
            self.fields[f"{EVAL_FIELD}{dataset.pk}"] = forms.MultipleChoiceField(
                choices=offered, required=False, widget=forms.CheckboxSelectMultiple,
                label=f"{dataset.name} ({dataset.benchmark})")

    @property
    def evaluation_fields(self) -> list:
        return [self[name] for name in self.fields if name.startswith(EVAL_FIELD) and name[len(EVAL_FIELD):].isdigit()]

    @classmethod
    def initial_from(cls, job: Job) -> dict[str, Any]:
        """Prefill from a job's stored config (clone-with-edits); untouched keys come along through base_config."""
        cfg = flatten(job.config)
        initial = {"team": job.team, "dataset": job.dataset, "preset": "clone", "variant": [cfg.get("variant")],
                   "k": str(cfg.get("cluster.k_video", "")), "seed": str(cfg.get("seed", 0)),
                   "base_config": json.dumps(job.config), **cls.initial_meta(job)}
        initial |= {name: cfg.get(PRETRAIN_KEYS[name]) for name in SCALARS}
        specs = job.evaluations or []
        for spec in specs:
            initial.setdefault(f"{EVAL_FIELD}{spec['dataset']}", []).append(spec["protocol"])
        if specs:
            initial["eval_splits"] = ",".join(str(s) for s in sorted({s["split"] for s in specs}))
            initial["eval_preset"] = specs[0].get("preset", "")
        return initial

    def clean_k(self):
        return parse_int_list(self.cleaned_data["k"], name="K")

    def clean_seed(self):
        seeds = parse_int_list(self.cleaned_data["seed"], name="seed")
        if not seeds:
            raise forms.ValidationError("give at least one seed")
        return seeds

    def clean_eval_splits(self):
        return parse_int_list(self.cleaned_data["eval_splits"], name="splits") or [1]

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
        """Everything that can be checked is, so one submit shows every problem: the fields, then the grid and the
        evaluations from whatever fields parsed."""
        cleaned = super().clean()
        self._check_datasets_in_team(cleaned, "dataset")
        self._evaluations(cleaned)
        if any(name not in cleaned for name in ("dataset", "preset", "variant", "k", "seed")):
            return cleaned  # no base config to build
        axes = {PRETRAIN_KEYS[name]: cleaned[name] for name in ("variant", "k", "seed")}
        try:
            self.configs = self._expand(self._base(cleaned), axes)
        except services.LabError as exc:  # a grid too large, or an override that is not a mapping where one goes
            add_lab_error(self, exc)
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
        for name in SCALARS:
            if cleaned.get(name) is not None:
                base = services.set_dotted(base, PRETRAIN_KEYS[name], cleaned[name])
        if cleaned.get("crop_size") and base.get("data", {}).get("resize_short", 128) < cleaned["crop_size"]:
            base = services.set_dotted(base, "data.resize_short", cleaned["crop_size"])
        base = deep_merge(base, cleaned.get("overrides") or {})
        base.pop("run_name", None)  # the new job's own, and the team's experiment (a clone may cross teams)
        base.pop("experiment", None)
        return base

    def _evaluations(self, cleaned: dict[str, Any]) -> None:
        """The specs of the ticked (dataset, protocol) boxes × splits; the preset follows the pretraining's unless
        one is chosen."""
        preset = cleaned.get("eval_preset") or SAME_PRESET
        if preset == SAME_PRESET:
            preset = cleaned.get("preset") if cleaned.get("preset") in EVAL_PRESETS else ""
        chosen = [(int(field.name[len(EVAL_FIELD):]), protocol) for field in self.evaluation_fields
                  for protocol in cleaned.get(field.name) or []]
        self.evaluations = [services.EvaluationSpec(dataset=d, protocol=p, split=s, preset=preset).to_dict()
                            for (d, p), s in itertools.product(chosen, cleaned.get("eval_splits") or [])]


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
    KEYS, ALSO, KIND = EVALUATE_KEYS, EVALUATE_ALSO, Job.Kind.EVALUATE

    def __init__(self, *args, user, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_team(user, team)
        datasets = Dataset.objects.usable().filter(team__memberships__user=user)
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
                **cls.initial_meta(job)}

    def clean_split(self):
        return parse_int_list(self.cleaned_data["split"], name="split") or [1]

    def clean_seed(self):
        return parse_int_list(self.cleaned_data["seed"], name="seed") or [0]

    def clean(self):
        cleaned = super().clean()
        self._check_datasets_in_team(cleaned, "dataset", "supervised_data")
        if self.errors:
            return cleaned
        base = self._base(cleaned)
        if base is None:
            return cleaned
        try:
            self.configs = self._expand(base, {name: cleaned[name] for name in ("protocol", "split", "seed")})
        except services.LabError as exc:
            add_lab_error(self, exc)
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


# The prepare form's fields and the config keys they set.
PREPARE_KEYS = {"short_side": "store.short_side", "fps": "store.fps", "quality": "store.quality",
                "sample_rate": "store.sample_rate", "workers": "workers"}


class PrepareForm(forms.Form):
    """A prepare job for the dataset whose page shows it: the clip store's settings, declared on xdc's PrepareConfig
    (empty: its default)."""

    short_side = config_input("store.short_side", of=PrepareConfig, label="short side (px)")
    fps = config_input("store.fps", of=PrepareConfig, label="frames per second")
    quality = config_input("store.quality", of=PrepareConfig, label="JPEG quality")
    sample_rate = config_input("store.sample_rate", of=PrepareConfig, label="sample rate (Hz)")
    workers = config_input("workers", of=PrepareConfig, label="processes")
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="0 runs first, 9 last")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        specs = field_specs(PrepareConfig)
        for name, key in PREPARE_KEYS.items():  # an empty field means the declared default: show it
            self.fields[name].widget.attrs["placeholder"] = f"{specs[key].default:g}"

    def field_for(self, key: str) -> str | None:
        return next((name for name, target in PREPARE_KEYS.items() if target == key), None)

    def config(self) -> dict[str, Any]:
        """The raw PrepareConfig of the filled fields; the dataset fills path and layout."""
        raw: dict[str, Any] = {}
        for name, key in PREPARE_KEYS.items():
            if self.cleaned_data.get(name) is not None:
                raw = services.set_dotted(raw, key, self.cleaned_data[name])
        return raw

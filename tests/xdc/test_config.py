"""The typed pretraining config: defaults, presets, files and overrides in, strict errors naming the key out."""

import dataclasses
import json

import pytest

from xdc.config import (
    PRESETS,
    ClusterConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    load_config,
    parse_override,
    read_config_file,
)
from xdc.errors import ConfigError


SECTIONS = {"data": DataConfig, "model": ModelConfig, "cluster": ClusterConfig, "optim": OptimConfig}


# ---------------------------------------------------------------------------------------------------------
# defaults and presets


def test_it_validates_the_defaults():
    cfg = PretrainConfig()
    assert cfg.validate() is cfg
    assert load_config() == cfg


def test_defaults_derive_clip_length_and_epoch_count():
    cfg = PretrainConfig()
    assert cfg.data.clip_seconds == pytest.approx(cfg.data.clip_frames / cfg.data.fps)
    assert cfg.total_epochs == cfg.rounds * cfg.epochs_per_round


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_it_loads_every_preset(preset):
    cfg = load_config(preset=preset)
    assert cfg.rounds == PRESETS[preset]["rounds"]
    assert cfg.model.video_width == PRESETS[preset]["model"]["video_width"]
    assert cfg.cluster.k_video == PRESETS[preset]["cluster"]["k_video"]
    # A preset changes only what it names; the rest keeps its default.
    assert cfg.data.sample_rate == DataConfig().sample_rate
    assert cfg.variant == "xdc"


def test_it_refuses_an_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(preset="huge")


def test_it_refuses_an_unknown_variant():
    with pytest.raises(ConfigError, match="variant must be one of xdc.*got 'zdc'"):
        load_config(overrides=["variant=zdc"])


@pytest.mark.parametrize("variant", ["xdc", "sdc", "mdc", "cdc", "supervised"])
def test_it_accepts_every_registered_variant(variant):
    assert load_config(overrides=[f"variant={variant}"]).variant == variant


# ---------------------------------------------------------------------------------------------------------
# overrides


def test_it_types_override_values_against_the_dataclass():
    cfg = load_config(overrides=[
        "cluster.k_video=128", "optim.lr=0.5", "data.fps=10", "cluster.whiten=false", "channels_last=true",
        "run_name=first try", "data.path=/tmp/videos",
    ])
    assert cfg.cluster.k_video == 128 and type(cfg.cluster.k_video) is int
    assert cfg.optim.lr == 0.5 and type(cfg.optim.lr) is float
    assert cfg.data.fps == 10.0 and type(cfg.data.fps) is float
    assert cfg.cluster.whiten is False
    assert cfg.channels_last is True
    assert cfg.run_name == "first try"
    assert cfg.data.path == "/tmp/videos"


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("True", True), ("FALSE", False), ("1", True), ("0", False),
    ("yes", True), ("no", False), ("on", True), ("off", False), (" true ", True),
])
def test_it_parses_boolean_words(text, expected):
    assert load_config(overrides=[f"cluster.uniform_sampling={text}"]).cluster.uniform_sampling is expected


def test_later_overrides_win_over_the_preset_and_earlier_overrides():
    cfg = load_config(preset="tiny", overrides=["batch_size=4", "cluster.k_audio=6", "cluster.k_audio=7"])
    assert cfg.batch_size == 4
    assert cfg.cluster.k_audio == 7
    assert cfg.cluster.k_video == PRESETS["tiny"]["cluster"]["k_video"]  # untouched sibling survives the merge


def test_parse_override_nests_dotted_keys_and_keeps_the_text():
    assert parse_override("cluster.k_video=128") == {"cluster": {"k_video": "128"}}
    assert parse_override("run_name=a=b") == {"run_name": "a=b"}  # only the first '=' separates


@pytest.mark.parametrize("item", ["cluster.k_video", "=3", " =3", ""])
def test_it_refuses_an_override_without_key_and_value(item):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=[item])


# ---------------------------------------------------------------------------------------------------------
# strictness: unknown keys, wrong types, out-of-range values


@pytest.mark.parametrize("override, key", [
    ("learning_rate=0.1", "'learning_rate'"),
    ("cluster.k_vidoe=8", "'cluster.k_vidoe'"),
    ("optim.nesterov=true", "'optim.nesterov'"),
    ("trainer.epochs=3", "'trainer'"),
])
def test_it_refuses_an_unknown_key_and_names_it(override, key):
    with pytest.raises(ConfigError, match="unknown config key") as caught:
        load_config(overrides=[override])
    assert key in str(caught.value)


def test_it_refuses_an_unknown_key_in_a_dict():
    with pytest.raises(ConfigError) as caught:
        PretrainConfig.from_dict({"data": {"clip_frames": 4, "frames_per_clip": 4}})
    assert "'data.frames_per_clip'" in str(caught.value)
    assert "clip_frames" in str(caught.value)  # the message lists the section's real keys


@pytest.mark.parametrize("raw, key", [
    ({"batch_size": "big"}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"cluster": {"k_video": "1.5"}}, "cluster.k_video"),
    ({"channels_last": "maybe"}, "channels_last"),
    ({"cluster": {"whiten": 2}}, "cluster.whiten"),
    ({"optim": {"lr": "fast"}}, "optim.lr"),
    ({"optim": {"lr": False}}, "optim.lr"),
    ({"run_name": 3}, "run_name"),
    ({"data": {"path": ["a", "b"]}}, "data.path"),
])
def test_it_refuses_a_value_of_the_wrong_type_and_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=rf"config key {key} must be"):
        PretrainConfig.from_dict(raw)


def test_it_refuses_a_scalar_where_a_section_belongs():
    with pytest.raises(ConfigError, match="cluster must be a mapping"):
        load_config(overrides=["cluster=8"])


def test_it_accepts_whole_floats_for_integers():
    assert PretrainConfig.from_dict({"rounds": 4.0}).rounds == 4
    assert type(PretrainConfig.from_dict({"rounds": 4.0}).rounds) is int


@pytest.mark.parametrize("override, key", [
    ("rounds=0", "rounds"),
    ("batch_size=-8", "batch_size"),
    ("device=tpu", "device"),
    ("precision=fp16", "precision"),
    ("data.clip_frames=0", "data.clip_frames"),
    ("data.fps=0", "data.fps"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.crop_size=200", "data.crop_size"),
    ("data.hop_ms=30", "data.hop_ms"),
    ("model.video_width=0", "model.video_width"),
    ("cluster.k_audio=1", "cluster.k_audio"),
    ("cluster.iterations=0", "cluster.iterations"),
    ("cluster.pca_dim=-1", "cluster.pca_dim"),
    ("optim.name=rmsprop", "optim.name"),
    ("optim.schedule=linear", "optim.schedule"),
    ("model.video_input=hsv", "model.video_input"),
    ("model.audio_norm=db", "model.audio_norm"),
    ("optim.lr=0", "optim.lr"),
    ("optim.momentum=-0.1", "optim.momentum"),
    ("data.clips_per_decode=0", "data.clips_per_decode"),
    ("data.clips_per_decode=5", "data.clips_per_decode"),  # does not divide the batch of 32
])
def test_it_refuses_an_out_of_range_value_and_names_the_key(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    assert str(caught.value).startswith(key) or f" {key} " in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# files


def test_it_loads_a_yaml_file_between_preset_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("variant: sdc\nbatch_size: 12\ncluster:\n  k_video: 16\n  whiten: no\noptim:\n  lr: 1e-3\n")
    cfg = load_config(preset="tiny", file=path, overrides=["batch_size=6"])
    assert cfg.variant == "sdc"
    assert cfg.batch_size == 6  # the override beats the file
    assert cfg.cluster.k_video == 16  # the file beats the preset
    assert cfg.cluster.k_audio == PRESETS["tiny"]["cluster"]["k_audio"]
    assert cfg.cluster.whiten is False
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_it_loads_a_json_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"rounds": 3, "model": {"audio_width": 16}}))
    cfg = load_config(file=path)
    assert (cfg.rounds, cfg.model.audio_width) == (3, 16)


def test_an_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert read_config_file(path) == {}
    assert load_config(file=path) == PretrainConfig()


def test_it_refuses_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("cluster:\n  k_video: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file=path)


def test_it_refuses_a_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- rounds\n- 3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(file=path)


def test_it_refuses_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(file=tmp_path / "nowhere.yaml")


def test_unknown_keys_in_a_file_are_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="'optim.learning_rate'"):
        load_config(file=path)


# ---------------------------------------------------------------------------------------------------------
# serialised forms


def test_flat_names_every_setting_by_its_dotted_key():
    cfg = load_config(preset="tiny")
    flat = cfg.flat()
    assert flat["cluster.k_video"] == cfg.cluster.k_video
    assert flat["data.clip_frames"] == cfg.data.clip_frames
    assert flat["optim.lr"] == cfg.optim.lr
    assert flat["variant"] == "xdc"
    assert not any(isinstance(value, dict) for value in flat.values())
    top_level = [f.name for f in dataclasses.fields(PretrainConfig) if f.name not in SECTIONS]
    nested = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    assert sorted(flat) == sorted(top_level + nested)


def test_to_dict_and_from_dict_round_trip_through_json():
    cfg = load_config(preset="small", overrides=["variant=mdc", "cluster.whiten=false", "optim.lr=0.2",
                                                  "data.path=/data/ucf", "seed=7"])
    stored = json.loads(json.dumps(cfg.to_dict()))
    again = PretrainConfig.from_dict(stored)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again.data, DataConfig) and isinstance(again.optim, OptimConfig)


def test_from_dict_validates():
    raw = PretrainConfig().to_dict()
    raw["cluster"]["k_joint"] = 0
    with pytest.raises(ConfigError, match="cluster.k_joint"):
        PretrainConfig.from_dict(raw)

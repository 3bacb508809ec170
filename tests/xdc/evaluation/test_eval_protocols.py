"""Protocols as data: every protocol is versioned, complete and resolvable; records pin what ran."""

from __future__ import annotations

import json

import pytest

from xdc.errors import ConfigError
from xdc.evaluation.protocols import PROTOCOLS, resolve
from xdc.evaluation.schema import result_schema, validate_record

REQUIRED = {
    "finetune": {"clip_frames", "fps", "crop_size", "epochs", "lr", "schedule", "batch_size", "test_clips"},
    "linear": {"clip_frames", "fps", "crop_size", "train_clips", "test_clips", "C"},
    "retrieval": {"clip_frames", "fps", "crop_size", "clips", "ks"},
    "svm": {"clip_seconds", "sample_rate", "n_mels", "clips_per_file", "C_grid", "cv_folds"},
}


def test_it_registers_every_protocol_in_full_small_and_tiny_form():
    assert {name for name, _ in PROTOCOLS} == set(REQUIRED)
    assert {preset for _, preset in PROTOCOLS} == {"", "small", "tiny"}
    for (name, preset), versions in PROTOCOLS.items():
        for version, protocol in versions.items():
            assert protocol.version == version >= 1
            assert REQUIRED[name] <= set(protocol.params), (name, preset)
            assert protocol.label == (f"{name}-{preset}" if preset else name)
            json.dumps(protocol.to_dict())  # params are plain JSON


def test_it_resolves_the_latest_version_and_refuses_unknown_ones():
    assert resolve("linear").version == max(PROTOCOLS[("linear", "")])
    assert resolve("linear", version=1, preset="tiny").params["crop_size"] == 32
    assert resolve("linear", version=1, preset="small").params["crop_size"] == 56
    with pytest.raises(ConfigError, match="has no version 7"):
        resolve("linear", version=7)
    with pytest.raises(ConfigError, match="unknown protocol 'knn'"):
        resolve("knn")


@pytest.mark.parametrize("name,benchmark", [("svm", "ucf101"), ("linear", "esc50"), ("finetune", "dcase")])
def test_it_refuses_a_protocol_on_a_benchmark_of_the_other_modality(name, benchmark):
    with pytest.raises(ConfigError, match=f"does not apply to benchmark '{benchmark}'"):
        resolve(name, benchmark=benchmark)


def test_protocol_params_cannot_be_edited_in_place():
    with pytest.raises(TypeError):
        resolve("svm").params["C_grid"] = (1.0,)


def test_the_schema_refuses_a_record_missing_its_protocol_version():
    assert result_schema()["properties"]["schema"]["const"] == "xdc-eval-result/1"
    with pytest.raises(ValueError, match="record: 'schema' is required|required"):
        validate_record({})


def test_every_protocol_preset_names_a_pretraining_preset_whose_inputs_it_shares():
    from xdc.config import load_config
    from xdc.evaluation import PRESETS

    for preset in PRESETS:
        data = load_config(preset=preset or None).data  # a random init takes this preset's architecture
        for name in ("linear", "finetune", "retrieval"):
            params = resolve(name, preset=preset).params
            assert (params["clip_frames"], params["crop_size"]) == (data.clip_frames, data.crop_size), (preset, name)

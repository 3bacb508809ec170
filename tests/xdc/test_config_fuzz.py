"""Fuzzing the config schema: whatever tree a form, a YAML file or an API body holds, `from_dict` either returns a
config that round-trips through strict JSON (no NaN) or raises ConfigError; nothing else ever escapes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from xdc.config import PretrainConfig, field_specs
from xdc.errors import ConfigError
from xdc.evaluation import EvalConfig

NAMES = sorted({part for key in [*field_specs(PretrainConfig), *field_specs(EvalConfig)] for part in key.split(".")})
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
           | st.text(max_size=20) | st.sampled_from(["nan", "inf", "1e30", "²", "true", "xdc", "folder", "\x00"]))
keys = st.sampled_from(NAMES) | st.text(max_size=8)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=6),
                     max_leaves=30)
configs = st.dictionaries(keys, trees, max_size=8)


def _survives(cls, raw) -> None:
    try:
        cfg = cls.from_dict(raw)
    except ConfigError as exc:
        assert str(exc)
        return
    text = json.dumps(cfg.to_dict(), allow_nan=False)  # what the job row and the checkpoint store
    assert cls.from_dict(json.loads(text)).to_dict() == cfg.to_dict()


@settings(max_examples=400, deadline=None)
@given(configs)
def test_a_pretraining_config_is_valid_or_a_config_error(raw):
    _survives(PretrainConfig, raw)


@settings(max_examples=300, deadline=None)
@given(configs)
def test_an_evaluation_config_is_valid_or_a_config_error(raw):
    _survives(EvalConfig, raw)


def _nested(key: str, value) -> dict:
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(field_specs(PretrainConfig))), scalars)
def test_any_value_under_any_real_key_is_valid_or_a_config_error_naming_it(key, value):
    try:
        PretrainConfig.from_dict(_nested(key, value))
    except ConfigError as exc:
        assert exc.key is not None and (exc.key == key or key.startswith("data.")), (key, value, exc.key, exc)

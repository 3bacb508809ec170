"""Settings: strict parsing of the environment, DATABASE_URL, and the boundary that xdc never imports Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp import settings as lab_settings

ROOT = Path(__file__).resolve().parents[2]


def test_database_url_for_postgres():
    config = lab_settings.database_from_url("postgres://lab:p%40ss@db.internal:6543/xdc?sslmode=require")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "xdc", "lab", "p@ss", "db.internal", "6543")
    assert config["OPTIONS"] == {"sslmode": "require"}


def test_database_url_for_sqlite():
    assert lab_settings.database_from_url("sqlite:////tmp/lab.db")["NAME"] == "/tmp/lab.db"
    assert lab_settings.database_from_url("sqlite:///var/x.db")["NAME"] == str(lab_settings.BASE_DIR / "var/x.db")


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://host/", "postgres://h:port/db", "sqlite://"])
def test_a_bad_database_url_names_the_variable(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        lab_settings.database_from_url(url)


@pytest.mark.parametrize("parse, raw", [(lambda: lab_settings.env_bool("X_FLAG", False), "maybe"),
                                        (lambda: lab_settings.env_int("X_FLAG", 1), "ten"),
                                        (lambda: lab_settings.env_int("X_FLAG", 1, minimum=5), "2"),
                                        (lambda: lab_settings.env_choice("X_FLAG", "a", ("a", "b")), "c")])
def test_bad_values_name_the_variable(monkeypatch, parse, raw):
    monkeypatch.setenv("X_FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        parse()


def test_good_values_parse(monkeypatch):
    monkeypatch.setenv("X_FLAG", " Off ")
    assert lab_settings.env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_LIST", "a.example, b.example,")
    assert lab_settings.env_list("X_LIST", []) == ["a.example", "b.example"]


def _start(**env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings",
                                                       **env})


def test_start_up_fails_on_a_bad_value_naming_it():
    result = _start(DEBUG="perhaps")
    assert result.returncode != 0 and "DEBUG" in result.stderr
    result = _start(DEBUG="0", SECRET_KEY="")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_xdc_never_imports_django_or_the_platform():
    code = ("import sys, xdc, xdc.config, xdc.train, xdc.evaluation, xdc.data.layouts; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'webapp', 'workers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


STRONG_KEY = "k3y-" + "".join(chr(97 + (i * 7) % 26) for i in range(60))


def test_a_weak_or_example_secret_key_stops_a_deployment():
    for key in ("change-me-to-a-long-random-string", "short", "a" * 60):
        result = _start(DEBUG="0", SECRET_KEY=key)
        assert result.returncode != 0 and "SECRET_KEY is too weak" in result.stderr


def test_check_deploy_is_clean_with_debug_off(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "DEBUG": "0", "SECRET_KEY": STRONG_KEY,
           "ALLOWED_HOSTS": "lab.example.org", "LAB_VAR_DIR": str(tmp_path), "DATABASE_URL": ""}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout

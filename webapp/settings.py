"""Settings of the lab web site, read from the environment with strict parsing.

The defaults need no server: a SQLite file under `var/`, DEBUG on, jobs enqueued to Celery. Team mode sets
DATABASE_URL (postgres://user:pass@host:5432/name), SECRET_KEY, ALLOWED_HOSTS, DEBUG=0 and the MLflow URLs.
A value that does not parse raises ImproperlyConfigured naming the variable, at start-up rather than mid-request.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")
    return word in TRUE_WORDS


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_url(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip().rstrip("/")
    if urlsplit(value).scheme not in ("http", "https", "file", "sqlite", "postgresql", "databricks", ""):
        raise ImproperlyConfigured(f"{name} has an unsupported scheme: {value!r}")
    return value


def database_from_url(url: str, *, name: str = "DATABASE_URL") -> dict:
    """postgres://user:password@host:port/db?sslmode=require or sqlite:////abs/path.db -> a DATABASES entry."""
    parts = urlsplit(url.strip())
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ImproperlyConfigured(f"{name} names no database: {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name} has a bad port: {url!r}") from None
        config = {"ENGINE": "django.db.backends.postgresql", "NAME": database,
                  "USER": unquote(parts.username or ""), "PASSWORD": unquote(parts.password or ""),
                  "HOST": parts.hostname or "", "PORT": str(port or ""), "CONN_MAX_AGE": 60,
                  "OPTIONS": dict(parse_qsl(parts.query))}
        test_name = os.environ.get("DATABASE_TEST_NAME")
        if test_name:  # lets two test runs share one server without sharing test_<name>
            config["TEST"] = {"NAME": test_name}
        return config
    if parts.scheme == "sqlite":
        path = unquote(parts.path)[1:]  # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        if not path:
            raise ImproperlyConfigured(f"{name} names no SQLite file: {url!r}")
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / path), "OPTIONS": {"timeout": 20}}
    raise ImproperlyConfigured(f"{name} must start with postgres://, postgresql:// or sqlite:///, got {url!r}")


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-local-development-key-only-used-with-DEBUG"
elif not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or "change-me" in SECRET_KEY):
    raise ImproperlyConfigured("SECRET_KEY is too weak for DEBUG=0: use at least 50 random characters, e.g. "
                               "python -c 'import secrets; print(secrets.token_urlsafe(50))'")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

VAR_DIR = Path(env_str("LAB_VAR_DIR", str(BASE_DIR / "var"))).resolve()
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "lab.sqlite3"),
                             "OPTIONS": {"timeout": 20}}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "webapp.lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.lab.security.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view is marked @login_not_required (login, /healthz, the token API).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

AUTH_PASSWORD_VALIDATORS = [{"NAME": f"django.contrib.auth.password_validation.{name}"} for name in (
    "UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator",
    "NumericPasswordValidator")]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "lab:jobs"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# HTTPS: on by default with DEBUG=0 (`manage.py check --deploy` is then clean); each can be set from the
# environment, e.g. SECURE_SSL_REDIRECT=0 where the proxy in front already redirects.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients' requests).
if env_bool("SECURE_PROXY_SSL_HEADER", not DEBUG):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
# Log-in throttling (webapp.lab.security.ThrottledLoginView): failures per user name or address, and the lock.
LAB_LOGIN_FAILURES = env_int("LAB_LOGIN_FAILURES", 5, minimum=1)
LAB_LOGIN_LOCKOUT_SECONDS = env_int("LAB_LOGIN_LOCKOUT_SECONDS", 15 * 60, minimum=1)
# One cache for every web process (the log-in counts): Redis when CACHE_URL names one, else per process memory.
CACHE_URL = os.environ.get("CACHE_URL", "").strip()
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
          if CACHE_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The lab itself.
MLFLOW_TRACKING_URI = env_url("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
# Links to runs need the web UI; a file or database tracking URI has none, so it gives no default link.
MLFLOW_UI_URL = env_url("MLFLOW_UI_URL", MLFLOW_TRACKING_URI if MLFLOW_TRACKING_URI.startswith("http") else "")
if MLFLOW_UI_URL and urlsplit(MLFLOW_UI_URL).scheme not in ("http", "https"):
    raise ImproperlyConfigured(f"MLFLOW_UI_URL must be an http(s) address of the MLflow UI, got {MLFLOW_UI_URL!r}")
LAB_ENQUEUE = env_choice("LAB_ENQUEUE", "celery", ("celery", "none"))
LAB_RUNS_DIR = Path(env_str("LAB_RUNS_DIR", str(VAR_DIR / "runs"))).resolve()
# Folders every team may register datasets from (shared public datasets: Kinetics, UCF101, ...), separated by ":".
# A team's own folders are its `data_roots` in the admin; nothing outside these is ever listed or read.
LAB_DATA_ROOTS = [Path(item).expanduser().resolve()
                  for item in env_str("LAB_DATA_ROOTS", str(VAR_DIR / "data")).split(os.pathsep) if item.strip()]
LAB_STALE_SECONDS = env_int("LAB_STALE_SECONDS", 300, minimum=10)
LAB_LOG_TAIL_CHARS = env_int("LAB_LOG_TAIL_CHARS", 20000, minimum=100)
LAB_MAX_GRID = env_int("LAB_MAX_GRID", 64, minimum=1)

# -- Celery and the workers (workers/) ------------------------------------------------------------------------------
# One broker for every worker: Redis (REDIS_URL works too). `make demo` starts its own redis-server, or falls back to
# kombu's filesystem transport (no priorities, no redelivery of a killed worker's job: the stale-job watchdog
# requeues it instead).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
CELERY_TASK_IGNORE_RESULT = True  # outcomes live on the job row, not in a result backend
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ACKS_LATE = True  # a job's message is acknowledged when the job ends, not when it starts...
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ...and goes back to its queue when the worker process dies mid-job
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a worker holds only the job it runs; queued ones stay free for others
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A submission must not hang on a broker that is down: publish once, fail fast, and let the resend sweep retry.
CELERY_BROKER_CONNECTION_TIMEOUT = 3
# On a lost broker connection a running job keeps training: its row, not the message, says who owns it, so a
# redelivered message claims nothing (and Celery 6 changes this setting's default, hence stated).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": list(range(10)),  # Redis serves priority 0 first
    "queue_order_strategy": "priority",  # a worker on "-Q gpu,cpu" drains gpu before cpu
    # An unacknowledged message is redelivered after this long; it must outlast the longest job.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7 * 24 * 3600, minimum=60),
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _BROKER_DIR = Path(env_str("CELERY_BROKER_DIR", str(VAR_DIR / "broker"))).resolve()
    _BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS.update(data_folder_in=str(_BROKER_DIR), data_folder_out=str(_BROKER_DIR),
                                           control_folder=str(_BROKER_DIR / "control"))
LAB_HEARTBEAT_SECONDS = env_int("LAB_HEARTBEAT_SECONDS", 10, minimum=1)  # a running job's row beats at least this often
if LAB_HEARTBEAT_SECONDS * 2 > LAB_STALE_SECONDS:  # else a live job misses its window and is requeued under itself
    raise ImproperlyConfigured(f"LAB_HEARTBEAT_SECONDS ({LAB_HEARTBEAT_SECONDS}) must be at most half of "
                               f"LAB_STALE_SECONDS ({LAB_STALE_SECONDS})")
LAB_WATCHDOG_SECONDS = env_int("LAB_WATCHDOG_SECONDS", 60, minimum=1)  # each worker sweeps for stale jobs this often
# A trainer asked to stop (cancel, worker shutdown) that has not checkpointed and ended after this long is killed.
LAB_STOP_GRACE_SECONDS = env_int("LAB_STOP_GRACE_SECONDS", 600, minimum=1)
# The most GPUs one worker host holds: a job asking for more GPUs per node is refused at submission.
LAB_GPUS_PER_HOST = env_int("LAB_GPUS_PER_HOST", 8, minimum=1)
# A job whose worker vanished this many times in a row fails; each requeue before waits twice as long as the last.
LAB_MAX_WORKER_LOSSES = env_int("LAB_MAX_WORKER_LOSSES", 3, minimum=1)
LAB_REQUEUE_BACKOFF_SECONDS = env_int("LAB_REQUEUE_BACKOFF_SECONDS", 30, minimum=0)
# A queued job whose message the broker never took (it was down) is sent again after this long.
LAB_RESEND_SECONDS = env_int("LAB_RESEND_SECONDS", 30, minimum=1)
# Each worker mirrors the teams into MLflow's accounts this often (webapp.lab.mlflow_access), when MLflow has them.
LAB_MLFLOW_SYNC_SECONDS = env_int("LAB_MLFLOW_SYNC_SECONDS", 300, minimum=10)
# -- end of the Celery block ----------------------------------------------------------------------------------------

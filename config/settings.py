"""Django settings for Depth Arena, read from environment variables.

With nothing set the project runs on the embedded default for one researcher on one
machine: SQLite, a Celery broker on the file system and an in-memory channel layer.
With DATABASE_URL and REDIS_URL set it runs on PostgreSQL and Redis. A bad value stops
start-up with a message that names the variable.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name}={value} must be between {low} and {high}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(name: str, url: str) -> dict:
    """Turn DATABASE_URL into a DATABASES entry: postgres:// (psycopg 3, pooled) or sqlite:///path."""
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        if not parsed.path.strip("/"):
            raise ImproperlyConfigured(f"{name}={url!r} names no database: add /<name> at the end.")
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # Django's psycopg 3 pool in the web process (Celery workers connect plainly: config.celery).
            # The pool checks a connection before lending it, so the web carries on after PostgreSQL
            # restarts.
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "pool": {"min_size": 1, "max_size": env_int("DATABASE_POOL_MAX", 8, minimum=1)},
                **options,
            },
            "TEST": {"NAME": env_str("DATABASE_TEST_NAME") or None},
        }
    if parsed.scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise ImproperlyConfigured(f"{name}={url!r}: write sqlite:///relative/or/absolute/path.sqlite3.")
        return sqlite_database(BASE_DIR / path)
    raise ImproperlyConfigured(
        f"{name}={url!r} has scheme {parsed.scheme!r}: use postgres://user@host:port/name or sqlite:///path."
    )


def sqlite_database(path: Path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # The web process and the worker write to one file: wait for each other instead of failing,
        # and take the write lock at BEGIN so two writers never deadlock on an upgrade.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


DATA_DIR = Path(env_str("DEPTH_ARENA_DATA_DIR") or BASE_DIR / "var")
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", default=not env_str("DATABASE_URL"))


def load_secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured(
                "DJANGO_SECRET_KEY is shorter than 32 characters: use a long random string."
            )
        return key
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    # The embedded default keeps one random key per data folder so sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = load_secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS must list the host names to serve when DJANGO_DEBUG is off."
    )
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "evaluator",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": database_from_url("DATABASE_URL", DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(DATA_DIR / "depth-arena.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sessions are read on every request: from the cache first (Redis with REDIS_URL), the database behind it.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling: a few wrong passwords lock the username from that address for a while.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Content Security Policy: no inline script or style, no eval, nothing from other origins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads no cookie: the token travels in hx-headers on <body>
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Redis (Celery broker and channel layer) or the embedded default.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and urlparse(REDIS_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis:// or rediss://.")

# The longest a single generation job may take; the broker's visibility timeout sits above it so a
# job still running is never handed to a second worker.
JOB_TIME_LIMIT = env_int("DEPTH_ARENA_JOB_TIME_LIMIT", 3 * 3600, minimum=60)

if REDIS_URL:
    # One cache for every web process: the results pages share what one of them computed.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_TIME_LIMIT + 3600}
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    BROKER_DIR = DATA_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_TASK_ALWAYS_EAGER = False

# The model and how it runs in a worker.
TINY_MOE_PATH = Path(env_str("DEPTH_ARENA_TINY_MOE_PATH") or DATA_DIR / "models" / "tiny-moe")
ENGINE_DEVICE = env_str("DEPTH_ARENA_DEVICE", "auto")
if ENGINE_DEVICE not in {"auto", "cpu", "cuda"} and not ENGINE_DEVICE.startswith("cuda:"):
    raise ImproperlyConfigured(f"DEPTH_ARENA_DEVICE={ENGINE_DEVICE!r}: use auto, cpu, cuda or cuda:N.")
ENGINE_DTYPE = env_str("DEPTH_ARENA_DTYPE", "auto")
if ENGINE_DTYPE not in {"auto", "bf16", "fp16", "fp32"}:
    raise ImproperlyConfigured(
        f"DEPTH_ARENA_DTYPE={ENGINE_DTYPE!r}: use auto, bf16, fp16 or fp32 (quantized weights are refused)."
    )
ENGINE_BATCH_SIZE = env_int("DEPTH_ARENA_BATCH_SIZE", 16, minimum=1)
# CPU threads for generation. One is fastest for the small model on a shared two-core machine, where
# more threads mostly wait on each other; a GPU worker barely uses the CPU. 0 leaves torch's default.
ENGINE_CPU_THREADS = env_int("DEPTH_ARENA_CPU_THREADS", 1, minimum=0)

# Largest prompt or category file an import reads (MB); a larger one is refused before parsing.
MAX_UPLOAD_MB = env_int("DEPTH_ARENA_MAX_UPLOAD_MB", 10, minimum=1)

# Raters.
LEASE_SECONDS = env_int("DEPTH_ARENA_LEASE_SECONDS", 600, minimum=10)

# Results: a rater below this accuracy on gold checks (after at least GOLD_MIN_SEEN of them) is
# excluded by default; intervals come from this many bootstrap rounds over prompts.
GOLD_MIN_ACCURACY = env_float("DEPTH_ARENA_GOLD_MIN_ACCURACY", 0.7, low=0.0, high=1.0)
GOLD_MIN_SEEN = env_int("DEPTH_ARENA_GOLD_MIN_SEEN", 3, minimum=1)
RESULTS_BOOTSTRAP_ROUNDS = env_int("DEPTH_ARENA_BOOTSTRAP_ROUNDS", 1000, minimum=50)
RESULTS_POLL_SECONDS = env_int("DEPTH_ARENA_RESULTS_POLL_SECONDS", 15, minimum=1)
# Results are computed again at most this often while votes arrive, however many pages are open.
RESULTS_REFRESH_SECONDS = env_int("DEPTH_ARENA_RESULTS_REFRESH_SECONDS", 5, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

"""Settings come from the environment; a bad value stops start-up with a message naming the variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_ENV = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG"}}
BASE_ENV["DJANGO_DEBUG"] = "1"


def django_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**BASE_ENV, "DEPTH_ARENA_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://localhost"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "x"}, "DJANGO_SECRET_KEY"),
        ({"DEPTH_ARENA_LEASE_SECONDS": "soon"}, "DEPTH_ARENA_LEASE_SECONDS"),
        ({"DATABASE_URL": "postgres://localhost/x", "DATABASE_POOL_MAX": "0"}, "DATABASE_POOL_MAX"),
        ({"DEPTH_ARENA_DTYPE": "int8"}, "DEPTH_ARENA_DTYPE"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path, env, named):
    result = django_check(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr.splitlines()[-1]


def test_with_nothing_set_it_runs_on_the_embedded_default(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import django, json; django.setup(); from django.conf import settings as s; "
                "print(json.dumps([s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, "
                "s.CHANNEL_LAYERS['default']['BACKEND'], s.DEBUG]))"
            ),
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in BASE_ENV.items() if k != "DJANGO_DEBUG"},
            "DEPTH_ARENA_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine, broker, layer, debug = json.loads(result.stdout)
    assert engine == "django.db.backends.sqlite3"
    assert broker.startswith("filesystem://")
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert debug is True


def test_postgresql_uses_djangos_backend_with_its_pool_and_passes_url_options():
    from config.settings import database_from_url

    database = database_from_url("DATABASE_URL", "postgres://u:p%40ss@h:5432/db?sslmode=require")
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["USER"], database["PASSWORD"], database["NAME"]) == ("u", "p@ss", "db")
    assert database["OPTIONS"]["sslmode"] == "require"
    assert database["OPTIONS"]["pool"]["max_size"] == 8

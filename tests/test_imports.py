"""The web process never imports torch (seconds of start-up and ~250 MB per process), nor scipy until a
results page needs it (about 1.2 s and 70 MB)."""

import subprocess
import sys

WEB_MODULES = [
    "config.asgi",
    "config.urls",
    "dashboard.views",
    "dashboard.exports",
    "evaluator.admin",
    "evaluator.jobs",
    "evaluator.scheduling",
    "evaluator.tasks",
]


def test_web_modules_do_not_import_torch_or_scipy():
    code = (
        "import django, sys; django.setup()\n"
        + "".join(f"import {module}\n" for module in WEB_MODULES)
        + "print(sorted(m for m in ('torch', 'transformers', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"

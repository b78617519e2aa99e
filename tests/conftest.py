"""Shared fixtures: named personas, the small trained model, and a scheduled experiment."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The small trained MoE; `make test` builds it before pytest starts, this builds it if missing."""
    path = Path(settings.TINY_MOE_PATH)
    if not (path / "config.json").exists():
        from evaluator.tiny import build_tiny_moe

        build_tiny_moe(path, seed=0, log=lambda _msg: None)
    return path


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    # Playwright's sync API runs an event loop in the test thread; ORM calls made there by the tests are
    # ordinary blocking calls on their own connection, which this switch allows.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: apt-get install chromium (make test installs it).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def raters_group(db) -> Group:
    from dashboard.permissions import raters_group

    return raters_group()


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user(
        "alice", password="password-alice", is_staff=True, is_superuser=True
    )


@pytest.fixture
def rater(django_user_model, raters_group):
    user = django_user_model.objects.create_user("bob", password="password-bob")
    user.groups.add(raters_group)
    return user


@pytest.fixture
def second_rater(django_user_model, raters_group):
    user = django_user_model.objects.create_user("carol", password="password-carol")
    user.groups.add(raters_group)
    return user


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("dave", password="password-dave")
    user.user_permissions.add(Permission.objects.get(codename="view_results"))
    return user


@pytest.fixture
def stranger(django_user_model):
    return django_user_model.objects.create_user("eve", password="password-eve")


@pytest.fixture(autouse=True)
def results_computed_on_every_change(settings):
    """Pages in tests show the newest results at once; tests/dashboard/test_results_cache.py sets the
    interval that the service uses."""
    settings.RESULTS_REFRESH_SECONDS = 0

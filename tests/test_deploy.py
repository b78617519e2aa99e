"""Production readiness: Django's deployment checks, and a Content Security Policy that pages live with."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from evaluator.models import Category, Checkpoint, Experiment, Prompt, Variant

ROOT = Path(__file__).resolve().parents[1]
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))}
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="arena.example.org",
        **extra,
    )
    return env


@pytest.mark.parametrize(
    "services",
    [
        {},
        {
            "DATABASE_URL": "postgres://arena:secret@db:5432/arena",
            "REDIS_URL": "redis://redis:6379/0",
        },
    ],
    ids=["embedded", "postgres-redis"],
)
def test_the_deployment_checks_pass_with_production_settings(services, tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(DEPTH_ARENA_DATA_DIR=str(tmp_path), **services),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = production_env(DEPTH_ARENA_DATA_DIR=str(tmp_path))
    del env["DJANGO_SECRET_KEY"]

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


@pytest.fixture
def experiment(db, tmp_path) -> Experiment:
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    variant = Variant.objects.create(checkpoint=checkpoint, name="k=1", depth={"kind": "fixed", "k": 1})
    experiment = Experiment.objects.create(name="exp", checkpoint=checkpoint, seeds=[0])
    experiment.variants.set([variant])
    experiment.prompts.set(
        [Prompt.objects.create(category=Category.objects.create(slug="r", name="R"), text="x")]
    )
    return experiment


def csp_directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.parametrize(
    ("persona", "url"),
    [
        (None, "/accounts/login/"),
        ("rater", "/rate/"),
        ("admin_user", "/jobs/"),
        ("admin_user", "/admin/"),
        ("admin_user", "/admin/evaluator/experiment/add/"),
        ("admin_user", "experiment-change"),
        ("admin_user", "/admin/evaluator/variant/add/"),
        ("admin_user", "/admin/evaluator/prompt/import/"),
        ("admin_user", "/admin/evaluator/experiment/add-from-preset/"),
    ],
)
def test_pages_carry_a_strict_csp_and_no_inline_script(client, request, experiment, persona, url):
    if persona:
        client.force_login(request.getfixturevalue(persona))
    if url == "experiment-change":
        url = reverse("admin:evaluator_experiment_change", args=[experiment.pk])

    response = client.get(url)

    assert response.status_code == 200
    policy = csp_directives(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    header = response["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    html = response.content.decode()
    assert INLINE_SCRIPT.findall(html) == []
    assert INLINE_HANDLER.findall(html) == []


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_admin_pages_run_in_a_browser_without_csp_violations(browser, live_server, experiment, admin_user):
    """Django's admin moved its scripts out of line; this checks the pages an admin of this project opens."""
    pages = [
        "/admin/",
        "/admin/evaluator/checkpoint/add/",
        "/admin/evaluator/variant/add/",
        "/admin/evaluator/variant/add/?_to_field=id&_popup=1",
        "/admin/evaluator/category/add/",
        "/admin/evaluator/prompt/",
        "/admin/evaluator/prompt/import/",
        "/admin/evaluator/experiment/",
        "/admin/evaluator/experiment/add/",
        f"/admin/evaluator/experiment/{experiment.pk}/change/",
        "/admin/evaluator/experiment/add-from-preset/",
        "/admin/auth/user/add/",
        f"/admin/auth/user/{admin_user.pk}/change/",
        f"/admin/auth/user/{admin_user.pk}/password/",
        "/jobs/",
    ]
    violations: list[str] = []
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda msg: (
                "Content Security Policy" in msg.text and violations.append(f"{page.url}: {msg.text}")
            ),
        )
        page.goto("/admin/login/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "password-alice")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        for url in pages:
            page.goto(url)
            page.wait_for_load_state("networkidle")
        # The two-box selectors of filter_horizontal are built by admin JavaScript: it ran.
        page.goto("/admin/evaluator/experiment/add/")
        assert page.locator("#id_variants_from").count() == 1
    finally:
        context.close()

    assert violations == []

"""Who may open what: every URL of the project, for each role, with least privilege.

Roles: anonymous visitors, a logged-in stranger, a rater (group "raters"), a results viewer (permission
dashboard.view_results) and staff. A URL added to the project fails here until it is given its audience below.
"""

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from dashboard.models import RaterProfile
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Job, Prompt, Variant

PERSONAS = ["stranger", "rater", "viewer", "staff"]
PUBLIC = set(PERSONAS)
RATERS = {"rater", "staff"}
RESULTS = {"viewer", "staff"}
STAFF = {"staff"}

# URL name → (method, who may use it). Admin URLs are all staff-only and listed by their namespace.
AUDIENCE = {
    "login": ("GET", PUBLIC),
    "set_password": ("GET", PUBLIC),
    "logout": ("POST", PUBLIC),
    "home": ("GET", PUBLIC),
    "rate": ("GET", RATERS),
    "session_start": ("POST", RATERS),
    "session_pause": ("POST", RATERS),
    "session_resume": ("POST", RATERS),
    "session_end": ("POST", RATERS),
    "vote": ("POST", RATERS),
    "skip": ("POST", RATERS),
    "flag": ("POST", RATERS),
    "undo_vote": ("POST", RATERS),
    "results_list": ("GET", RESULTS),
    "results": ("GET", RESULTS),
    "follow_up": ("POST", STAFF),
    "export_votes": ("GET", RESULTS),
    "export_aggregates": ("GET", RESULTS),
    "jobs": ("GET", STAFF),
    "retry_failed": ("POST", STAFF),
    "export_outputs": ("GET", RESULTS),
    "export_timeline": ("GET", RESULTS),
    "outputs_list": ("GET", STAFF),
    "outputs": ("GET", STAFF),
    "flag_queue": ("GET", STAFF),
    "flag_review": ("POST", STAFF),
}
ANONYMOUS_OPEN = {"login", "logout", "set_password"}
ADMIN_POST = {"evaluator_experiment_operate", "logout"}


def all_url_names() -> list[str]:
    """Every named URL of the project, admin ones prefixed "admin:"."""
    names = []

    def walk(patterns, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                names.append(f"{namespace}:{pattern.name}" if namespace else pattern.name)

    walk(get_resolver().url_patterns, "")
    return sorted(set(names))


URL_NAMES = all_url_names()


@pytest.fixture
def world(db, tmp_path, admin_user):
    """One object of each kind, so that every URL with an id or a token can be built."""
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    variants = [
        Variant.objects.create(checkpoint=checkpoint, name=f"k={k}", depth={"kind": "fixed", "k": k})
        for k in (1, 2)
    ]
    category = Category.objects.create(slug="routine", name="Routine")
    prompt = Prompt.objects.create(category=category, text="Hi")
    experiment = Experiment.objects.create(
        name="exp", checkpoint=checkpoint, seeds=[0], status=Experiment.Status.SCHEDULED
    )
    experiment.variants.set(variants)
    experiment.prompts.set([prompt])
    left, right = (
        Generation.objects.create(experiment=experiment, variant=v, prompt=prompt, seed=0) for v in variants
    )
    comparison = Comparison.objects.create(
        experiment=experiment, prompt=prompt, seed=0, left=left, right=right
    )
    Job.objects.create(experiment=experiment, variant=variants[0], task_id="t-1")
    RaterProfile.objects.create(user=admin_user).experiments.set([experiment])
    return {"experiment": experiment, "comparison": comparison, "user": admin_user}


def url_for(name: str, world: dict) -> str:
    """reverse() with made-up but valid arguments for whatever the pattern takes."""
    experiment, comparison = world["experiment"], world["comparison"]
    if name == "admin:app_list":
        return reverse(name, kwargs={"app_label": "evaluator"})
    if name == "admin:view_on_site":
        from django.contrib.contenttypes.models import ContentType

        content_type = ContentType.objects.get_for_model(Experiment)
        return reverse(name, args=[content_type.pk, experiment.pk])
    if name in ("admin:password_reset_confirm", "set_password"):
        return reverse(name, args=["x", "y"])
    if name == "admin:auth_user_password_change":
        return reverse(name, args=[world["user"].pk])
    if name == "admin:evaluator_experiment_operate":
        return reverse(name, args=[experiment.pk, "pause"])
    for args in ([], [experiment.pk], [comparison.token]):
        try:
            return reverse(name, args=args)
        except Exception:
            continue
    match = re.match(r"admin:(\w+?)_(\w+?)_(change|delete|history)$", name)
    if match:
        from django.apps import apps

        model = apps.get_model(match.group(1), match.group(2))
        obj = model.objects.first() or (world["user"] if model._meta.model_name == "user" else None)
        if obj is None:
            obj = model.objects.create(name="g") if model._meta.model_name == "group" else None
        return reverse(name, args=[obj.pk])
    raise AssertionError(f"tests/test_roles.py cannot build URL {name!r}: add its arguments to url_for")


def audience(name: str) -> tuple[str, set[str]]:
    if name.startswith("admin:"):
        return ("POST" if name.removeprefix("admin:") in ADMIN_POST else "GET"), STAFF
    if name not in AUDIENCE:
        raise AssertionError(f"URL {name!r} has no audience: classify it in AUDIENCE in tests/test_roles.py")
    return AUDIENCE[name]


def request(client, method: str, url: str):
    return client.post(url) if method == "POST" else client.get(url)


def is_login_redirect(response) -> bool:
    return response.status_code == 302 and response.url.split("?")[0] in {
        reverse("login"),
        reverse("admin:login"),
    }


def test_every_url_is_classified():
    assert {"jobs", "retry_failed", "rate", "results", "admin:index"} <= set(URL_NAMES)
    for name in URL_NAMES:
        audience(name)


SITE_URLS = [name for name in URL_NAMES if not name.startswith("admin:")]
ADMIN_URLS = [name for name in URL_NAMES if name.startswith("admin:")]
ADMIN_OPEN = {"admin:login", "admin:logout", "admin:password_reset_confirm"}
# Refused even to staff: records written only by the service (outputs, pairs, jobs, heartbeats, login
# attempts) cannot be added by hand, and autocomplete answers only with a field to complete.
ADMIN_REFUSED = {
    "admin:autocomplete",
    *(
        f"admin:{model}_add"
        for model in [
            "evaluator_generation",
            "evaluator_comparison",
            "evaluator_job",
            "evaluator_workerstatus",
            "axes_accessattempt",
            "axes_accessfailurelog",
            "axes_accesslog",
            "dashboard_rating",
            "dashboard_ratingsession",
            "dashboard_lease",
        ]
    ),
    # Votes, sessions, leases and login logs are only read; deleting an attempt lifts a lockout.
    *(
        f"admin:{model}_delete"
        for model in [
            "dashboard_rating",
            "dashboard_ratingsession",
            "dashboard_lease",
            "axes_accessfailurelog",
            "axes_accesslog",
        ]
    ),
}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def log_in(client, world, request):
    def log_in(persona: str) -> None:
        client.force_login(world["user"] if persona == "staff" else request.getfixturevalue(persona))

    return log_in


def problem(name: str, persona: str, response, allowed: bool) -> str | None:
    """What is wrong with the answer `persona` got from `name`, or None."""
    if persona == "anonymous":
        return None if is_login_redirect(response) else f"{name}: anonymous got {response.status_code}"
    if allowed:
        signed_out = name.endswith("logout") and is_login_redirect(response)
        if (
            response.status_code >= 500
            or response.status_code == 403
            or (is_login_redirect(response) and not signed_out)
        ):
            return f"{name}: {persona} may use it but got {response.status_code}"
        return None
    if name.startswith("admin:"):
        ok = is_login_redirect(response) or response.status_code == 403
    else:
        ok = response.status_code == 403
    return None if ok else f"{name}: {persona} may not use it but got {response.status_code}"


@pytest.mark.parametrize("name", [n for n in SITE_URLS if n not in ANONYMOUS_OPEN])
def test_anonymous_visitors_are_sent_to_log_in(client, world, name):
    method, _ = audience(name)

    response = request(client, method, url_for(name, world))

    assert problem(name, "anonymous", response, False) is None


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", SITE_URLS)
def test_each_role_reaches_only_its_pages(client, world, log_in, persona, name):
    method, allowed = audience(name)
    log_in(persona)

    response = request(client, method, url_for(name, world))

    assert problem(name, persona, response, persona in allowed) is None


@pytest.mark.parametrize("persona", ["anonymous", *PERSONAS])
def test_the_admin_is_for_staff_only(client, world, log_in, persona):
    if persona != "anonymous":
        log_in(persona)
    problems = []
    for name in ADMIN_URLS:
        if name in ADMIN_OPEN:
            continue
        method, allowed = audience(name)
        response = request(client, method, url_for(name, world))
        if persona == "staff" and name in ADMIN_REFUSED:
            problems.append(
                None if response.status_code == 403 else f"{name}: staff got {response.status_code}"
            )
            continue
        problems.append(problem(name, persona, response, persona in allowed))
        if name == "admin:logout" and persona != "anonymous":
            log_in(persona)

    assert [p for p in problems if p] == [], "\n".join(p for p in problems if p)


def test_staff_without_model_permissions_cannot_run_experiments(client, world, django_user_model):
    clerk = django_user_model.objects.create_user("frank", password="password-frank", is_staff=True)
    client.force_login(clerk)
    experiment = world["experiment"]

    assert client.get(reverse("admin:evaluator_experiment_changelist")).status_code == 403
    assert (
        client.post(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "pause"])).status_code
        == 403
    )
    assert client.post(reverse("retry_failed", args=[experiment.pk])).status_code == 403
    assert client.get(reverse("jobs")).status_code == 403
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.SCHEDULED

    clerk.user_permissions.add(Permission.objects.get(codename="view_job"))
    clerk = django_user_model.objects.get(pk=clerk.pk)
    client.force_login(clerk)
    assert client.get(reverse("jobs")).status_code == 200

    clerk.user_permissions.add(Permission.objects.get(codename="change_experiment"))
    clerk = django_user_model.objects.get(pk=clerk.pk)
    client.force_login(clerk)
    client.post(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "pause"]))
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.PAUSED


def test_a_results_viewer_cannot_rate_and_a_rater_cannot_read_results(client, world, rater, viewer):
    client.force_login(viewer)
    assert client.get(reverse("rate")).status_code == 403
    client.force_login(rater)
    assert client.get(reverse("results", args=[world["experiment"].pk])).status_code == 403


def test_an_inactive_staff_account_is_refused(client, world, django_user_model):
    former = django_user_model.objects.create_user(
        "gina", password="password-gina", is_staff=True, is_active=False
    )
    client.force_login(former)

    assert is_login_redirect(client.get(reverse("jobs")))

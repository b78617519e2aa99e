"""Blind by construction: nothing a rater receives names or numbers an arm, its depth or its context."""

import re
from html.parser import HTMLParser

import pytest
from django.http import HttpResponse
from django.urls import reverse

from dashboard.models import Lease
from tests.factories import make_checkpoint, run_generations, scheduled_experiment

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
ARM_WORDS = re.compile(
    r"\b(variant|arm|depth|experts?|top[-_ ]?k|yarn|native|rope|dynamic|fixed)\b", re.IGNORECASE
)


class Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.values += [(name, value or "") for name, value in attrs]


CSRF_TOKEN = re.compile(r'"X-CSRFToken": "[A-Za-z0-9]+"')
# A number on its own (a path segment, a value), not digits inside a random token such as a comparison's.
STANDALONE_NUMBER = re.compile(r"(?<![A-Za-z0-9_-])\d+(?![A-Za-z0-9_-])")


def forbidden_in(response, experiment) -> list[str]:
    """Everything in a response that would tell a rater which configuration wrote what."""
    body = response.content.decode()
    problems = []
    for variant in experiment.variants.all():
        for label in (variant.name, variant.describe(), variant.depth_policy.describe()):
            if label in body:
                problems.append(f"body names arm {label!r}")
    for name, value in response.headers.items():
        if ARM_WORDS.search(f"{name} {value}") and name.lower() != "content-security-policy":
            problems.append(f"header {name}: {value}")
    parser = Attributes()
    parser.feed(body)
    generation_ids = {str(pk) for pk in experiment.generations.values_list("pk", flat=True)}
    for name, value in parser.values:
        # The CSRF token is random letters and digits: a digit run in it can equal an id by chance.
        value = CSRF_TOKEN.sub("", value)
        if (
            name in {"id", "class"}
            or name.startswith(("data-", "hx-", "ws-"))
            or name in {"href", "action", "name"}
        ):
            if ARM_WORDS.search(value):
                problems.append(f"attribute {name}={value!r}")
            if set(STANDALONE_NUMBER.findall(value)) & generation_ids and name not in {
                "data-key",
                "class",
                "name",
            }:
                problems.append(f"attribute {name}={value!r} carries a generation id")
    return problems


def test_no_rater_facing_response_identifies_an_arm(client, rater, tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path),
        depths=(1, 2, 4, 8),
        criteria=["reasoning", "clarity", "faithfulness", "effort"],
        guidelines="Judge the text, not its length.",
        gold_rate=0.2,
    )
    run_generations(experiment)
    responses = [client.get(reverse("login"))]
    client.force_login(rater)
    responses.append(client.get(reverse("rate")))
    responses.append(client.post(reverse("session_start"), {"target": "4"}, headers=HTMX))
    responses.append(client.get(reverse("rate")))
    for verdict in ("left", "right"):
        token = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison.token
        responses.append(client.post(reverse("vote", args=[token]), {"verdict": verdict}, headers=HTMX))
    token = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison.token
    responses.append(client.post(reverse("skip", args=[token]), headers=HTMX))
    token = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison.token
    responses.append(client.post(reverse("flag", args=[token]), {"reason": "odd"}, headers=HTMX))
    responses.append(client.post(reverse("session_pause"), headers=HTMX))
    responses.append(client.post(reverse("session_resume"), headers=HTMX))
    responses.append(client.post(reverse("session_end"), headers=HTMX))
    responses.append(client.get(reverse("rate")))
    assert all(r.status_code == 200 for r in responses)
    problems = [p for r in responses for p in forbidden_in(r, experiment)]
    assert problems == []


def test_comparisons_are_addressed_by_random_tokens(rater, tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4, 8))
    tokens = list(experiment.comparisons.values_list("token", flat=True))
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) >= 20 and not t.isdigit() for t in tokens)


def test_sides_are_drawn_at_random(tiny_model_path):
    prompts = [("routine", f"Note {i}:") for i in range(40)]
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 8), prompts=prompts)
    left_is_shallow = [
        c.left.variant.name == "k=1" for c in experiment.comparisons.select_related("left__variant")
    ]
    assert 5 < sum(left_is_shallow) < 35


def test_the_rater_cannot_reach_arm_pages(client, rater, tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    client.force_login(rater)
    assert client.get(reverse("results", args=[experiment.pk])).status_code == 403
    assert client.get("/admin/evaluator/variant/").status_code == 302


def test_the_check_itself_catches_an_id_in_a_url_but_not_digits_inside_a_token(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 2))
    generation = experiment.generations.first()
    leaky = HttpResponse(f'<a href="/generations/{generation.pk}/">next</a>')
    assert forbidden_in(leaky, experiment) == [
        f"attribute href='/generations/{generation.pk}/' carries a generation id"
    ]
    token = f"AKm_PST{generation.pk}eSBsrS"  # a random token may hold the same digits
    assert forbidden_in(HttpResponse(f'<form action="/rate/{token}/vote/"></form>'), experiment) == []

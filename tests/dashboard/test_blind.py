"""Blind by construction: nothing a rater receives names or numbers an arm, its depth or its context."""

import itertools
import random
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
from django.http import HttpResponse
from django.urls import reverse

from dashboard import services
from dashboard.models import Lease
from evaluator.models import Comparison
from tests.factories import make_checkpoint, run_generations, scheduled_experiment, store_crafted_outputs

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


# The hand-out order: a curious rater's attack on it.


@dataclass(frozen=True)
class Seen:
    """One comparison as a rater saw it, and (hidden from the attacker) the arms behind its sides."""

    pk: int
    prompt: int
    left_text: str
    right_text: str
    left_arm: int
    right_arm: int


def handed_out(experiment, rater) -> list[Seen]:
    """Everything the experiment hands to one rater, in the order the service hands it out."""
    arm_index = {
        pk: i for i, pk in enumerate(experiment.variants.order_by("pk").values_list("pk", flat=True))
    }
    seen = []
    while (assignment := services.next_comparison(rater=rater)) is not None:
        comparison = Comparison.objects.select_related("left", "right").get(pk=assignment.page.pk)
        seen.append(
            Seen(
                pk=comparison.pk,
                prompt=comparison.prompt_id,
                left_text=assignment.page.left_text,
                right_text=assignment.page.right_text,
                left_arm=arm_index[comparison.left.variant_id],
                right_arm=arm_index[comparison.right.variant_id],
            )
        )
        services.submit_rating(rater=rater, token=assignment.page.token, verdict="tie")
    return seen


def attack(seen: list[Seen], arms: int, rng: random.Random) -> float:
    """The share of comparisons for which a curious rater names the arm that wrote side A (a guess that
    knows nothing names it one time in `arms`).

    The rater knows the arms in the order they were created and that all pairs are compared, and sees
    only prompts and texts. A prompt returning marks the next pair of arms; a text shared by two pairs
    belongs to the arm they have in common, which then places the sides of both comparisons.
    """
    pairs = list(itertools.combinations(range(arms), 2))
    guessed_pair, block, in_block = [], 0, set()
    for item in seen:
        if item.prompt in in_block:
            block, in_block = block + 1, set()
        in_block.add(item.prompt)
        guessed_pair.append(pairs[block % len(pairs)])
    candidates: dict[str, set[int]] = {}
    for item, pair in zip(seen, guessed_pair, strict=True):
        for text in (item.left_text, item.right_text):
            candidates[text] = candidates.get(text, set(pair)) & set(pair)
    right = 0
    for item, (i, j) in zip(seen, guessed_pair, strict=True):
        left, other = candidates[item.left_text], candidates[item.right_text]
        if len(left) == 1:
            guess = next(iter(left))
        elif len(other) == 1:
            guess = j if next(iter(other)) == i else i
        else:
            guess = rng.choice((i, j))
        right += guess == item.left_arm
    return right / len(seen)


def crafted_study(model_path, *, arms: int = 4, prompts: int = 20, categories=("routine", "philosophy")):
    """All pairs of `arms` arms on `prompts` prompts, every output a distinct text (no model run)."""
    experiment = scheduled_experiment(
        make_checkpoint(model_path),
        depths=tuple(range(1, arms + 1)),
        prompts=[(categories[i % len(categories)], f"Note {i}:") for i in range(prompts)],
        min_seconds_per_vote=0,
    )
    generations = experiment.generations.all()
    store_crafted_outputs(experiment, {g.pk: f"text {secrets.token_hex(6)}" for g in generations})
    return experiment


def test_the_hand_out_order_tells_a_curious_rater_nothing_about_the_arms(rater, tiny_model_path):
    experiment = crafted_study(tiny_model_path)
    seen = handed_out(experiment, rater)
    assert len(seen) == 6 * 20
    rng = random.Random(0)
    # The same attack on the order the comparisons were created in: it works there.
    created = sorted(seen, key=lambda s: s.pk)
    assert attack(created, 4, rng) > 0.85
    # On the order the service hands out, it does no better than naming one of the 4 arms at random:
    # 120 guesses stay within 0.25 ± 0.15 (3.8 standard deviations) but for one study in ten thousand.
    assert abs(attack(seen, 4, rng) - 0.25) < 0.15


def test_every_stretch_of_the_hand_out_is_balanced_across_pairs_and_categories(rater, tiny_model_path):
    """A study stopped early has votes on every pair of arms and every category, in proportion."""
    experiment = crafted_study(tiny_model_path, arms=3, prompts=24)
    seen = handed_out(experiment, rater)
    category = dict(experiment.prompts.values_list("pk", "category__slug"))
    strata = Counter(
        (min(s.left_arm, s.right_arm), max(s.left_arm, s.right_arm), category[s.prompt]) for s in seen
    )
    assert len(strata) == 6 and len(seen) == 72
    so_far: Counter = Counter()
    for n, item in enumerate(seen, start=1):
        so_far[
            (min(item.left_arm, item.right_arm), max(item.left_arm, item.right_arm), category[item.prompt])
        ] += 1
        for stratum, total in strata.items():
            assert abs(so_far[stratum] - n * total / len(seen)) <= 2, (n, stratum)

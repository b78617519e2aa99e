"""A rater in a real browser: keyboard only, skip, flag, progress, and hostile output that runs nothing."""

import pytest
from playwright.sync_api import expect

from dashboard.models import Lease, Rating
from tests.e2e.conftest import log_in
from tests.factories import make_checkpoint, run_generations, scheduled_experiment, store_crafted_outputs
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def experiment(tiny_model_path):
    prompts = [
        ("routine", "Dear team,\n"),
        ("philosophy", "Premise one:"),
        ("dialogue", "User: Hello\nAssistant:"),
    ]
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 2, 4, 8), prompts=prompts, min_seconds_per_vote=0
    )
    run_generations(experiment)
    return experiment


def session_count(page) -> str:
    return page.locator(".bar .progress strong").first.inner_text()


def wait_for_next_panel(page, token: str) -> None:
    """Wait until the panel of the comparison with this token has been swapped for the next one.

    The server commits before the browser swaps, so the database alone says nothing about which panel a
    key pressed next would reach.
    """
    page.wait_for_selector(f"#panel form[hx-post*='{token}']", state="detached")
    page.wait_for_selector("#panel .outputs, #panel .empty")


def test_a_rater_rates_with_the_keyboard_only_skips_and_flags(page, rater, experiment):
    log_in(page, "bob", "password-bob")
    page.wait_for_selector("text=Start rating")
    page.keyboard.press("Enter")  # the start button has the focus
    page.wait_for_selector("#panel .outputs")

    keys = ["1", "ArrowRight", "3", "4", "ArrowLeft"]
    for done, key in enumerate(keys, start=1):
        token = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison.token
        page.keyboard.press(key)
        expect(page.locator(".bar .progress strong").first).to_have_text(str(done))
        assert Rating.objects.filter(rater=rater, comparison__token=token).exists()
    verdicts = list(Rating.objects.filter(rater=rater).order_by("pk").values_list("verdict", flat=True))
    assert verdicts == ["left", "right", "tie", "both_bad", "left"]

    skipped = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison
    page.keyboard.press("s")
    wait_for(
        lambda: Lease.objects.get(rater=rater, comparison=skipped).skipped, timeout=10, message="no skip"
    )
    wait_for_next_panel(page, skipped.token)

    flagged = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison
    page.keyboard.press("f")
    page.keyboard.type("the text is garbled")
    page.keyboard.press("Enter")
    wait_for(
        lambda: Lease.objects.get(rater=rater, comparison=flagged).flag_reason == "the text is garbled",
        timeout=10,
        message="the flag was not stored",
    )
    wait_for_next_panel(page, flagged.token)
    assert session_count(page) == "5"
    assert Rating.objects.filter(rater=rater).count() == 5
    assert page.console_errors == []


def test_hostile_model_output_runs_nothing(browser, live_server, rater, experiment):
    # The page's CSP would stop an injected script too; without it, only escaping stands in the way.
    context = browser.new_context(base_url=live_server.url, bypass_csp=True)
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    hostile = '<script>window.pwned = 1; alert("x")</script><img src=x onerror="window.pwned = 2; alert(1)">'
    store_crafted_outputs(experiment, {g.pk: hostile for g in experiment.generations.all()})
    log_in(page, "bob", "password-bob")
    page.wait_for_selector("text=Start rating")
    page.keyboard.press("Enter")
    page.wait_for_selector("#panel .outputs")
    for _ in range(3):
        assert page.locator(".output .text").first.inner_text().startswith("<script>")
        assert page.evaluate("window.pwned === undefined")
        token = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison.token
        page.keyboard.press("3")
        wait_for(
            lambda t=token: Rating.objects.filter(rater=rater, comparison__token=t).exists(),
            timeout=10,
            message="no vote",
        )
        wait_for_next_panel(page, token)
    assert dialogs == []
    assert page.evaluate("document.querySelectorAll('.output img, .output script').length") == 0
    context.close()


def test_vote_keys_wake_after_the_reading_time_and_a_vote_can_be_undone(page, rater, experiment):
    experiment.min_seconds_per_vote = 2
    experiment.save(update_fields=["min_seconds_per_vote"])
    log_in(page, "bob", "password-bob")
    page.wait_for_selector("text=Start rating")
    page.keyboard.press("Enter")
    page.wait_for_selector("#panel .outputs")
    first = Lease.objects.get(rater=rater, completed_at__isnull=True).comparison

    expect(page.locator("#panel button[data-key='1']")).to_be_disabled()
    page.keyboard.press("1")  # still reading: nothing happens
    expect(page.locator("#panel button[data-key='1']")).to_be_enabled(timeout=10_000)
    assert not Rating.objects.filter(rater=rater).exists()
    page.keyboard.press("1")
    expect(page.locator(".bar .progress strong").first).to_have_text("1")
    rating = Rating.objects.get(rater=rater, comparison=first)
    assert rating.seconds >= 2 and not rating.too_fast

    page.keyboard.press("u")
    expect(page.locator(".bar .progress strong").first).to_have_text("0")
    page.wait_for_selector(f"#panel form[hx-post*='{first.token}']")
    assert not Rating.objects.filter(rater=rater).exists()
    assert page.console_errors == []

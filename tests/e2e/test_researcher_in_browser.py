"""A researcher's day in a real browser: review a flagged comparison, read every arm's output for a
prompt, and download each export and read it back."""

import csv
import io
import json

import pytest
from playwright.sync_api import expect

from dashboard.models import Rating
from evaluator.models import Comparison, Generation
from tests.dashboard.study_data import flag_one, study, vote_for
from tests.e2e.conftest import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def experiment(tiny_model_path, rater, second_rater):
    """Four comparisons; the rater flags one, the second rater votes k=4 on each of them."""
    experiment = study(
        tiny_model_path, name="browser-study", raters=3, texts={("Premise one:", "k=4"): "Deep × answer"}
    )
    flag_one(rater, "The outputs are cut off")
    for comparison in Comparison.objects.ready().filter(experiment=experiment):
        vote_for(second_rater, comparison, "k=4")
    return experiment


def csp_violations(page) -> list[str]:
    return [e for e in page.console_errors if "Content Security Policy" in e]


def download(page, link_text: str) -> bytes:
    with page.expect_download() as info:
        page.get_by_role("link", name=link_text, exact=True).click()
    with open(info.value.path(), "rb") as file:
        return file.read()


def test_a_researcher_reviews_flags_reads_outputs_and_downloads_exports(page, admin_user, experiment):
    log_in(page, "alice", "password-alice")

    page.get_by_role("link", name="Flags", exact=True).click()
    flagged = page.locator("article.flagged")
    expect(flagged).to_have_count(1)
    expect(flagged.locator(".reasons")).to_contain_text("The outputs are cut off")
    page.evaluate("window.stillTheSamePage = true")
    flagged.get_by_role("button", name="Exclude from results").click()
    expect(page.locator("article.flagged .decision")).to_contain_text(
        "Decided: excluded from results by alice"
    )
    assert page.evaluate("window.stillTheSamePage === true")  # swapped in place by htmx
    assert Comparison.objects.get(flag_count=1).flag_decision == "exclude"

    page.goto(f"/results/{experiment.pk}/")
    exclusions = page.locator(".exclusions")
    expect(exclusions).to_contain_text("3 of 4 preference votes counted, 1 left out.")
    expect(exclusions).to_contain_text("Flagged comparisons: 1 votes, left out.")

    page.locator("#section-philosophy").get_by_role("link", name="prompts where k=1 lost").click()
    expect(page.locator("#browser .progress")).to_contain_text("where k=1 lost at least one decisive vote")
    page.select_option("select[name=category]", "philosophy")
    page.select_option("select[name=lost]", "")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**category=philosophy**")
    premise = page.locator("article.prompt-outputs", has_text="Premise one:")
    expect(premise.locator(".arm-output")).to_have_count(2)
    expect(premise.locator(".arm-output h3")).to_have_text(["k=1", "k=4"])
    expect(premise).to_contain_text("k=1 on Premise one:")
    expect(premise).to_contain_text("Deep × answer")

    page.goto(f"/results/{experiment.pk}/")
    votes = list(csv.DictReader(io.StringIO(download(page, "votes (CSV)").decode())))
    assert len(votes) == Rating.objects.count() == 4
    assert {row["flag_decision"] for row in votes} == {"exclude", ""}
    spreadsheet = download(page, "votes for spreadsheets (CSV with BOM)")
    assert spreadsheet.startswith(b"\xef\xbb\xbf")
    assert list(csv.DictReader(io.StringIO(spreadsheet.decode("utf-8-sig")))) == votes
    outputs = [
        json.loads(line) for line in download(page, "every output (JSONL)").decode().split("\n") if line
    ]
    assert len(outputs) == Generation.objects.filter(experiment=experiment).count()
    assert "Deep × answer" in {record["text"] for record in outputs}
    timeline = list(csv.DictReader(io.StringIO(download(page, "scores over time (CSV)").decode())))
    assert timeline[-1]["votes_so_far"] == "3"  # the excluded vote does not count
    assert csp_violations(page) == []


def test_the_experiment_admin_page_follows_its_outputs_without_a_reload(page, admin_user, experiment):
    waiting = Generation.objects.filter(experiment=experiment).first()
    Generation.objects.filter(pk=waiting.pk).update(status=Generation.Status.PENDING)
    log_in(page, "alice", "password-alice")
    page.goto(f"/admin/evaluator/experiment/{experiment.pk}/change/")
    panel = page.locator("#live")
    expect(panel).to_contain_text("Outputs 7 / 8")
    page.evaluate("window.stillTheSamePage = true")

    Generation.objects.filter(pk=waiting.pk).update(status=Generation.Status.DONE)
    expect(panel).to_contain_text("Outputs 8 / 8", timeout=15_000)  # re-fetched on its timer
    assert page.evaluate("window.stillTheSamePage === true")
    assert csp_violations(page) == []

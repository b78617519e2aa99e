"""An admin defining an arm in a real browser: the form shows only the fields the chosen kinds use."""

import pytest
from playwright.sync_api import expect

from evaluator.models import Variant
from tests.e2e.conftest import log_in
from tests.factories import make_checkpoint

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEPTH_ROWS = ["k", "mapping", "default_k", "p", "k_min", "k_max"]


def shown(page, names: list[str]) -> list[str]:
    return [name for name in names if page.locator(f"#id_{name}").is_visible()]


def test_the_arm_form_shows_the_fields_of_the_chosen_kinds(page, admin_user, tiny_model_path):
    checkpoint = make_checkpoint(tiny_model_path)
    log_in(page, "alice", "password-alice")
    page.goto("/admin/evaluator/variant/add/")
    assert shown(page, DEPTH_ROWS) == ["k"]
    assert shown(page, ["factor", "input_budget"]) == ["input_budget"]

    page.select_option("#id_depth_kind", "by_tag")
    assert shown(page, DEPTH_ROWS) == ["mapping", "default_k"]
    page.select_option("#id_depth_kind", "dynamic")
    assert shown(page, DEPTH_ROWS) == ["p", "k_min", "k_max"]
    page.select_option("#id_context_kind", "yarn")
    assert shown(page, ["factor", "input_budget"]) == ["factor", "input_budget"]

    # A value typed for YaRN and left behind under "native": the server refuses it, and the field stays in
    # sight with its error, so the admin can see what to fix.
    page.select_option("#id_checkpoint", str(checkpoint.pk))
    page.fill("#id_name", "adaptive")
    page.fill("#id_p", "0.9")
    page.fill("#id_k_min", "1")
    page.fill("#id_k_max", "8")
    page.fill("#id_factor", "4")
    page.select_option("#id_context_kind", "native")
    assert shown(page, ["factor"]) == []
    page.click("input[name=_save]")
    expect(page.locator(".field-factor .errorlist")).to_contain_text("A native context has factor 1")
    assert shown(page, [*DEPTH_ROWS, "factor"]) == ["p", "k_min", "k_max", "factor"]
    assert not Variant.objects.exists()

    page.select_option("#id_context_kind", "yarn")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    variant = Variant.objects.get(name="adaptive")
    assert variant.depth == {"kind": "dynamic", "p": 0.9, "k_min": 1, "k_max": 8}
    assert variant.context == {"kind": "yarn", "factor": 4.0}
    assert page.console_errors == []

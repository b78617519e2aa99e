"""A real browser (Debian's chromium, driven by Playwright) against a live server on the test database."""

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make there are
# ordinary blocking calls on their own connection, which is what this switch allows.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# The same patience for `expect(...)` as for the pages' own waits (its default is 5 s): a loaded 2-core CI
# machine can take longer to swap a panel.
expect.set_options(timeout=15_000)


@pytest.fixture
def page(browser, live_server) -> Iterator:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    page.console_errors = []
    page.dialogs = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")

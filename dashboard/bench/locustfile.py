"""Locust scenario of a rating study at human pace: raters who read before each vote, researchers who
keep results pages open.

`manage.py bench_rating` runs it with the locust command line; the spec it reads (accounts, experiment,
think time, measured window) and the figures it writes back travel as JSON files named by the environment
variable DEPTH_ARENA_BENCH_SPEC. The measured window opens once every simulated person has logged in
(logins hash a password each, a cost real people spread over hours) and lasts the spec's duration.
"""

import json
import os
import random
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import gevent
from gevent.event import Event
from locust import FastHttpUser, between, constant_pacing, events, task
from locust.exception import StopUser

SPEC = json.loads(Path(os.environ["DEPTH_ARENA_BENCH_SPEC"]).read_text())
VERDICTS = ["left", "right", "tie", "both_bad"]
LOGIN_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
PAGE_TOKEN = re.compile(r'"X-CSRFToken": "([^"]+)"')
VOTE_URL = re.compile(r'hx-post="/rate/([A-Za-z0-9_-]+)/vote/"')
TITLE = re.compile(r"<title>([^<]*)</title>")
REFUSAL = re.compile(r'<p class="error" role="alert">([^<]*)</p>')

accounts = {"rater": list(SPEC["raters"]), "researcher": list(SPEC["researchers"])}
everyone_in = Event()
logged_in = 0
figures: dict = {
    "window": None,
    "latencies_ms": {},
    "failures": 0,
    "failure_examples": [],
    "accepted_votes": [],
}


@events.request.add_listener
def record(name, response_time, exception, **_) -> None:
    if exception is not None:
        figures["failures"] += 1
        if len(figures["failure_examples"]) < 5:
            figures["failure_examples"].append(f"{name}: {exception}")
    else:
        figures["latencies_ms"].setdefault(name, []).append([time.time(), response_time])


@events.test_start.add_listener
def measure(environment, **_) -> None:
    def window() -> None:
        everyone_in.wait()
        figures["window"] = [time.time()]
        gevent.sleep(SPEC["duration"])
        figures["window"].append(time.time())
        environment.runner.quit()

    gevent.spawn(window)


@events.quitting.add_listener
def write_figures(**_) -> None:
    Path(SPEC["out"]).write_text(json.dumps(figures))


class Person(FastHttpUser):
    abstract = True
    role = ""

    def on_start(self) -> None:
        global logged_in
        self.username = accounts[self.role].pop()
        page = self.client.get("/accounts/login/", name="login page").text
        form = {
            "csrfmiddlewaretoken": LOGIN_TOKEN.search(page).group(1),
            "username": self.username,
            "password": SPEC["password"],
        }
        with self.client.post("/accounts/login/", name="log in", catch_response=True, **self.form(form)) as r:
            page = r.text or ""
            refused = 'name="password"' in page or PAGE_TOKEN.search(page) is None
            if refused:
                r.failure(f"{self.username} could not log in")
        if refused:
            raise StopUser
        self.csrf = PAGE_TOKEN.search(page).group(1)
        self.arrive(page)
        logged_in += 1
        if logged_in == len(SPEC["raters"]) + len(SPEC["researchers"]):
            everyone_in.set()

    def arrive(self, page: str) -> None:
        """What the person does first after logging in, on the page the login led to."""

    @staticmethod
    def form(fields: dict) -> dict:
        return {"data": urlencode(fields), "headers": {"Content-Type": "application/x-www-form-urlencoded"}}

    def htmx(self, method: str, path: str, *, name: str, fields: dict | None = None):
        """A request as htmx sends it: the HX-Request header, and on a POST the CSRF token in a header."""
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf}
        data = None
        if fields is not None:
            data = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.client.request(method, path, name=name, data=data, headers=headers, catch_response=True)


class Rater(Person):
    """Reads the two outputs (3-9 s by default), then votes with a key; now and then skips."""

    role = "rater"
    wait_time = between(*SPEC["think"])

    def arrive(self, page: str) -> None:
        self.panel = page
        if VOTE_URL.search(page) is None and 'name="target"' in page:
            with self.htmx(
                "POST", "/rate/session/start/", name="start session", fields={"target": 1000}
            ) as r:
                self.panel = r.text

    @task
    def judge(self) -> None:
        match = VOTE_URL.search(self.panel)
        if match is None:  # nothing to rate: the panel asks again, as the page does every 10 s
            with self.htmx("GET", "/rate/", name="panel") as response:
                self.panel = response.text or ""
            return
        token = match.group(1)
        if random.random() < SPEC["skip_share"]:
            action, fields = "skip", {}
        else:
            action, fields = "vote", {"verdict": random.choice(VERDICTS)}
        with self.htmx("POST", f"/rate/{token}/{action}/", name=action, fields=fields) as response:
            self.panel = response.text or ""
            refusal = REFUSAL.search(self.panel)
            if refusal:
                response.failure(f"{action} refused: {refusal.group(1)}")
            elif 'id="panel"' not in self.panel:
                title = TITLE.search(self.panel)
                response.failure(f"{action} was answered with another page: {title and title.group(1)!r}")
            elif response.ok and action == "vote":
                figures["accepted_votes"].append([self.username, token])


class Researcher(Person):
    """Keeps a results page open: loads it once, then its live part comes again every few seconds."""

    role = "researcher"
    fixed_count = len(SPEC["researchers"])
    wait_time = constant_pacing(SPEC["refresh_seconds"])

    def arrive(self, page: str) -> None:
        self.client.get(f"/results/{SPEC['experiment']}/", name="results page")

    @task
    def refresh(self) -> None:
        with self.htmx("GET", f"/results/{SPEC['experiment']}/", name="results live") as response:
            if 'class="vote-count"' not in (response.text or ""):
                response.failure("the live part of the results page has no vote count")

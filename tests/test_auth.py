"""Logging in and out: Django's own sessions and users, with login throttling."""

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_logging_out_ends_the_session(client, rater):
    client.force_login(rater)
    key = client.cookies["sessionid"].value
    client.post(reverse("logout"))
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get(reverse("rate")).status_code == 302


def test_an_inactive_user_is_logged_out(client, rater):
    client.force_login(rater)
    rater.is_active = False
    rater.save(update_fields=["is_active"])
    assert client.get(reverse("rate")).status_code == 302


def test_the_login_page_logs_a_rater_in(client, rater):
    response = client.post(reverse("login"), {"username": "bob", "password": "password-bob"})
    assert response.status_code == 302
    assert client.get(reverse("rate")).status_code == 200

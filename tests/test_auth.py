"""Sessions and the logged-in user, read with fixed SQL: the same answers as Django's own classes."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.contrib.sessions.models import Session
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from config.sessions import SessionStore

pytestmark = pytest.mark.django_db


def logged_in_key(client, user) -> str:
    client.force_login(user)
    return client.cookies["sessionid"].value


def test_a_session_reads_as_django_reads_it(client, rater):
    key = logged_in_key(client, rater)
    assert SessionStore(key).load() == DjangoSessionStore(key).load() != {}


def test_an_expired_or_unknown_session_is_empty_and_forgets_its_key(client, rater):
    key = logged_in_key(client, rater)
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    for session in (SessionStore(key), SessionStore("no-such-session-key-0123456789")):
        assert session.load() == {}
        assert session.session_key is None
    assert client.get(reverse("rate")).status_code == 302  # back to the login page


def test_the_session_user_is_loaded_unless_inactive_or_gone(client, rater):
    key = logged_in_key(client, rater)
    request = RequestFactory().get("/")
    request.session = SessionStore(key)
    assert get_user(request) == rater
    rater.is_active = False
    rater.save(update_fields=["is_active"])
    request.session = SessionStore(key)
    assert get_user(request).is_anonymous
    rater.delete()
    request.session = SessionStore(key)
    assert get_user(request).is_anonymous


def test_logging_out_ends_the_session(client, rater):
    key = logged_in_key(client, rater)
    client.post(reverse("logout"))
    assert SessionStore(key).load() == {}
    assert client.get(reverse("rate")).status_code == 302


def test_sessions_opened_with_djangos_backend_stay_logged_in(client, rater):
    client.force_login(rater, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(reverse("rate")).status_code == 200


def test_the_user_is_read_by_named_columns(client, rater):
    """A prepared `SELECT *` would fail on every request once a migration adds a column."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    key = logged_in_key(client, rater)
    request = RequestFactory().get("/")
    request.session = SessionStore(key)
    with CaptureQueriesContext(connection) as queries:
        assert get_user(request) == rater
    assert queries.captured_queries and all("*" not in q["sql"] for q in queries.captured_queries)


def test_the_user_comes_with_the_names_of_their_groups_in_one_statement(client, rater):
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rater.groups.add(Group.objects.create(name="reviewers, with a comma"))
    key = logged_in_key(client, rater)
    request = RequestFactory().get("/")
    request.session = SessionStore(key)
    with CaptureQueriesContext(connection) as queries:
        user = get_user(request)
    assert len(queries) == 2  # the session, then the user with their groups
    assert user.group_names == frozenset(rater.groups.values_list("name", flat=True))
    assert "raters" in user.group_names
    rater.groups.clear()
    request.session = SessionStore(key)
    assert get_user(request).group_names == frozenset()


def test_a_user_read_with_fixed_sql_equals_the_orms(rater):
    from django.contrib.auth import get_user_model

    from config.auth import UserBackend

    rater.last_login = timezone.now()
    rater.save()
    fixed, orm = UserBackend().get_user(rater.pk), get_user_model().objects.get(pk=rater.pk)
    for field in orm._meta.concrete_fields:
        assert getattr(fixed, field.attname) == getattr(orm, field.attname), field.name
    assert not fixed._state.adding and fixed._state.db == "default"


def test_the_raters_check_uses_the_groups_read_with_the_user_or_else_asks_the_database(
    rater, django_assert_num_queries
):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from config.auth import UserBackend
    from dashboard.permissions import is_rater

    user = UserBackend().get_user(rater.pk)
    with django_assert_num_queries(0):
        assert is_rater(user)
    plain = get_user_model().objects.get(pk=rater.pk)  # read by the ORM: no group names on it
    with django_assert_num_queries(1):
        assert is_rater(plain)
    rater.groups.clear()
    rater.groups.add(Group.objects.create(name="x\x1fraters,"))  # separators inside a name stay inside
    user = UserBackend().get_user(rater.pk)
    assert user.group_names == frozenset({"x\x1fraters,"})
    with django_assert_num_queries(0):
        assert not is_rater(user)

"""Who may do what: raters rate, results viewers read results, staff run everything."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest, HttpResponse

from dashboard.selectors import can_view_results

RATERS_GROUP = "raters"


def is_rater(user: AbstractBaseUser) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_staff or _in_group(user, RATERS_GROUP)


def _in_group(user: AbstractBaseUser, name: str) -> bool:
    """Membership of a group, checked on every rater request. The request's user usually comes with
    the names of their groups (config.auth reads them with the user); otherwise one indexed lookup."""
    names = getattr(user, "group_names", None)
    if names is not None:
        return name in names
    q = connection.ops.quote_name
    groups, members = q(Group._meta.db_table), q(Group.user_set.through._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {members} m JOIN {groups} g ON g.id = m.group_id"
            " WHERE m.user_id = %s AND g.name = %s",
            [user.pk, name],
        )
        return cursor.fetchone() is not None


def rater_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_rater(request.user):
            raise PermissionDenied("Rating is open to members of the raters group.")
        return view(request, *args, **kwargs)

    return wrapped


def results_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_view_results(request.user):
            raise PermissionDenied("Results are open to staff and to holders of the results permission.")
        return view(request, *args, **kwargs)

    return wrapped

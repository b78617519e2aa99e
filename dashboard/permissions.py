"""Who may do what: raters rate, results viewers read results, staff run everything."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from dashboard.selectors import can_view_results

RATERS_GROUP = "raters"


def is_rater(user: AbstractBaseUser) -> bool:
    return (
        user.is_authenticated
        and user.is_active
        and (user.is_staff or user.groups.filter(name=RATERS_GROUP).exists())
    )


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

"""Rater accounts: invite many at once, give new passwords, and one-time links to set a password.

A rater is an account in the raters group (it carries the permission to rate); assigning experiments
to a rater limits them to those. Passwords are random and shown once; a link uses Django's
password-reset tokens, so it works once (setting the password changes what the token is made of) and
expires after PASSWORD_RESET_TIMEOUT.
"""

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from dashboard.models import RaterProfile
from dashboard.permissions import raters_group
from evaluator.models import Experiment

MAX_INVITES = 500  # at once; more is a typo or a file pasted by mistake


class RaterError(Exception):
    """Nothing was changed; the message says what to fix."""


@dataclass(frozen=True)
class Invitation:
    """One account after an invitation; `password` and `link` are shown once and stored nowhere."""

    username: str
    email: str
    created: bool
    password: str = ""
    link: str = ""


def new_password() -> str:
    return secrets.token_urlsafe(12)


def link_lifetime() -> str:
    """How long a set-password link stays valid, in words."""
    days = timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT).days
    return f"{days} days" if days != 1 else "1 day"


def set_password_link(*, user: AbstractBaseUser, base_url: str) -> str:
    """A one-time link where the user chooses a password and is logged in."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return base_url.rstrip("/") + reverse("set_password", args=[uid, token])


def parse_identifiers(text: str) -> list[str]:
    """User names or e-mail addresses, one per line (commas and spaces separate too), in order, once each.

    Raises RaterError naming every entry that is neither.
    """
    names: list[str] = []
    problems = []
    username_max = get_user_model()._meta.get_field("username").max_length
    for entry in re.split(r"[\s,;]+", text.strip()):
        if not entry or entry in names:
            continue
        try:
            if "@" in entry:
                validate_email(entry)
            else:
                UnicodeUsernameValidator()(entry)
            if len(entry) > username_max:
                raise ValidationError("too long")
        except ValidationError:
            problems.append(entry)
            continue
        names.append(entry)
    if problems:
        shown = ", ".join(repr(p[:60]) for p in problems[:10])
        raise RaterError(
            f"Not a user name or an e-mail address: {shown}. User names use letters, digits and @.+-_ "
            f"(at most {username_max} characters)."
        )
    if not names:
        raise RaterError("Give at least one user name or e-mail address.")
    if len(names) > MAX_INVITES:
        raise RaterError(f"{len(names)} raters at once is more than {MAX_INVITES}: invite them in parts.")
    return names


def invite_raters(
    *,
    identifiers: list[str],
    experiments: Iterable[Experiment] = (),
    base_url: str | None = None,
) -> list[Invitation]:
    """Create (or find) each rater, put them in the raters group and assign the experiments.

    A new account gets a random password, or with `base_url` a one-time link to choose one instead (its
    password is unusable until then). An existing account keeps its password; with `base_url` it gets a
    link too. An e-mail address is the new account's user name and its e-mail.
    """
    User = get_user_model()
    experiments = list(experiments)
    invitations = []
    with transaction.atomic():
        group = raters_group()
        for identifier in identifiers:
            email = identifier if "@" in identifier else ""
            user = User.objects.filter(username=identifier).first()
            if user is None and email:
                user = User.objects.filter(email__iexact=email).order_by("pk").first()
            created = user is None
            password = ""
            if created:
                user = User(username=identifier, email=email)
                if base_url is None:
                    password = new_password()
                    user.set_password(password)
                else:
                    user.set_unusable_password()
                user.save()
            user.groups.add(group)
            if experiments:
                profile, _ = RaterProfile.objects.get_or_create(user=user)
                profile.experiments.add(*experiments)
            link = set_password_link(user=user, base_url=base_url) if base_url is not None else ""
            invitations.append(Invitation(user.get_username(), user.email, created, password, link))
    return invitations


def reset_passwords(*, usernames: list[str]) -> dict[str, str]:
    """Give each account a new random password and lift a login lockout; returns username → password.

    Unknown names raise RaterError and nothing changes.
    """
    User = get_user_model()
    users = {user.get_username(): user for user in User.objects.filter(username__in=usernames)}
    unknown = [name for name in usernames if name not in users]
    if unknown:
        raise RaterError(f"No account named {', '.join(map(repr, unknown))}.")
    passwords = {}
    with transaction.atomic():
        for name in usernames:
            user = users[name]
            passwords[name] = new_password()
            user.set_password(passwords[name])
            user.save(update_fields=["password"])
    for name in usernames:
        axes_reset(username=name)
    return passwords

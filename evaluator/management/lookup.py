"""How the management commands find a row the user named on the command line."""

from django.core.management.base import CommandError
from django.db.models import Model


def by_id_or_name(model: type[Model], value: str, what: str):
    """The row with this id (when `value` is a number) or else this exact name; the error lists names."""
    match = model.objects.filter(pk=int(value)).first() if value.isdigit() else None
    match = match or model.objects.filter(name=value).first()
    if match is None:
        known = ", ".join(model.objects.order_by("name").values_list("name", flat=True)[:20]) or "none"
        raise CommandError(f"No {what} with id or name {value!r}. Known: {known}.")
    return match

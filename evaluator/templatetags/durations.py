"""Template filters for durations: "42 s", "7 min", "2 h 05 min"."""

from django import template

from evaluator.admin.formatting import format_duration

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """A number of seconds as a person reads it; "–" when unknown."""
    return "–" if seconds is None else format_duration(seconds)

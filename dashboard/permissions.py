"""Who may do what, as Django permissions: raters add ratings, results viewers view results, staff
see jobs. Superusers hold every permission."""

from django.contrib.auth.models import Group, Permission

RATERS_GROUP = "raters"
RATE = "dashboard.add_rating"
VIEW_RESULTS = "dashboard.view_results"


def raters_group() -> Group:
    """The group whose members may rate (it carries the permission to add ratings)."""
    group, _ = Group.objects.get_or_create(name=RATERS_GROUP)
    app_label, codename = RATE.split(".")
    group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group

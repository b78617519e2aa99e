"""Create rater accounts from the command line and print their one-time passwords or links."""

from django.core.management.base import BaseCommand, CommandError

from dashboard import raters
from evaluator.models import Experiment

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def find_experiments(names: list[str]) -> list[Experiment]:
    """Experiments by id or name; raises CommandError naming the ones not found."""
    found, missing = [], []
    for name in names:
        experiment = Experiment.objects.filter(name=name).first()
        if experiment is None and name.isdecimal():
            experiment = Experiment.objects.filter(pk=int(name)).first()
        if experiment is None:
            missing.append(name)
        else:
            found.append(experiment)
    if missing:
        known = ", ".join(Experiment.objects.order_by("name").values_list("name", flat=True)[:20]) or "none"
        raise CommandError(f"No experiment with id or name {', '.join(map(repr, missing))}. Known: {known}.")
    return found


class Command(BaseCommand):
    help = (
        "Create raters (user names or e-mail addresses) in the raters group and print each one's password "
        "once, or with --link a one-time link to choose a password. Existing accounts keep their password "
        "and are added to the group (and the experiments)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="+", help="User names or e-mail addresses.")
        parser.add_argument(
            "--link",
            action="store_true",
            help="Print a one-time link to set a password instead of a password (works once, expires).",
        )
        parser.add_argument(
            "--base-url",
            default=DEFAULT_BASE_URL,
            help=f"Where raters open the service, for the links (default {DEFAULT_BASE_URL}).",
        )
        parser.add_argument(
            "--experiments",
            nargs="+",
            default=[],
            metavar="EXPERIMENT",
            help="Ids or names of the experiments these raters rate (default: any).",
        )

    def handle(self, *args, names: list[str], link: bool, base_url: str, experiments: list[str], **options):
        chosen = find_experiments(experiments)
        try:
            identifiers = raters.parse_identifiers("\n".join(names))
            invitations = raters.invite_raters(
                identifiers=identifiers, experiments=chosen, base_url=base_url if link else None
            )
        except raters.RaterError as exc:
            raise CommandError(str(exc)) from exc
        for invitation in invitations:
            state = "created" if invitation.created else "exists already"
            if invitation.link:
                secret = f"link (one use, {raters.link_lifetime()}): {invitation.link}"
            elif invitation.password:
                secret = f"password: {invitation.password}  (shown once)"
            else:
                secret = "password unchanged (manage.py reset_passwords gives a new one)"
            self.stdout.write(f"{invitation.username} ({state}): {secret}")
        if chosen:
            self.stdout.write(f"Assigned to: {', '.join(e.name for e in chosen)}")

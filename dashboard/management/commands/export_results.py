"""Write an experiment's votes or aggregates as CSV, the same files the results page offers for download."""

from django.core.management.base import BaseCommand, CommandError

from dashboard import exports
from evaluator.models import Experiment

KINDS = ("votes", "aggregates")


class Command(BaseCommand):
    help = (
        "Export one experiment's results as CSV: every vote (--kind votes, the default) or the scores per "
        "category and arm (--kind aggregates, with the page's default exclusions). Written to standard "
        "output unless --out names a file."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("experiment", help="The experiment's id or its exact name.")
        parser.add_argument("--kind", choices=KINDS, default="votes", help="votes (default) or aggregates.")
        parser.add_argument("--out", metavar="FILE", help="Write to FILE instead of standard output.")

    def handle(self, *args, experiment: str, kind: str, out: str | None, **options) -> None:
        found = find_experiment(experiment)
        chunks = exports.votes_csv(found) if kind == "votes" else exports.aggregates_csv(found)
        if out is None:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        try:
            with open(out, "w", encoding="utf-8", newline="") as file:
                for chunk in chunks:
                    file.write(chunk)
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror}.") from exc
        self.stderr.write(f"Wrote the {kind} of experiment {found.pk} ({found.name}) to {out}.")


def find_experiment(reference: str) -> Experiment:
    """By exact name first (a name may be all digits), then by id."""
    found = Experiment.objects.filter(name=reference).first()
    if found is None and reference.isdigit():
        found = Experiment.objects.filter(pk=int(reference)).first()
    if found is None:
        names = ", ".join(repr(name) for name in Experiment.objects.values_list("name", flat=True)[:10])
        raise CommandError(
            f"No experiment has the id or name {reference!r}. "
            + (f"Experiments: {names}." if names else "There are no experiments yet.")
        )
    return found

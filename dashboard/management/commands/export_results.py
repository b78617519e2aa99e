"""Write an experiment's votes, aggregates, outputs or scores over time, the files the results page offers."""

from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError

from dashboard import exports
from dashboard.analysis import Exclusions
from evaluator.models import Experiment

KINDS = ("votes", "aggregates", "outputs", "timeline")
FORMATS = {"votes": ("csv",), "aggregates": ("csv",), "outputs": ("jsonl", "parquet"), "timeline": ("csv",)}


class Command(BaseCommand):
    help = (
        "Export one experiment's results as CSV: every vote (--kind votes, the default) or the scores per "
        "category and arm (--kind aggregates, with the page's default exclusions), every output with its "
        "arm, prompt, cost and routing (--kind outputs, JSONL or Parquet), or each arm's score at every "
        "tenth of the votes (--kind timeline). Written to standard output unless --out names a file."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("experiment", help="The experiment's id or its exact name.")
        parser.add_argument(
            "--kind", choices=KINDS, default="votes", help="votes (default), aggregates, outputs or timeline."
        )
        parser.add_argument("--out", metavar="FILE", help="Write to FILE instead of standard output.")
        parser.add_argument(
            "--format",
            choices=sorted({f for formats in FORMATS.values() for f in formats}),
            help="csv (votes, aggregates, timeline); jsonl (outputs' default) or parquet (needs pyarrow).",
        )
        parser.add_argument("--texts", action="store_true", help="Votes: add both outputs' texts.")
        parser.add_argument(
            "--excel", action="store_true", help="Begin with a UTF-8 byte order mark (for spreadsheets)."
        )
        parser.add_argument(
            "--identical-as-ties",
            action="store_true",
            help="Aggregates: count comparisons whose two outputs are the same text as ties in the scores.",
        )

    def handle(self, *args, experiment: str, kind: str, out: str | None, **options) -> None:
        found = find_experiment(experiment)
        fmt = options.get("format") or FORMATS[kind][0]
        if fmt not in FORMATS[kind]:
            raise CommandError(f"--kind {kind} is written as {' or '.join(FORMATS[kind])}, not {fmt}.")
        if fmt == "parquet":
            self._write_parquet(found, out)
            return
        chunks = self._chunks(
            found,
            kind,
            texts=options.get("texts", False),
            identical_as_ties=options.get("identical_as_ties", False),
        )
        if options.get("excel"):
            chunks = exports.with_bom(chunks)
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

    @staticmethod
    def _chunks(experiment: Experiment, kind: str, *, texts: bool, identical_as_ties: bool) -> Iterator[str]:
        if kind == "votes":
            return exports.votes_csv(experiment, texts=texts)
        if kind == "outputs":
            return exports.outputs_jsonl(experiment)
        if kind == "timeline":
            return exports.timeline_csv(experiment)
        # The aggregates carry verdicts, length-controlled scores and identical-output counts.
        return exports.aggregates_csv(experiment, exclusions=Exclusions(identical_as_ties=identical_as_ties))

    def _write_parquet(self, experiment: Experiment, out: str | None) -> None:
        if out is None:
            raise CommandError("Parquet is binary: name the file with --out.")
        try:
            rows = exports.write_outputs_parquet(experiment, out)
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror}.") from exc
        self.stderr.write(f"Wrote {rows} outputs of experiment {experiment.pk} ({experiment.name}) to {out}.")


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

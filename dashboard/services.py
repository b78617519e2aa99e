"""Writes of the dashboard: hand a rater the next comparison, take their vote, skip or flag, sessions."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, connections, models, transaction
from django.db.models import F
from django.utils import timezone

from config import rows
from dashboard.models import Lease, RaterProfile, Rating, RatingSession
from evaluator import events
from evaluator.models import CRITERIA, Comparison, Experiment, Generation, Prompt

DEFAULT_SESSION_TARGET = 20
CRITERION_VERDICTS = ("left", "right", "tie")
PICK_ATTEMPTS = 5  # picks undone (a lease committed meanwhile put them over k) before giving up


class RatingError(Exception):
    """The action cannot be taken; the message says why and what to do."""


@dataclass(frozen=True)
class ComparisonPage:
    """What the rating page shows of a comparison, read in one statement: the prompt, the two outputs as
    sides A and B (a gold check's degraded copy in its place) and the experiment's guidelines and
    criteria. Nothing in it names an arm."""

    pk: int
    token: str
    experiment_id: int
    raters_per_comparison: int
    prompt: str
    left_text: str
    right_text: str
    guidelines: str
    criteria: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Assignment:
    lease_id: int
    page: ComparisonPage

    @property
    def comparison(self) -> Comparison:
        return Comparison.objects.get(pk=self.page.pk)


@cache
def _page_columns_sql(vendor: str) -> tuple[str, str]:
    """The columns of a ComparisonPage and the joins they need, for a statement over comparison `c`."""
    q = connection.ops.quote_name
    prompt, generation = q(Prompt._meta.db_table), q(Generation._meta.db_table)
    experiment = q(Experiment._meta.db_table)
    columns = (
        "c.id, c.token, c.experiment_id, e.raters_per_comparison, p.text,"
        " CASE WHEN c.gold_side = 'left' THEN c.gold_text ELSE l.text END,"
        " CASE WHEN c.gold_side = 'right' THEN c.gold_text ELSE r.text END,"
        " e.guidelines, e.criteria"
    )
    joins = (
        f"JOIN {experiment} e ON e.id = c.experiment_id JOIN {prompt} p ON p.id = c.prompt_id"
        f" JOIN {generation} l ON l.id = c.left_id JOIN {generation} r ON r.id = c.right_id"
    )
    return columns, joins


def _criteria_from_db(value) -> list[str]:
    """An experiment's criteria read with SQL (JSON text, as Django has both databases return it)."""
    return Experiment._meta.get_field("criteria").from_db_value(value, None, connection) or []


def _page_from_row(row: tuple) -> ComparisonPage:
    pk, token, experiment_id, k, prompt, left, right, guidelines, criteria = row
    criteria = _criteria_from_db(criteria)
    return ComparisonPage(
        pk=pk,
        token=token,
        experiment_id=experiment_id,
        raters_per_comparison=k,
        prompt=prompt,
        left_text=left,
        right_text=right,
        guidelines=guidelines,
        criteria=tuple((name, CRITERIA[name]) for name in criteria if name in CRITERIA),
    )


@cache
def _pick_and_lease_sql(vendor: str) -> str:
    """One statement that picks the comparison a rater should judge next and leases it to them.

    A rater who still holds an open lease gets nothing from it: that lease is theirs to finish first.

    Written as SQL, not built with the ORM: it runs on every vote, and as a single INSERT … SELECT it costs
    one round trip where the ORM needed five (BEGIN, SELECT … FOR UPDATE, INSERT, COMMIT and building the
    query). On PostgreSQL the picked row is locked with SKIP LOCKED, so concurrent raters pick different rows
    instead of queueing behind one; SQLite writes one transaction at a time anyway.

    On PostgreSQL the experiments are walked in priority order and each one's comparisons along the index
    on (experiment, ratings_count DESC, id), so the pick stops at the first comparison that fits instead of
    weighing and sorting every comparison of every experiment (3 ms at 700 comparisons, growing with them).
    SQLite has no LATERAL; it weighs them all, which suits the embedded default's size. On both, of two
    experiments with the same priority the older one is finished first.
    """
    q = connection.ops.quote_name
    comparison, experiment = q(Comparison._meta.db_table), q(Experiment._meta.db_table)
    lease = q(Lease._meta.db_table)
    profile = q(RaterProfile._meta.db_table)
    limits = q(RaterProfile.experiments.through._meta.db_table)
    experiment_fits = f"""
        e.status = %(scheduled)s
          AND (
                NOT EXISTS (
                    SELECT 1 FROM {limits} l JOIN {profile} p ON p.id = l.raterprofile_id
                    WHERE p.user_id = %(rater)s
                )
                OR e.id IN (
                    SELECT l.experiment_id FROM {limits} l JOIN {profile} p ON p.id = l.raterprofile_id
                    WHERE p.user_id = %(rater)s
                )
              )"""
    holds_none = f"""
        NOT EXISTS (
                SELECT 1 FROM {lease} held
                WHERE held.rater_id = %(rater)s AND held.completed_at IS NULL AND held.expires_at > %(now)s
              )"""
    comparison_fits = f"""
        c.ready_at IS NOT NULL AND NOT c.is_identical AND c.ratings_count < e.raters_per_comparison
          AND NOT EXISTS (
                SELECT 1 FROM {lease} mine WHERE mine.comparison_id = c.id AND mine.rater_id = %(rater)s
              )
          AND c.ratings_count + (
                SELECT COUNT(*) FROM {lease} open_lease
                WHERE open_lease.comparison_id = c.id
                  AND open_lease.completed_at IS NULL AND open_lease.expires_at > %(now)s
              ) < e.raters_per_comparison"""
    insert = f"""
        INSERT INTO {lease}
            (comparison_id, rater_id, started_at, expires_at, completed_at, skipped, flag_reason)"""
    values = "%(rater)s, %(now)s, %(expires)s, NULL, FALSE, ''"
    if vendor == "postgresql":
        return f"""{insert}
        SELECT pick.id, {values}
        FROM (
            SELECT e.id, e.priority, e.raters_per_comparison FROM {experiment} e
            WHERE {experiment_fits} AND {holds_none}
            ORDER BY e.priority DESC, e.id
            OFFSET 0
        ) e
        CROSS JOIN LATERAL (
            SELECT c.id FROM {comparison} c
            WHERE c.experiment_id = e.id AND {comparison_fits}
            ORDER BY c.ratings_count DESC, c.id
            LIMIT 1 FOR UPDATE SKIP LOCKED
        ) pick
        ORDER BY e.priority DESC, e.id
        LIMIT 1
        ON CONFLICT DO NOTHING
        RETURNING id, comparison_id
    """
    return f"""{insert}
        SELECT c.id, {values}
        FROM {comparison} c JOIN {experiment} e ON e.id = c.experiment_id
        WHERE {experiment_fits} AND {holds_none} AND {comparison_fits}
        ORDER BY e.priority DESC, e.id, c.ratings_count DESC, c.id
        LIMIT 1
        ON CONFLICT DO NOTHING
        RETURNING id, comparison_id
    """


def _pick_and_lease(params: dict, attempts: int = PICK_ATTEMPTS) -> tuple[int, ComparisonPage] | None:
    """Lease the next comparison and check, in the same transaction, that it is not over its k raters.

    The pick reads the open leases as they were when the statement began. A lease that another rater's
    transaction committed after that, on the row this one then locks, is missed (a lock alone does not make
    PostgreSQL re-read the row). The check is a new statement, so it sees that lease: the pick is undone and
    made again. Every rater goes for the most-started comparisons first, so this does happen under load.
    The check also reads what the page shows, so a vote's next comparison costs no further statement.

    It joins the caller's transaction when there is one (a vote's), so the undo deletes the lease row it
    just wrote rather than rolling back to a savepoint, which would cost two statements on every pick.
    """
    pick, check = _pick_and_lease_sql(connection.vendor), _check_sql(connection.vendor)
    undo = f"DELETE FROM {connection.ops.quote_name(Lease._meta.db_table)} WHERE id = %s"
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        for _ in range(attempts):
            cursor.execute(pick, params)
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(check, {"comparison": row[1], "now": params["now"]})
            over_k, *page = cursor.fetchone()
            if not over_k:
                return row[0], _page_from_row(page)
            cursor.execute(undo, [row[0]])
    return None


@cache
def _check_sql(vendor: str) -> str:
    q = connection.ops.quote_name
    comparison, lease = q(Comparison._meta.db_table), q(Lease._meta.db_table)
    columns, joins = _page_columns_sql(vendor)
    return f"""
        SELECT c.ratings_count + (
                 SELECT COUNT(*) FROM {lease} l
                 WHERE l.comparison_id = c.id AND l.completed_at IS NULL AND l.expires_at > %(now)s
               ) > e.raters_per_comparison,
               {columns}
        FROM {comparison} c {joins}
        WHERE c.id = %(comparison)s
    """


@cache
def _page_sql(vendor: str) -> str:
    columns, joins = _page_columns_sql(vendor)
    comparison = connection.ops.quote_name(Comparison._meta.db_table)
    return f"SELECT {columns} FROM {comparison} c {joins} WHERE c.id = %s"


def comparison_page(pk: int) -> ComparisonPage:
    """What the rating page shows of comparison `pk` (a lease the rater already held)."""
    with connection.cursor() as cursor:
        cursor.execute(_page_sql(connection.vendor), [pk])
        return _page_from_row(cursor.fetchone())


def _open_lease(rater: AbstractBaseUser, now) -> Lease | None:
    return (
        Lease.objects.filter(rater=rater, completed_at__isnull=True, expires_at__gt=now)
        .order_by("started_at")
        .first()
    )


def next_comparison(*, rater: AbstractBaseUser, after_vote: bool = False) -> Assignment | None:
    """The comparison this rater should judge now, leased to them, or None when nothing is waiting.

    A lease the rater already holds comes first; otherwise the highest-priority experiment's
    comparisons that still need votes, those already started first. A rater never gets the same
    comparison twice, no comparison gets more raters than its experiment asks for, and a rater limited
    to some experiments gets only theirs. Rows another request is leasing right now are skipped.
    """
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    expires_at = now + timedelta(seconds=settings.LEASE_SECONDS)
    params = {
        "rater": rater.pk,
        "now": adapt(now),
        "expires": adapt(expires_at),
        "scheduled": Experiment.Status.SCHEDULED,
    }
    # Right after a vote (`after_vote`) the rater usually holds no lease, so the pick comes first; it
    # leases nothing to a rater who still holds one (a second tab), and then that lease is read. A page
    # load usually finds the lease it showed before, so there the read comes first and writes nothing.
    if not after_vote and (lease := _open_lease(rater, now)) is not None:
        return Assignment(lease_id=lease.pk, page=comparison_page(lease.comparison_id))
    picked = _pick_and_lease(params)
    if picked is not None:
        lease_id, page = picked
        return Assignment(lease_id=lease_id, page=page)
    lease = _open_lease(rater, now)  # another request of theirs may have leased one just now
    if lease is None:
        return None
    return Assignment(lease_id=lease.pk, page=comparison_page(lease.comparison_id))


def _lease_for_update(rater: AbstractBaseUser, token: str) -> tuple[int, Lease | None]:
    """The comparison's id and the rater's lease on it, locked.

    Only the lease is locked here, and a comparison row only later by an UPDATE: the same order as a
    vote's, so a vote and a skip or flag sent together by one rater queue instead of deadlocking.
    """
    comparison_id = Comparison.objects.filter(token=token).values_list("pk", flat=True).first()
    if comparison_id is None:
        raise RatingError("This comparison does not exist.")
    lease = Lease.objects.select_for_update().filter(comparison_id=comparison_id, rater=rater).first()
    return comparison_id, lease


def _clean_criteria(asked: list[str], criteria: dict[str, str]) -> dict[str, str]:
    """The criterion verdicts given, checked against the criteria the experiment asks about."""
    cleaned = {}
    for name, value in criteria.items():
        if not value:
            continue
        if name not in asked or name not in CRITERIA:
            raise RatingError(f"This experiment does not ask about {name!r}.")
        if value not in CRITERION_VERDICTS:
            raise RatingError(f"{CRITERIA[name]}: choose A, B or tie.")
        cleaned[name] = value
    return cleaned


def _check_verdict(verdict: str) -> None:
    if verdict not in Rating.Verdict.values:
        raise RatingError(f"Unknown verdict {verdict!r}: choose one of {', '.join(Rating.Verdict.values)}.")


def submit_rating(
    *,
    rater: AbstractBaseUser,
    token: str,
    verdict: str,
    comment: str = "",
    criteria: dict[str, str] | None = None,
) -> Rating:
    """Store one vote in the rater's active session (which ends at its target). Submitting the same vote
    twice stores it once and returns the first. The vote view uses vote_and_next."""
    _check_verdict(verdict)
    with transaction.atomic():
        rating, session, counts = _store_vote(rater, token, verdict, comment, criteria)
        if session is not None:
            _progress_after_vote(session, counts)
    return rating


@dataclass(frozen=True)
class AfterVote:
    rating: Rating
    session: RatingSession | None  # the rater's session the vote counted in, as the vote left it
    progress: "SessionSummary | None"  # the session's, counting this vote
    assignment: Assignment | None  # the next comparison, when the session goes on


def vote_and_next(
    *,
    rater: AbstractBaseUser,
    token: str,
    verdict: str,
    comment: str = "",
    criteria: dict[str, str] | None = None,
) -> AfterVote:
    """Store a vote in the rater's active session and hand them their next comparison, in one
    transaction: one commit, not two. As with submit_rating, a vote sent twice is stored once; the
    second sees the comparison the first handed out.

    On PostgreSQL the whole of it is one call of a database function (see _vote_function): one round
    trip where its statements one by one cost six, BEGIN and COMMIT included.
    """
    _check_verdict(verdict)
    if connection.vendor == "postgresql":
        after = _vote_and_next_in_postgresql(rater, token, verdict, comment, criteria or {})
        if after is not None:
            return after
    with transaction.atomic():
        rating, session, counts = _store_vote(rater, token, verdict, comment, criteria)
        if session is None:
            return AfterVote(rating=rating, session=None, progress=None, assignment=None)
        progress = _progress_after_vote(session, counts)
        going_on = session.ended_at is None and session.paused_at is None
        assignment = next_comparison(rater=rater, after_vote=True) if going_on else None
    return AfterVote(rating=rating, session=session, progress=progress, assignment=assignment)


@dataclass(frozen=True)
class VoteSql:
    """The vote's statements besides the pick, as SQL: the ORM spent more time building them (a
    select_related with only() and two updates) than the database spent running them.

    `read` locks the lease (on PostgreSQL; SQLite has one writer at a time) and reads with it what the
    vote needs of its comparison and experiment, the rater's active session, and the session's votes so
    far for its progress.
    The count goes up only while it is under k, so concurrent votes on one comparison queue on its row and
    the one that would go over changes nothing. On PostgreSQL `write` counts, closes the lease and inserts
    the rating in one statement (data-modifying CTEs), writing nothing when the count is at k; SQLite
    runs `count`, the insert and `close` one by one.
    """

    read: str
    count: str
    close: str
    write: str | None


@cache
def _vote_sql(vendor: str) -> VoteSql:
    q = connection.ops.quote_name
    lease, comparison = q(Lease._meta.db_table), q(Comparison._meta.db_table)
    experiment = q(Experiment._meta.db_table)
    lock = " FOR UPDATE OF l" if vendor == "postgresql" else ""
    session, active = q(RatingSession._meta.db_table), _active_session_id_sql(vendor)
    read = f"""
        SELECT l.id, l.started_at, l.completed_at, c.id, c.experiment_id, c.gold_side,
               e.raters_per_comparison, e.criteria, e.min_seconds_per_vote,
               votes.*,  -- the three counts of _summary_sql; no table's columns
               {rows.columns(RatingSession, "s")}
        FROM {lease} l JOIN {comparison} c ON c.id = l.comparison_id
            JOIN {experiment} e ON e.id = c.experiment_id
            LEFT JOIN {session} s ON s.id = ({active})
            CROSS JOIN ({_summary_sql(vendor, f"({active})")}) votes
        WHERE c.token = %(token)s AND l.rater_id = %(rater)s{lock}
    """
    count = f"UPDATE {comparison} SET ratings_count = ratings_count + 1 WHERE id = %s AND ratings_count < %s"
    close = f"UPDATE {lease} SET completed_at = %s WHERE id = %s"
    write = None
    if vendor == "postgresql":
        into, values, pk, _ = _insert_parts(Rating, vendor)
        write = f"""
            WITH counted AS (
                UPDATE {comparison} SET ratings_count = ratings_count + 1
                WHERE id = %s AND ratings_count < %s RETURNING id
            ), closed AS (
                UPDATE {lease} SET completed_at = %s WHERE id = %s AND EXISTS (SELECT 1 FROM counted)
            )
            {into} SELECT {values} FROM counted RETURNING {pk}
        """
    return VoteSql(read=read, count=count, close=close, write=write)


@cache
def _insert_parts(model: type[models.Model], vendor: str) -> tuple[str, str, str, list[models.Field]]:
    """`INSERT INTO table (columns)`, the placeholders, the primary key column and the fields inserted."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    q = connection.ops.quote_name
    columns = ", ".join(q(field.column) for field in fields)
    into = f"INSERT INTO {q(model._meta.db_table)} ({columns})"
    return into, ", ".join(["%s"] * len(fields)), q(model._meta.pk.column), fields


@cache
def _insert_sql(model: type[models.Model], vendor: str) -> str:
    into, values, pk, _ = _insert_parts(model, vendor)
    return f"{into} VALUES ({values}) RETURNING {pk}"


def _insert_values(instance: models.Model) -> list:
    """`instance`'s values for its model's INSERT, each converted for the database as Model.save would.
    Fields that are set on save (auto_now_add) must be given."""
    fields = _insert_parts(type(instance), connection.vendor)[3]
    return [field.get_db_prep_save(getattr(instance, field.attname), connection) for field in fields]


def _inserted(instance: models.Model, pk: int) -> None:
    instance.pk = pk
    instance._state.adding, instance._state.db = False, connection.alias


def _insert(cursor, instance: models.Model) -> None:
    """Insert a new row for `instance` with a statement built once per model instead of by the ORM on
    every vote."""
    cursor.execute(_insert_sql(type(instance), connection.vendor), _insert_values(instance))
    _inserted(instance, cursor.fetchone()[0])


def _aware(value):
    """A datetime read with raw SQL: SQLite gives it without its (UTC) zone."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value


@dataclass(frozen=True)
class VoteCounts:
    """The votes of the rater's session, counted as the session summary counts them."""

    done: int
    gold_seen: int
    gold_correct: int

    def plus(self, rating: Rating) -> "VoteCounts":
        return VoteCounts(
            done=self.done + 1,
            gold_seen=self.gold_seen + (rating.gold_correct is not None),
            gold_correct=self.gold_correct + bool(rating.gold_correct),
        )


def _store_vote(
    rater: AbstractBaseUser,
    token: str,
    verdict: str,
    comment: str,
    criteria: dict[str, str] | None,
) -> tuple[Rating, RatingSession | None, VoteCounts | None]:
    """The vote's writes, in the caller's transaction; the rater's active session, which the vote counts
    in; and the session's votes counting this one. A repeated vote returns the stored one, without
    counts."""
    now = timezone.now()
    sql = _vote_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql.read, {"token": token, "rater": rater.pk})
        row = cursor.fetchone()
        if row is None or row[2] is not None:
            return _repeated_vote(rater, token), active_session(rater=rater), None
        lease_id, started_at, _, comparison_id, experiment_id, gold_side, k, asked, min_seconds = row[:9]
        before = VoteCounts(*row[9:12])
        session = rows.instance(RatingSession, row[12:], connection.alias) if row[12] is not None else None
        cleaned = _clean_criteria(_criteria_from_db(asked), criteria or {})
        seconds = (now - _aware(started_at)).total_seconds()
        gold_correct = None
        if gold_side:
            gold_correct = verdict == ("right" if gold_side == "left" else "left")
        rating = Rating(
            comparison_id=comparison_id,
            rater=rater,
            verdict=verdict,
            comment=comment.strip()[:5000],
            criteria=cleaned,
            seconds=seconds,
            too_fast=seconds < min_seconds,
            gold_correct=gold_correct,
            session=session,
            created_at=now,
        )
        closed_at = connection.ops.adapt_datetimefield_value(now)
        if sql.write is not None:
            cursor.execute(sql.write, [comparison_id, k, closed_at, lease_id, *_insert_values(rating)])
            inserted = cursor.fetchone()
            if inserted is None:
                raise RatingError("This comparison has all the votes it needs: take the next one.")
            _inserted(rating, inserted[0])
        else:
            cursor.execute(sql.count, [comparison_id, k])
            if cursor.rowcount != 1:
                raise RatingError("This comparison has all the votes it needs: take the next one.")
            _insert(cursor, rating)
            cursor.execute(sql.close, [closed_at, lease_id])
    transaction.on_commit(lambda: events.votes_cast(experiment_id))
    return rating, session, before.plus(rating)


def _progress_after_vote(session: RatingSession, counts: VoteCounts | None) -> "SessionSummary":
    """The session's progress counting the vote just stored; at its target the session ends."""
    progress = session_summary(session) if counts is None else _summary(session, counts)
    if session.paused_at is None and session.ended_at is None and progress.done >= session.target:
        now = timezone.now()
        RatingSession.objects.filter(pk=session.pk).update(ended_at=now)
        session.ended_at = now
    return progress


def _repeated_vote(rater: AbstractBaseUser, token: str) -> Rating:
    """A vote on a comparison whose lease is closed or missing: a vote sent twice (a double click, a
    retried request) finds its lease closed by the first and gets the first's rating back."""
    existing = Rating.objects.filter(comparison__token=token, rater=rater).first()
    if existing is not None:
        return existing
    if not Comparison.objects.filter(token=token).exists():
        raise RatingError("This comparison does not exist.")
    raise RatingError("This comparison was not handed to you, or you skipped it: take the next one.")


VOTE_FUNCTION = "dashboard_vote_and_next"


@dataclass(frozen=True)
class VoteFunction:
    definition: str  # CREATE FUNCTION
    call: str  # its columns by name: a prepared call keeps its result type when the function gains one


def _vote_and_next_in_postgresql(
    rater: AbstractBaseUser, token: str, verdict: str, comment: str, criteria: dict[str, str]
) -> AfterVote | None:
    """vote_and_next as one call of the database function; None for a vote whose lease is closed or
    missing (a vote sent twice), which the statements one by one then answer. Criteria are checked before
    the call, so a vote sent twice with criteria no experiment has is refused rather than answered."""
    # Criteria and verdicts are checked here; only whether the experiment asks about them needs its row.
    cleaned = _clean_criteria(list(CRITERIA), criteria)
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    comment = comment.strip()[:5000]
    params = [
        token,
        rater.pk,
        verdict,
        comment,
        Rating._meta.get_field("criteria").get_db_prep_save(cleaned, connection),
        adapt(now),
        adapt(now + timedelta(seconds=settings.LEASE_SECONDS)),
        Experiment.Status.SCHEDULED,
        PICK_ATTEMPTS,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_vote_function().call, params)
        row = cursor.fetchone()
    outcome, rating_id, seconds, too_fast, gold_correct, comparison_id, experiment_id, asked, *rest = row
    if outcome == "repeated":
        return None
    if outcome == "criteria":
        _clean_criteria(_criteria_from_db(asked), cleaned)  # raises, naming the criterion
    if outcome != "voted":
        raise RatingError("This comparison has all the votes it needs: take the next one.")
    before, rest = VoteCounts(*rest[:3]), rest[3:]
    session_width = len(RatingSession._meta.concrete_fields)
    session_row, (lease_id, *page) = rest[:session_width], rest[session_width:]
    session = (
        rows.instance(RatingSession, session_row, connection.alias) if session_row[0] is not None else None
    )
    rating = Rating(
        comparison_id=comparison_id,
        rater=rater,
        verdict=verdict,
        comment=comment,
        criteria=cleaned,
        seconds=seconds,
        too_fast=too_fast,
        gold_correct=gold_correct,
        session=session,
        created_at=now,
    )
    _inserted(rating, rating_id)
    transaction.on_commit(lambda: events.votes_cast(experiment_id))
    if session is None:
        return AfterVote(rating=rating, session=None, progress=None, assignment=None)
    assignment = Assignment(lease_id=lease_id, page=_page_from_row(page)) if lease_id is not None else None
    return AfterVote(
        rating=rating, session=session, progress=_summary(session, before.plus(rating)), assignment=assignment
    )


def _sql_type(model: type[models.Model], name: str) -> str:
    return model._meta.get_field(name).db_type(connection)


@cache
def _vote_function() -> VoteFunction:
    """The PostgreSQL function behind vote_and_next: the statements that _store_vote,
    _progress_after_vote and next_comparison run one by one, built from the same SQL, run in the database
    in one call and so in one transaction.

    Every statement but the lease's read and the session's end is the very one the Python path runs, with
    the function's arguments (p_…) and variables in place of parameters. As there, each statement sees what
    was committed when it began, so the check after a pick still sees a lease another rater committed
    meanwhile. The Python path stays for SQLite and answers a vote sent twice.
    """
    vendor = "postgresql"
    q = connection.ops.quote_name
    lease, session_table = q(Lease._meta.db_table), q(RatingSession._meta.db_table)
    comparison = q(Comparison._meta.db_table)
    session_out = [
        (f"o_s_{field.column}", field.db_type(connection)) for field in RatingSession._meta.concrete_fields
    ]
    page_out = [
        ("o_page_id", _sql_type(Comparison, "id")),
        ("o_page_token", _sql_type(Comparison, "token")),
        ("o_page_experiment_id", _sql_type(Comparison, "experiment")),
        ("o_page_raters", _sql_type(Experiment, "raters_per_comparison")),
        ("o_page_prompt", "text"),
        ("o_page_left", "text"),
        ("o_page_right", "text"),
        ("o_page_guidelines", "text"),
        ("o_page_criteria", _sql_type(Experiment, "criteria")),
    ]
    out = [
        ("o_outcome", "text"),  # voted, repeated (no open lease), criteria (not asked about), full (at k)
        ("o_rating_id", _sql_type(Rating, "id")),
        ("o_seconds", _sql_type(Rating, "seconds")),
        ("o_too_fast", "boolean"),
        ("o_gold_correct", "boolean"),
        ("o_comparison_id", _sql_type(Comparison, "id")),
        ("o_experiment_id", _sql_type(Comparison, "experiment")),
        ("o_asked", _sql_type(Experiment, "criteria")),
        ("o_done", "bigint"),  # the session's votes before this one, as VoteCounts
        ("o_gold_seen", "bigint"),
        ("o_gold_right", "bigint"),
        *session_out,
        ("o_lease_id", _sql_type(Lease, "id")),  # the next comparison's lease, then its page
        *page_out,
    ]
    arguments = {
        "token": "p_token",
        "rater": "p_rater",
        "now": "p_now",
        "expires": "p_expires",
        "scheduled": "p_scheduled",
        "comparison": "v_pick",
    }
    page_into = ", ".join(name for name, _ in page_out)
    sql = _vote_sql(vendor)
    read_into = ", ".join(
        [
            "v_lease, v_started, v_completed, o_comparison_id, o_experiment_id, v_gold_side, v_k, o_asked",
            "v_min_seconds, o_done, o_gold_seen, o_gold_right",
            *(name for name, _ in session_out),
        ]
    )
    rating_values = {
        "comparison_id": "o_comparison_id",
        "rater_id": "p_rater",
        "verdict": "p_verdict",
        "comment": "p_comment",
        "criteria": "p_criteria",
        "seconds": "o_seconds",
        "too_fast": "o_too_fast",
        "gold_correct": "o_gold_correct",
        "session_id": "o_s_id",
        "created_at": "p_now",
    }
    rating_fields = _insert_parts(Rating, vendor)[3]
    write = sql.write % (
        "o_comparison_id",
        "v_k",
        "p_now",
        "v_lease",
        *(rating_values[f.attname] for f in rating_fields),
    )
    columns, joins = _page_columns_sql(vendor)
    returns = ",\n        ".join(f"{name} {sql_type}" for name, sql_type in out)
    call = f"SELECT {', '.join(name for name, _ in out)} FROM {VOTE_FUNCTION}({', '.join(['%s'] * 9)})"
    definition = f"""
CREATE FUNCTION {VOTE_FUNCTION}(
    p_token text, p_rater bigint, p_verdict text, p_comment text, p_criteria jsonb,
    p_now timestamptz, p_expires timestamptz, p_scheduled text, p_attempts integer
) RETURNS TABLE (
        {returns}
) LANGUAGE plpgsql AS $function$
DECLARE
    v_lease {_sql_type(Lease, "id")};
    v_started timestamptz;
    v_completed timestamptz;
    v_gold_side text;
    v_k integer;
    v_min_seconds double precision;
    v_pick {_sql_type(Comparison, "id")};
    v_over_k boolean;
BEGIN
    -- the vote (_store_vote)
    {sql.read % arguments} INTO {read_into};
    IF v_lease IS NULL OR v_completed IS NOT NULL THEN
        o_outcome := 'repeated';
        RETURN NEXT;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(p_criteria) given WHERE NOT o_asked ? given) THEN
        o_outcome := 'criteria';
        RETURN NEXT;
        RETURN;
    END IF;
    o_seconds := extract(epoch FROM p_now - v_started);
    o_too_fast := o_seconds < v_min_seconds;
    o_gold_correct := CASE WHEN coalesce(v_gold_side, '') = '' THEN NULL
                           ELSE p_verdict = CASE WHEN v_gold_side = 'left' THEN 'right' ELSE 'left' END END;
    {write} INTO o_rating_id;
    IF o_rating_id IS NULL THEN
        o_outcome := 'full';
        RETURN NEXT;
        RETURN;
    END IF;
    o_outcome := 'voted';
    -- the session's progress (_progress_after_vote): at its target it ends
    IF o_s_id IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF o_s_paused_at IS NULL AND o_s_ended_at IS NULL AND o_done + 1 >= o_s_target THEN
        UPDATE {session_table} SET ended_at = p_now WHERE id = o_s_id;
        o_s_ended_at := p_now;
    END IF;
    IF o_s_paused_at IS NOT NULL OR o_s_ended_at IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    -- the next comparison (next_comparison after a vote, _pick_and_lease)
    FOR attempt IN 1..p_attempts LOOP
        {_pick_and_lease_sql(vendor) % arguments} INTO o_lease_id, v_pick;
        EXIT WHEN o_lease_id IS NULL;
        {_check_sql(vendor) % arguments} INTO v_over_k, {page_into};
        IF NOT v_over_k THEN
            RETURN NEXT;
            RETURN;
        END IF;
        DELETE FROM {lease} WHERE id = o_lease_id;
        o_lease_id := NULL;
    END LOOP;
    -- another request of theirs may have leased one just now (_open_lease)
    SELECT id, comparison_id INTO o_lease_id, v_pick FROM {lease}
    WHERE rater_id = p_rater AND completed_at IS NULL AND expires_at > p_now
    ORDER BY started_at LIMIT 1;
    IF o_lease_id IS NOT NULL THEN
        SELECT {columns} INTO {page_into} FROM {comparison} c {joins} WHERE c.id = v_pick;
    END IF;
    RETURN NEXT;
END
$function$
"""
    return VoteFunction(definition=definition, call=call)


def install_vote_function(using: str = "default", **kwargs) -> None:
    """Create or replace the vote function on a PostgreSQL database (after every migrate, from
    DashboardConfig.ready). The definition's hash is kept as the function's comment, so an unchanged
    function is left alone."""
    db = connections[using]
    if db.vendor != "postgresql" or connection.vendor != "postgresql":  # it is built for the default one
        return
    definition = _vote_function().definition
    digest = hashlib.sha256(definition.encode()).hexdigest()
    with transaction.atomic(using=using), db.cursor() as cursor:
        # Two migrates at once would both find it missing; the second would fail to create it.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [VOTE_FUNCTION])
        cursor.execute(
            "SELECT oid::regprocedure::text, obj_description(oid, 'pg_proc') FROM pg_proc"
            " WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
            [VOTE_FUNCTION],
        )
        found = cursor.fetchall()
        if [comment for _, comment in found] == [digest]:
            return
        for signature, _ in found:  # every earlier version, whatever its arguments were
            cursor.execute(f"DROP FUNCTION {signature}")
        cursor.execute(definition)
        cursor.execute(f"COMMENT ON FUNCTION {VOTE_FUNCTION} IS '{digest}'")


def skip_comparison(*, rater: AbstractBaseUser, token: str) -> None:
    """Give the comparison back for others; this rater will not see it again."""
    with transaction.atomic():
        _, lease = _lease_for_update(rater, token)
        if lease is None:
            raise RatingError("This comparison was not handed to you: take the next one.")
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.skipped = True
            lease.save(update_fields=["completed_at", "skipped"])


def flag_comparison(*, rater: AbstractBaseUser, token: str, reason: str) -> None:
    """Report a broken or unratable comparison; flagged comparisons can be excluded from results."""
    reason = reason.strip()
    if not reason:
        raise RatingError("Say in a few words what is wrong with this comparison, then flag it.")
    with transaction.atomic():
        comparison_id, lease = _lease_for_update(rater, token)
        if lease is None:
            raise RatingError("This comparison was not handed to you: take the next one.")
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.flag_reason = reason[:2000]
            lease.save(update_fields=["completed_at", "flag_reason"])
            Comparison.objects.filter(pk=comparison_id).update(flag_count=F("flag_count") + 1)


def active_session(*, rater: AbstractBaseUser) -> RatingSession | None:
    """The rater's session that has not ended (read on every rating page, hence raw SQL)."""
    with connection.cursor() as cursor:
        cursor.execute(_active_session_sql(connection.vendor), [rater.pk])
        row = cursor.fetchone()
    return rows.instance(RatingSession, row, connection.alias) if row is not None else None


@cache
def _active_session_sql(vendor: str) -> str:
    table = connection.ops.quote_name(RatingSession._meta.db_table)
    return (
        f"SELECT {rows.columns(RatingSession)} FROM {table}"
        " WHERE rater_id = %s AND ended_at IS NULL ORDER BY started_at DESC LIMIT 1"
    )


@cache
def _active_session_id_sql(vendor: str) -> str:
    """The id of the rater `%(rater)s`'s active session, as a subquery (the vote's read)."""
    table = connection.ops.quote_name(RatingSession._meta.db_table)
    where = "rater_id = %(rater)s AND ended_at IS NULL"
    return f"SELECT id FROM {table} WHERE {where} ORDER BY started_at DESC LIMIT 1"


def start_session(*, rater: AbstractBaseUser, target: int = DEFAULT_SESSION_TARGET) -> RatingSession:
    if not 1 <= target <= 1000:
        raise RatingError("A session's target is between 1 and 1000 comparisons.")
    with transaction.atomic():
        now = timezone.now()
        RatingSession.objects.filter(rater=rater, ended_at__isnull=True).update(ended_at=now)
        # The rater's votes so far are counted once here; each vote then counts only its session's rows.
        votes_before = Rating.objects.filter(rater=rater).count()
        return RatingSession.objects.create(
            rater=rater, target=target, started_at=now, votes_before=votes_before
        )


def pause_session(*, rater: AbstractBaseUser) -> RatingSession:
    session = active_session(rater=rater)
    if session is None:
        raise RatingError("There is no session to pause.")
    if session.paused_at is None:
        session.paused_at = timezone.now()
        session.save(update_fields=["paused_at"])
        # The comparison on screen goes back to the pool rather than waiting out its lease.
        Lease.objects.filter(rater=rater, completed_at__isnull=True).delete()
    return session


def resume_session(*, rater: AbstractBaseUser) -> RatingSession:
    session = active_session(rater=rater)
    if session is None:
        raise RatingError("There is no session to resume: start one.")
    if session.paused_at is not None:
        session.paused_seconds += (timezone.now() - session.paused_at).total_seconds()
        session.paused_at = None
        session.save(update_fields=["paused_seconds", "paused_at"])
    return session


def end_session(*, rater: AbstractBaseUser) -> RatingSession | None:
    session = active_session(rater=rater)
    if session is not None:
        if session.paused_at is not None:
            resume_session(rater=rater)
            session.refresh_from_db()
        session.ended_at = timezone.now()
        session.save(update_fields=["ended_at"])
    return session


@dataclass(frozen=True)
class SessionSummary:
    done: int
    target: int
    seconds: float
    gold_seen: int
    gold_correct: int
    all_votes: int  # the rater's votes: those before the session began (votes_before) and the session's

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


@cache
def _summary_sql(vendor: str, session: str = "%(session)s") -> str:
    """The votes of the session whose id is the SQL expression `session` counted: its rows only, however
    many the rater has cast before."""
    rating = connection.ops.quote_name(Rating._meta.db_table)
    return f"""
        SELECT COUNT(*),
               COUNT(CASE WHEN gold_correct IS NOT NULL THEN 1 END),
               COUNT(CASE WHEN gold_correct THEN 1 END)
        FROM {rating} WHERE session_id = {session}
    """


def session_summary(session: RatingSession) -> SessionSummary:
    """The session's progress and the rater's votes in all, from one statement over the session's rows.

    Written as SQL: every vote shows it, and the ORM's aggregate with filtered counts took longer to
    build than to run. A vote counts them in its first statement instead (VoteCounts)."""
    with connection.cursor() as cursor:
        cursor.execute(_summary_sql(connection.vendor), {"session": session.pk})
        return _summary(session, VoteCounts(*cursor.fetchone()))


def _summary(session: RatingSession, counts: VoteCounts) -> SessionSummary:
    end = session.ended_at or session.paused_at or timezone.now()
    return SessionSummary(
        done=counts.done,
        target=session.target,
        seconds=max(0.0, (end - session.started_at).total_seconds() - session.paused_seconds),
        gold_seen=counts.gold_seen,
        gold_correct=counts.gold_correct,
        all_votes=session.votes_before + counts.done,
    )

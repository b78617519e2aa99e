"""Pages for raters (blind comparisons) and for people reading results."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import analysis, automatic, charts, exports, qualification, selectors, services, textdiff
from dashboard.models import Rating, RatingSession
from dashboard.permissions import RATE, VIEW_RESULTS
from dashboard.selectors import can_view_results
from evaluator.models import CRITERIA, Experiment
from evaluator.selectors import experiment_progress

# Anonymous visitors are sent to log in; logged-in users without the permission get 403.
rater_required = permission_required(RATE, raise_exception=True)
results_required = permission_required(VIEW_RESULTS, raise_exception=True)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    if can_view_results(request.user):
        return redirect("results_list")
    return redirect("rate")


def _rating_context(request: HttpRequest, *, error: str = "") -> dict:
    """What the rating panel shows: the session, its progress and the comparison leased to the rater."""
    session = services.active_session(rater=request.user)
    context = {"session": session, "error": error, "verdicts": Rating.Verdict.choices}
    if session is None:
        last = RatingSession.objects.filter(rater=request.user).order_by("-started_at").first()
        context["summary"] = services.session_summary(last) if last else None
        context["history"] = services.recent_votes(session=last, limit=1) if last else []
        context["default_target"] = services.DEFAULT_SESSION_TARGET
        return context
    context["session_progress"] = services.session_summary(session)
    context["history"] = services.recent_votes(session=session)
    if session.paused_at is not None:
        return context
    assignment = services.next_comparison(rater=request.user)
    if assignment is not None:
        page = assignment.page
        context["page"] = page
        context["qualification"] = qualification.progress(rater=request.user, comparison=page)
        context["team"] = selectors.team_progress(page.experiment_id, page.raters_per_comparison)
        context["diff"] = textdiff.highlight(page.left_text, page.right_text)
    else:
        context["qualification_messages"] = qualification.failed_messages(rater=request.user)
    return context


def _render_rating(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    template = "dashboard/rate.html#panel" if request.htmx else "dashboard/rate.html"
    return render(request, template, _rating_context(request, error=error), status=status)


def _after_action(request: HttpRequest, action, **kwargs) -> HttpResponse:
    """Run a rater's action; a refusal is shown in the panel (htmx swaps only 2xx answers)."""
    try:
        action(rater=request.user, **kwargs)
    except services.RatingError as exc:
        return _render_rating(request, error=str(exc), status=200 if request.htmx else 400)
    if not request.htmx:
        return redirect("rate")
    return _render_rating(request)


@require_GET
@login_required
@rater_required
def rate(request: HttpRequest) -> HttpResponse:
    return _render_rating(request)


def _away_seconds(request: HttpRequest) -> float:
    """The seconds the rating page reports it was hidden; a page without script reports none."""
    try:
        return float(request.POST.get("away_seconds") or 0)
    except ValueError:
        return 0.0


@require_POST
@login_required
@rater_required
def vote(request: HttpRequest, token: str) -> HttpResponse:
    try:
        rating = services.submit_rating(
            rater=request.user,
            token=token,
            verdict=request.POST.get("verdict", ""),
            comment=request.POST.get("comment", ""),
            criteria={name: request.POST.get(f"criterion-{name}", "") for name in CRITERIA},
            away_seconds=_away_seconds(request),
        )
    except services.RatingError as exc:
        return _render_rating(request, error=str(exc), status=200 if request.htmx else 400)
    if rating.too_fast:
        messages.warning(
            request,
            f"That vote came {rating.seconds:.0f} s after the comparison appeared, under the reading time "
            "this study asks for: it is kept but flagged. Read both outputs before you vote.",
        )
    if not request.htmx:
        return redirect("rate")
    return _render_rating(request)


@require_POST
@login_required
@rater_required
def undo(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.undo_last_vote)


@require_POST
@login_required
@rater_required
def skip(request: HttpRequest, token: str) -> HttpResponse:
    return _after_action(request, services.skip_comparison, token=token)


@require_POST
@login_required
@rater_required
def flag(request: HttpRequest, token: str) -> HttpResponse:
    return _after_action(
        request, services.flag_comparison, token=token, reason=request.POST.get("reason", "")
    )


@require_POST
@login_required
@rater_required
def session_start(request: HttpRequest) -> HttpResponse:
    try:
        target = int(request.POST.get("target", services.DEFAULT_SESSION_TARGET))
    except ValueError:
        return _render_rating(request, error="The target is a whole number of comparisons.", status=400)
    return _after_action(request, services.start_session, target=target)


@require_POST
@login_required
@rater_required
def session_pause(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.pause_session)


@require_POST
@login_required
@rater_required
def session_resume(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.resume_session)


@require_POST
@login_required
@rater_required
def session_end(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.end_session)


@require_GET
@login_required
@results_required
def results_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/results_list.html", {"experiments": selectors.visible_experiments()})


@require_GET
@login_required
@results_required
def results(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    exclusions = analysis.Exclusions.from_query(request.GET)
    for_page = selectors.results_for_page(experiment, exclusions=exclusions)
    computed = for_page.results
    pair = _heatmap_pair(request, computed.arms)
    chosen_pair = [("a", str(pair[0].pk)), ("b", str(pair[1].pk))] if pair else []
    context = {
        "experiment": experiment,
        "progress": experiment_progress(experiment),
        "results": computed,
        "freshness": for_page,
        "sections": [(group, charts.group_charts(group, pair)) for group in computed.groups],
        "reasons": [(r, label, getattr(exclusions, r)) for r, label in analysis.REASONS.items()],
        "pair": pair,
        "query": urlencode([*exclusions.query_items(), *chosen_pair]),
        "exclusion_query": urlencode(exclusions.query_items()),
        "poll_seconds": analysis.poll_seconds(),
        "automatic": automatic.for_page(experiment, for_page.stored),
    }
    template = "dashboard/results.html#live" if request.htmx else "dashboard/results.html"
    return render(request, template, context)


def _heatmap_pair(request: HttpRequest, arms: list[analysis.Arm]) -> tuple[analysis.Arm, analysis.Arm] | None:
    """The two arms whose routing difference is drawn: ?a=…&b=… (arm ids), else the first two arms."""
    if len(arms) < 2:
        return None
    by_pk = {str(arm.pk): arm for arm in arms}
    a, b = by_pk.get(request.GET.get("a", "")), by_pk.get(request.GET.get("b", ""))
    if a is None or b is None or a == b:
        return arms[0], arms[1]
    return a, b


@require_GET
@login_required
@results_required
def export_votes(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    """Every vote; ?texts=1 adds both outputs, ?excel=1 a byte order mark for spreadsheet programs."""
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    texts, excel = request.GET.get("texts") == "1", request.GET.get("excel") == "1"
    chunks = exports.votes_csv(experiment, texts=texts)
    name = f"votes-experiment-{experiment.pk}{'-texts' if texts else ''}{'-excel' if excel else ''}.csv"
    return exports.csv_response(request, exports.with_bom(chunks) if excel else chunks, name)


@require_GET
@login_required
@results_required
def export_outputs(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    return exports.download_response(
        request,
        exports.outputs_jsonl(experiment),
        f"outputs-experiment-{experiment.pk}.jsonl",
        content_type="application/x-ndjson; charset=utf-8",
    )


@require_GET
@login_required
@results_required
def export_timeline(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    """Scores at every tenth of the votes, with the page's exclusions; ?excel=1 as for the votes."""
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    chunks = exports.timeline_csv(experiment, exclusions=analysis.Exclusions.from_query(request.GET))
    excel = request.GET.get("excel") == "1"
    name = f"timeline-experiment-{experiment.pk}{'-excel' if excel else ''}.csv"
    return exports.csv_response(request, exports.with_bom(chunks) if excel else chunks, name)


@require_GET
@login_required
@results_required
def export_aggregates(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    exclusions = analysis.Exclusions.from_query(request.GET)
    return exports.csv_response(
        request,
        exports.aggregates_csv(experiment, exclusions=exclusions),
        f"aggregates-experiment-{experiment.pk}.csv",
    )

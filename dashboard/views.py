"""Pages for raters (blind comparisons) and for people reading results."""

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.backends.utils import csrf_input
from django.views.decorators.http import require_GET, require_POST

from dashboard import analysis, charts, exports, selectors, services, textdiff
from dashboard.models import Rating, RatingSession
from dashboard.permissions import rater_required, results_required
from dashboard.selectors import can_view_results
from evaluator.models import CRITERIA, Experiment
from evaluator.selectors import experiment_progress


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    if can_view_results(request.user):
        return redirect("results_list")
    return redirect("rate")


_READ = object()  # `session` not given: read the rater's active session here


def _rating_context(
    request: HttpRequest,
    *,
    error: str = "",
    session=_READ,
    after_vote: services.AfterVote | None = None,
) -> dict:
    """What the rating panel shows. `session` is the rater's active session when the caller has it;
    `after_vote` carries the progress and the next comparison that a vote's transaction produced."""
    if session is _READ:
        session = services.active_session(rater=request.user)
    progress = after_vote.progress if after_vote is not None else None
    context = {
        "session": session,
        "error": error,
        "verdicts": Rating.Verdict.choices,
        # A page's forms share one hidden CSRF field, rendered once, for posts without script. A panel
        # that htmx swaps in needs none: htmx sends the page's token in a header (hx-headers on <body>),
        # and masking a fresh copy of the token cost a vote more CPU than the rest of the panel's context.
        "csrf_field": "" if request.htmx else csrf_input(request),
    }
    if session is None or session.ended_at is not None:
        last = session or RatingSession.objects.filter(rater=request.user).order_by("-started_at").first()
        context["session"] = None
        context["summary"] = progress or (services.session_summary(last) if last else None)
        context["default_target"] = services.DEFAULT_SESSION_TARGET
        return context
    context["session_progress"] = progress or services.session_summary(session)
    if session.paused_at is not None:
        return context
    if after_vote is not None:
        assignment = after_vote.assignment
    else:
        assignment = services.next_comparison(rater=request.user)
    if assignment is not None:
        page = assignment.page
        context["page"] = page
        context["team"] = selectors.team_progress(page.experiment_id, page.raters_per_comparison)
        context["diff"] = textdiff.highlight(page.left_text, page.right_text)
    return context


def _render_rating(request: HttpRequest, *, error: str = "", status: int = 200, **kwargs) -> HttpResponse:
    template = "dashboard/rate.html#panel" if request.htmx else "dashboard/rate.html"
    return render(request, template, _rating_context(request, error=error, **kwargs), status=status)


def _after_action(request: HttpRequest, action, **kwargs) -> HttpResponse:
    try:
        action(rater=request.user, **kwargs)
    except services.RatingError as exc:
        return _render_rating(request, error=str(exc), status=200 if request.htmx else 400)
    if not request.htmx:
        return redirect("rate")
    return _render_rating(request)


@require_GET
@rater_required
def rate(request: HttpRequest) -> HttpResponse:
    return _render_rating(request)


@require_POST
@rater_required
def vote(request: HttpRequest, token: str) -> HttpResponse:
    # The vote reads the rater's session (in its first statement): it counts in it, and the next page
    # shows its progress.
    try:
        after_vote = services.vote_and_next(
            rater=request.user,
            token=token,
            verdict=request.POST.get("verdict", ""),
            comment=request.POST.get("comment", ""),
            criteria={name: request.POST.get(f"criterion-{name}", "") for name in CRITERIA},
        )
    except services.RatingError as exc:
        return _render_rating(request, error=str(exc), status=200 if request.htmx else 400)
    if not request.htmx:
        return redirect("rate")
    return _render_rating(request, session=after_vote.session, after_vote=after_vote)


@require_POST
@rater_required
def skip(request: HttpRequest, token: str) -> HttpResponse:
    return _after_action(request, services.skip_comparison, token=token)


@require_POST
@rater_required
def flag(request: HttpRequest, token: str) -> HttpResponse:
    return _after_action(
        request, services.flag_comparison, token=token, reason=request.POST.get("reason", "")
    )


@require_POST
@rater_required
def session_start(request: HttpRequest) -> HttpResponse:
    try:
        target = int(request.POST.get("target", services.DEFAULT_SESSION_TARGET))
    except ValueError:
        return _render_rating(request, error="The target is a whole number of comparisons.", status=400)
    return _after_action(request, services.start_session, target=target)


@require_POST
@rater_required
def session_pause(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.pause_session)


@require_POST
@rater_required
def session_resume(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.resume_session)


@require_POST
@rater_required
def session_end(request: HttpRequest) -> HttpResponse:
    return _after_action(request, services.end_session)


@require_GET
@results_required
def results_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/results_list.html", {"experiments": selectors.visible_experiments()})


@require_GET
@results_required
def results(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    exclusions = analysis.Exclusions.from_query(request.GET)
    computed = analysis.experiment_results(experiment, exclusions=exclusions)
    pair = _heatmap_pair(request, computed.arms)
    chosen_pair = [("a", str(pair[0].pk)), ("b", str(pair[1].pk))] if pair else []
    context = {
        "experiment": experiment,
        "progress": experiment_progress(experiment),
        "results": computed,
        "sections": [(group, charts.group_charts(group, pair)) for group in computed.groups],
        "reasons": [(r, label, getattr(exclusions, r)) for r, label in analysis.REASONS.items()],
        "pair": pair,
        "query": urlencode([*exclusions.query_items(), *chosen_pair]),
        "exclusion_query": urlencode(exclusions.query_items()),
        "poll_seconds": analysis.poll_seconds(),
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
@results_required
def export_votes(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    return exports.csv_response(
        request, exports.votes_csv(experiment), f"votes-experiment-{experiment.pk}.csv"
    )


@require_GET
@results_required
def export_aggregates(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    exclusions = analysis.Exclusions.from_query(request.GET)
    return exports.csv_response(
        request,
        exports.aggregates_csv(experiment, exclusions=exclusions),
        f"aggregates-experiment-{experiment.pk}.csv",
    )

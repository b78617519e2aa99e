"""Pages for raters (blind comparisons) and for people reading results."""

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import exports, selectors, services
from dashboard.models import Rating
from dashboard.permissions import rater_required, results_required
from dashboard.selectors import can_view_results
from evaluator.models import Experiment


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    if can_view_results(request.user):
        return redirect("results_list")
    return redirect("rate")


def _render_comparison(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    assignment = services.next_comparison(rater=request.user)
    context = {
        "assignment": assignment,
        "verdicts": Rating.Verdict.choices,
        "progress": selectors.rater_progress(request.user),
        "error": error,
    }
    template = "dashboard/rate.html#comparison" if request.htmx else "dashboard/rate.html"
    return render(request, template, context, status=status)


@require_GET
@rater_required
def rate(request: HttpRequest) -> HttpResponse:
    return _render_comparison(request)


@require_POST
@rater_required
def vote(request: HttpRequest, token: str) -> HttpResponse:
    try:
        services.submit_rating(
            rater=request.user,
            token=token,
            verdict=request.POST.get("verdict", ""),
            comment=request.POST.get("comment", ""),
        )
    except services.RatingError as exc:
        return _render_comparison(request, error=str(exc), status=200 if request.htmx else 400)
    if not request.htmx:
        return redirect("rate")
    return _render_comparison(request)


@require_GET
@results_required
def results_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/results_list.html", {"experiments": selectors.visible_experiments()})


@require_GET
@results_required
def results(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    context = {
        "experiment": experiment,
        "progress": selectors.experiment_progress(experiment),
        "win_rates": selectors.win_rates(experiment),
    }
    template = "dashboard/results.html#live" if request.htmx else "dashboard/results.html"
    return render(request, template, context)


@require_GET
@results_required
def export_votes(request: HttpRequest, experiment_id: int) -> StreamingHttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    response = StreamingHttpResponse(
        exports.csv_lines(exports.VOTE_COLUMNS, exports.vote_rows(experiment)), content_type="text/csv"
    )
    response["Content-Disposition"] = f'attachment; filename="votes-experiment-{experiment.pk}.csv"'
    return response

"""Staff pages for the researcher: the output browser (every arm's output per prompt) and the flag queue."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import research, selectors
from evaluator import reviews
from evaluator.models import Experiment

VIEW_OUTPUTS = "evaluator.view_generation"
REVIEW_FLAGS = "evaluator.change_comparison"
outputs_required = permission_required(VIEW_OUTPUTS, raise_exception=True)
flags_required = permission_required(REVIEW_FLAGS, raise_exception=True)


@require_GET
@login_required
@outputs_required
def outputs_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/outputs_list.html", {"experiments": selectors.visible_experiments()})


@require_GET
@login_required
@outputs_required
def outputs(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    filters = research.OutputFilters.from_query(request.GET)
    browser = research.output_browser(
        experiment=experiment, filters=filters, page_number=request.GET.get("page")
    )
    context = {
        "experiment": experiment,
        "filters": filters,
        "browser": browser,
        "lost_arm": next((arm for arm in browser.arms if arm.pk == filters.lost), None),
        "identical_choices": research.IDENTICAL_CHOICES.items(),
        "query": urlencode(filters.query_items()),
    }
    template = "dashboard/outputs.html#browser" if request.htmx else "dashboard/outputs.html"
    return render(request, template, context)


def _queue_options(request: HttpRequest) -> tuple[str, int | None]:
    state = request.GET.get("state", "open")
    experiment = request.GET.get("experiment", "")
    return (state if state in research.FLAG_STATES else "open"), (
        int(experiment) if experiment.isdigit() else None
    )


@require_GET
@login_required
@flags_required
def flag_queue(request: HttpRequest) -> HttpResponse:
    state, experiment_id = _queue_options(request)
    query = urlencode([("state", state), *([("experiment", experiment_id)] if experiment_id else [])])
    context = {
        "page": research.flag_queue(
            state=state, experiment_id=experiment_id, page_number=request.GET.get("page")
        ),
        "counts": research.flag_counts(experiment_id=experiment_id),
        "state": state,
        "states": research.FLAG_STATES.items(),
        "experiment_id": experiment_id,
        "experiments": research.flag_experiments(),
        "decisions": reviews.DECISIONS.items(),
        "query": query,
    }
    return render(request, "dashboard/flags.html", context)


@require_POST
@login_required
@flags_required
def flag_review(request: HttpRequest, comparison_id: int) -> HttpResponse:
    error = ""
    try:
        reviews.review_flagged_comparison(
            comparison_id=comparison_id,
            decision=request.POST.get("decision", ""),
            reviewer=request.user,
            note=request.POST.get("note", ""),
        )
    except reviews.ReviewError as exc:
        error = str(exc)
    if not request.htmx:
        if error:
            messages.error(request, error)
        back = QueryDict(request.POST.get("back", ""))
        query = urlencode([(name, back[name]) for name in ("state", "experiment", "page") if back.get(name)])
        return redirect(reverse("flag_queue") + (f"?{query}" if query else ""))
    item = research.flagged_comparison(comparison_id=comparison_id)
    if item is None:
        return HttpResponse(status=404)
    context = {"item": item, "error": error, "decisions": reviews.DECISIONS.items()}
    return render(request, "dashboard/flags.html#item", context)

"""The output browser: every arm's output per prompt side by side, with cost and routing, filtered."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from dashboard import research
from evaluator.models import Comparison, Prompt
from tests.dashboard.study_data import arm, study, vote_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_model_path):
    texts = {("Premise one:", "k=1"): "same words", ("Premise one:", "k=4"): "same words"}
    return study(tiny_model_path, texts=texts)


@pytest.fixture
def researcher(django_user_model):
    user = django_user_model.objects.create_user("rita", password="password-rita", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_generation"))
    return user


def browse(client, experiment, query: str = "", **headers):
    response = client.get(
        reverse("outputs", args=[experiment.pk]) + (f"?{query}" if query else ""), **headers
    )
    assert response.status_code == 200
    return response.content.decode()


def test_it_requires_the_permission_to_view_outputs(client, viewer, researcher, experiment):
    client.force_login(viewer)
    assert client.get(reverse("outputs", args=[experiment.pk])).status_code == 403
    assert client.get(reverse("outputs_list")).status_code == 403
    client.force_login(researcher)
    assert client.get(reverse("outputs_list")).status_code == 200


def test_the_list_links_each_experiment_to_its_outputs(client, researcher, experiment):
    client.force_login(researcher)
    page = client.get(reverse("outputs_list")).content.decode()
    assert reverse("outputs", args=[experiment.pk]) in page


def test_each_prompt_shows_every_arm_with_its_depth_cost_and_routing(client, researcher, experiment):
    client.force_login(researcher)
    page = browse(client, experiment, "category=routine")
    assert page.count('class="prompt-outputs"') == 2
    assert "k=1 on Dear team," in page and "k=4 on Dear team," in page
    assert "fixed k=1" in page and "native context" in page
    assert "<dt>Computed experts / token</dt><dd>4.50</dd>" in page
    assert "<dt>Tokens / s</dt><dd>7.5</dd>" in page
    assert "6 tokens over 2 layers" not in page and "3 tokens over 2 layers, entropy 0.50" in page
    assert "active per layer: 4.00 · 4.00" in page


def test_output_text_is_escaped_and_kept_as_written(client, researcher, tiny_model_path):
    experiment = study(
        tiny_model_path, texts={("Dear team,\n", "k=4"): "<script>alert(1)</script>\n  indented"}
    )
    client.force_login(researcher)
    page = browse(client, experiment)
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\n  indented" in page


def test_identical_outputs_are_marked_and_can_be_shown_alone(client, researcher, experiment):
    client.force_login(researcher)
    page = browse(client, experiment, "identical=yes")
    assert page.count('class="prompt-outputs"') == 1
    assert "Premise one:" in page and "identical across arms" in page
    different = browse(client, experiment, "identical=no")
    assert different.count('class="prompt-outputs"') == 3 and "Premise one:" not in different


def test_flagged_prompts_can_be_shown_alone(client, researcher, experiment):
    comparison = Comparison.objects.ready().filter(experiment=experiment).first()
    Comparison.objects.filter(pk=comparison.pk).update(flag_count=1)
    client.force_login(researcher)
    page = browse(client, experiment, "flagged=1")
    assert page.count('class="prompt-outputs"') == 1
    assert comparison.prompt.text.strip() in page and "flagged 1×" in page


def test_it_shows_the_prompts_where_an_arm_lost_a_decisive_vote(client, researcher, rater, experiment):
    ready = list(Comparison.objects.ready().filter(experiment=experiment).order_by("pk"))
    lost, tied = ready[0], ready[1]
    vote_for(rater, lost, "k=4")
    vote_for(rater, tied, None)
    client.force_login(researcher)
    page = browse(client, experiment, f"lost={arm(experiment, 'k=1').pk}")
    assert page.count('class="prompt-outputs"') == 1
    assert "1 prompt where k=1 lost at least one decisive vote" in page
    assert lost.prompt.text.strip() in page and "won 0, lost 1" in page and "won 1, lost 0" in page
    assert "0 prompts where k=4 lost" in browse(client, experiment, f"lost={arm(experiment, 'k=4').pk}")


def test_filters_combine_with_the_category(client, researcher, rater, experiment):
    for comparison in Comparison.objects.ready().filter(experiment=experiment):
        vote_for(rater, comparison, "k=4")
    client.force_login(researcher)
    page = browse(client, experiment, f"lost={arm(experiment, 'k=1').pk}&category=philosophy")
    assert page.count('class="prompt-outputs"') == 1 and "Is a heap of sand" in page


def test_long_studies_are_paged(client, researcher, tiny_model_path):
    prompts = [("routine", f"Note {i}:") for i in range(research.OUTPUTS_PER_PAGE + 3)]
    experiment = study(tiny_model_path, prompts=prompts, name="long")
    client.force_login(researcher)
    first = browse(client, experiment)
    assert first.count('class="prompt-outputs"') == research.OUTPUTS_PER_PAGE and "page 1 of 2" in first
    second = browse(client, experiment, "page=2")
    assert second.count('class="prompt-outputs"') == 3 and "Note 12:" in second


def test_an_htmx_request_gets_only_the_list(client, researcher, experiment):
    client.force_login(researcher)
    fragment = browse(client, experiment, "category=philosophy", HTTP_HX_REQUEST="true")
    assert fragment.lstrip().startswith('<div id="browser">')
    assert "<html" not in fragment and "Is a heap of sand" in fragment


def test_the_results_page_links_each_arm_to_the_prompts_it_lost(client, admin_user, viewer, experiment):
    client.force_login(admin_user)
    page = client.get(reverse("results", args=[experiment.pk])).content.decode()
    k1 = arm(experiment, "k=1").pk
    assert f"{reverse('outputs', args=[experiment.pk])}?lost={k1}&amp;category=routine" in page
    assert f'{reverse("outputs", args=[experiment.pk])}?lost={k1}"' in page  # all categories
    client.force_login(viewer)
    assert (
        "prompts where k=1 lost" not in client.get(reverse("results", args=[experiment.pk])).content.decode()
    )


def test_prompts_without_outputs_in_this_experiment_are_not_listed(client, researcher, experiment):
    Prompt.objects.create(category=Prompt.objects.first().category, text="Unused prompt")
    client.force_login(researcher)
    assert "Unused prompt" not in browse(client, experiment)

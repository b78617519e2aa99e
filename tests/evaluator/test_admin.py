"""The admin as a researcher uses it: checkpoints, arms, prompt files, experiments and their operations."""

import io
import json
import re

import pytest
from django.urls import reverse

from evaluator.admin.formatting import format_duration, format_rate
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Job, Prompt, Variant
from evaluator.tasks import generate_arm
from tests.factories import make_checkpoint

pytestmark = pytest.mark.django_db


def moe_folder(path, *, experts=16, top_k=4, native=2048, **extra):
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "qwen3_moe",
        "num_experts": experts,
        "num_experts_per_tok": top_k,
        "num_hidden_layers": 4,
        "max_position_embeddings": native,
        "hidden_size": 128,
        "vocab_size": 3072,
        "rope_theta": 10000.0,
        **extra,
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def checkpoint(tiny_model_path) -> Checkpoint:
    """The small trained model: 16 experts, 4 active per token, a 1,024-token window."""
    return make_checkpoint(tiny_model_path, name="small")


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return client


def page_text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def arm(checkpoint, k, **context) -> Variant:
    return Variant.objects.create(
        checkpoint=checkpoint,
        name=f"k={k}",
        depth={"kind": "fixed", "k": k},
        context=context or {"kind": "native"},
    )


def draft(checkpoint, *, ks=(1, 2), texts=("Dear team,", "Premise one:"), **fields) -> Experiment:
    category = Category.objects.get_or_create(slug="routine", defaults={"name": "Routine"})[0]
    experiment = Experiment.objects.create(
        name=fields.pop("name", "study"),
        checkpoint=checkpoint,
        seeds=[0],
        sampling={"max_new_tokens": 8, "do_sample": False},
        **fields,
    )
    experiment.variants.set([arm(checkpoint, k) for k in ks])
    experiment.prompts.set([Prompt.objects.create(category=category, text=t) for t in texts])
    return experiment


# Checkpoints


def test_validating_a_checkpoint_shows_its_architecture(staff, tmp_path):
    ckpt = Checkpoint.objects.create(name="ref", path=str(moe_folder(tmp_path / "ref", experts=128, top_k=8)))

    response = staff.post(
        reverse("admin:evaluator_checkpoint_changelist"),
        {"action": "validate", "_selected_action": [ckpt.pk]},
        follow=True,
    )

    assert "128 experts with 8 active per token" in page_text(response)
    ckpt.refresh_from_db()
    assert (ckpt.num_experts, ckpt.default_top_k, ckpt.native_context) == (128, 8, 2048)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p / "missing", "Checkpoint folder not found"),
        (lambda p: moe_folder(p / "dense", experts=None, top_k=None), "is not a Mixture-of-Experts model"),
        (
            lambda p: moe_folder(p / "awq", quantization_config={"quant_method": "awq"}),
            "Quantized checkpoint refused (awq",
        ),
    ],
)
def test_a_refused_checkpoint_says_why(staff, tmp_path, make, reason):
    ckpt = Checkpoint.objects.create(name="bad", path=str(make(tmp_path)))

    response = staff.post(
        reverse("admin:evaluator_checkpoint_changelist"),
        {"action": "validate", "_selected_action": [ckpt.pk]},
        follow=True,
    )

    page = page_text(response).replace("&#x27;", "'")
    assert "Bad: refused." in page and reason in page
    assert Checkpoint.objects.get(pk=ckpt.pk).num_experts is None


def test_saving_a_quantized_checkpoint_is_refused_on_the_form(staff, tmp_path):
    folder = moe_folder(tmp_path / "gptq", quantization_config={"quant_method": "gptq"})

    response = staff.post(
        reverse("admin:evaluator_checkpoint_add"), {"name": "q", "path": str(folder), "dtype": "auto"}
    )

    assert response.status_code == 200
    assert "Quantized checkpoint refused (gptq" in page_text(response)
    assert not Checkpoint.objects.exists()


# Arms


def variant_post(checkpoint, **fields) -> dict:
    data = {
        "checkpoint": checkpoint.pk,
        "name": "arm",
        "depth_kind": "fixed",
        "context_kind": "native",
        "k": "",
        "mapping": "",
        "default_k": "",
        "p": "",
        "k_min": "",
        "k_max": "",
        "factor": "",
        "input_budget": "",
    }
    data.update({key: str(value) for key, value in fields.items()})
    return data


def form_errors(response) -> dict:
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def test_an_arm_is_defined_with_plain_fields(staff, checkpoint):
    response = staff.post(
        reverse("admin:evaluator_variant_add"),
        variant_post(checkpoint, name="deep", k=4, context_kind="yarn", factor=4, input_budget=1000),
    )

    assert response.status_code == 302
    variant = Variant.objects.get(name="deep")
    assert variant.depth == {"kind": "fixed", "k": 4}
    assert variant.context == {"kind": "yarn", "factor": 4.0, "input_budget": 1000}
    page = page_text(staff.get(reverse("admin:evaluator_variant_change", args=[variant.pk])))
    assert "fixed k=4, YaRN ×4, input ≤ 1,000 tokens" in page


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"k": 17}, "k", "k is 17, but it must be between 1 and 16"),
        ({"k": ""}, "k", "Required for a fixed depth."),
        ({"k": 2, "context_kind": "yarn", "factor": 0.5}, "factor", "it must be at least 1"),
        ({"k": 2, "context_kind": "yarn", "factor": 1}, "factor", "YaRN needs a factor above 1"),
        ({"k": 2, "context_kind": "native", "factor": 4}, "factor", "A native context has factor 1"),
        (
            {"k": 2, "input_budget": 5000},
            "input_budget",
            "input_budget is 5000, but it must be between 1 and",
        ),
        ({"depth_kind": "dynamic", "p": 0.9, "k_min": 4, "k_max": 2}, "k_min", "k_min (4) must not exceed"),
        ({"depth_kind": "dynamic", "p": 1.5, "k_min": 1, "k_max": 2}, "p", "p is 1.5"),
        ({"depth_kind": "by_tag", "mapping": "reasoning 4", "default_k": 2}, "mapping", "is not 'label: k'"),
        ({"depth_kind": "by_tag", "mapping": "reasoning: 40", "default_k": 2}, "mapping", "between 1 and 16"),
    ],
)
def test_an_impossible_arm_is_refused_on_the_field_that_is_wrong(staff, checkpoint, fields, field, message):
    response = staff.post(reverse("admin:evaluator_variant_add"), variant_post(checkpoint, **fields))

    assert response.status_code == 200
    errors = form_errors(response)
    assert any(message in e for e in errors.get(field, [])), errors
    assert not Variant.objects.exists()


def test_a_tag_map_arm_is_stored_as_a_policy(staff, checkpoint):
    response = staff.post(
        reverse("admin:evaluator_variant_add"),
        variant_post(checkpoint, depth_kind="by_tag", mapping="reasoning: 8\nshort = 1\n", default_k=2),
    )

    assert response.status_code == 302
    policy = Variant.objects.get().depth_policy
    assert (policy.k_for(tags=["reasoning"]), policy.k_for(tags=["short"]), policy.k_for()) == (8, 1, 2)


def test_an_arm_on_a_checkpoint_never_validated_asks_for_validation_first(staff, tmp_path):
    unread = Checkpoint.objects.create(name="unread", path=str(tmp_path))

    response = staff.post(reverse("admin:evaluator_variant_add"), variant_post(unread, k=2))

    assert "run its Validate action first" in form_errors(response)["checkpoint"][0]


def test_an_arm_with_outputs_keeps_its_depth(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    variant = experiment.variants.get(name="k=1")

    response = staff.post(
        reverse("admin:evaluator_variant_change", args=[variant.pk]),
        variant_post(checkpoint, name="k=1", k=3),
    )

    assert "cannot change" in page_text(response)
    assert Variant.objects.get(pk=variant.pk).depth == {"kind": "fixed", "k": 1}


# Prompts and categories


def test_prompts_are_imported_from_an_uploaded_file(staff):
    Category.objects.create(slug="routine", name="Routine")
    upload = io.BytesIO(
        b'{"category": "routine", "text": "Remind the team."}\n{"category": "new", "text": "x"}\n'
    )
    upload.name = "prompts.jsonl"

    response = staff.post(
        reverse("admin:evaluator_prompt_import"), {"file": upload, "create_categories": "on"}, follow=True
    )

    assert "Imported prompts.jsonl: 2 created" in page_text(response)
    assert Prompt.objects.count() == 2


def test_a_bad_prompt_file_imports_nothing_and_lists_each_problem(staff):
    Category.objects.create(slug="routine", name="Routine")
    upload = io.BytesIO(b"category,text\nroutine,fine\nroutine,\nnowhere,hi\n")
    upload.name = "prompts.csv"

    response = staff.post(reverse("admin:evaluator_prompt_import"), {"file": upload})

    page = page_text(response)
    assert "Nothing was imported. 2 problems to fix" in page
    assert "line 3, text: required" in page
    assert "line 4, category: unknown category" in page
    assert Prompt.objects.count() == 0


def test_categories_are_imported_and_prompts_exported(staff):
    upload = io.BytesIO(b"slug,name\nroutine,Routine\n")
    upload.name = "categories.csv"
    staff.post(reverse("admin:evaluator_category_import"), {"file": upload})
    prompt = Prompt.objects.create(category=Category.objects.get(slug="routine"), text="Hi", tags=["a"])

    response = staff.post(
        reverse("admin:evaluator_prompt_changelist"),
        {"action": "export_csv", "_selected_action": [prompt.pk]},
    )

    assert response["Content-Disposition"] == 'attachment; filename="prompts.csv"'
    assert response.content.decode() == (
        "category,text,tags,external_id,reference_answer,scoring_rule,tolerance\nroutine,Hi,a,,,,\n"
    )


def test_the_prompt_list_links_to_the_import_page(staff):
    page = page_text(staff.get(reverse("admin:evaluator_prompt_changelist")))
    assert reverse("admin:evaluator_prompt_import") in page


# Experiments


def experiment_post(checkpoint, variants, **fields) -> dict:
    data = {
        "name": "by hand",
        "checkpoint": checkpoint.pk,
        "variants": [v.pk for v in variants],
        "pairing": "all_pairs",
        "baseline": "",
        "prompts": [],
        "seeds": "0, 1",
        "max_new_tokens": 16,
        "min_new_tokens": 0,
        "do_sample": "on",
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "raters_per_comparison": 3,
        "gold_rate": 0.1,
        "qualification_items": 0,
        "qualification_accuracy": 0.8,
        "min_seconds_per_vote": 2,
        "priority": 5,
        "guidelines": "Be fair.",
        "criteria": ["clarity", "effort"],
    }
    data.update(fields)
    return data


def test_an_experiment_takes_whole_categories_seeds_and_shared_sampling(staff, checkpoint):
    routine = Category.objects.create(slug="routine", name="Routine")
    other = Category.objects.create(slug="other", name="Other")
    chosen = [Prompt.objects.create(category=routine, text=f"r{i}") for i in range(3)]
    single = Prompt.objects.create(category=other, text="o")
    Prompt.objects.create(category=other, text="not chosen")

    response = staff.post(
        reverse("admin:evaluator_experiment_add"),
        experiment_post(
            checkpoint, [arm(checkpoint, 1), arm(checkpoint, 4)], categories=[routine.pk], prompts=[single.pk]
        ),
    )

    assert response.status_code == 302, form_errors(response)
    experiment = Experiment.objects.get(name="by hand")
    assert set(experiment.prompts.all()) == {*chosen, single}
    assert experiment.seeds == [0, 1]
    assert experiment.sampling == {
        "max_new_tokens": 16,
        "min_new_tokens": 0,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }
    assert (experiment.raters_per_comparison, experiment.gold_rate, experiment.priority) == (3, 0.1, 5)
    assert experiment.criteria == ["clarity", "effort"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"seeds": "0, x"}, "seeds", "'x' is not a whole number"),
        ({"seeds": "1, 1"}, "seeds", "Seed 1 appears twice"),
        ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1]"),
        ({"gold_rate": 0.9}, "gold_rate", "Between 0 (none) and 0.5."),
        ({"pairing": "baseline"}, "baseline", "needs a baseline chosen among the arms"),
        ({"categories": []}, "prompts", "Choose prompts"),
    ],
)
def test_an_experiment_form_says_what_to_fix(staff, checkpoint, fields, field, message):
    category = Category.objects.create(slug="routine", name="Routine")
    Prompt.objects.create(category=category, text="r")
    data = experiment_post(checkpoint, [arm(checkpoint, 1), arm(checkpoint, 4)], categories=[category.pk])
    data.update(fields)

    response = staff.post(reverse("admin:evaluator_experiment_add"), data)

    errors = form_errors(response)
    assert any(message in e for e in errors.get(field, [])), errors


def test_scheduling_from_the_list_reports_outputs_and_comparisons(staff, checkpoint):
    experiment = draft(checkpoint)

    response = staff.post(
        reverse("admin:evaluator_experiment_changelist"),
        {"action": "schedule", "_selected_action": [experiment.pk]},
        follow=True,
    )

    assert "Study: 4 outputs and 2 comparisons queued." in page_text(response)
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.SCHEDULED


def test_an_experiment_that_cannot_be_scheduled_stays_a_draft_with_the_reason_shown(staff, checkpoint):
    experiment = draft(checkpoint, ks=(1,))

    response = staff.post(
        reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "schedule"]), follow=True
    )

    assert "Study: Choose at least two arms to compare." in page_text(response)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DRAFT
    assert "Choose at least two arms" in experiment.schedule_error
    assert not Generation.objects.exists()


def test_the_change_page_offers_the_operations_the_status_allows(staff, checkpoint):
    experiment = draft(checkpoint)
    url = reverse("admin:evaluator_experiment_change", args=[experiment.pk])
    buttons = lambda: re.findall(r'name="operation" value="(\w+)"', page_text(staff.get(url)))  # noqa: E731

    assert buttons() == ["schedule"]
    staff.post(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "schedule"]))
    assert buttons() == ["pause", "cancel", "requeue"]
    staff.post(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "pause"]))
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.PAUSED
    assert buttons() == ["resume", "cancel"]
    staff.post(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "resume"]))
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.SCHEDULED


def test_operations_are_posted_never_run_by_a_link(staff, checkpoint):
    experiment = draft(checkpoint)

    response = staff.get(reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "schedule"]))

    assert response.status_code == 405
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.DRAFT


def test_cancelling_from_the_list_asks_first_then_marks_rows(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    url = reverse("admin:evaluator_experiment_changelist")

    asked = staff.post(url, {"action": "cancel", "_selected_action": [experiment.pk]})
    assert "Yes, cancel them" in page_text(asked)
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.SCHEDULED

    done = staff.post(
        url, {"action": "cancel", "_selected_action": [experiment.pk], "confirmed": "yes"}, follow=True
    )

    assert "Study: cancelled" in page_text(done)
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.CANCELLED
    assert set(Generation.objects.values_list("status", flat=True)) == {Generation.Status.CANCELLED}


def test_a_scheduled_experiment_shows_its_settings_read_only_but_lets_priority_change(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    url = reverse("admin:evaluator_experiment_change", args=[experiment.pk])

    page = page_text(staff.get(url))
    assert "<div>k=1: fixed k=1, native context</div>" in page
    assert "2 prompts: Routine 2" in page
    assert 'name="seeds"' not in page

    staff.post(
        url,
        {"priority": 9, "raters_per_comparison": 2, "min_seconds_per_vote": 1, "guidelines": "g"},
    )
    experiment.refresh_from_db()
    assert (experiment.priority, experiment.raters_per_comparison) == (9, 2)
    assert experiment.seeds == [0]


def test_progress_and_time_left_come_from_measured_speed(staff, checkpoint, settings):
    from evaluator import scheduling

    settings.ENGINE_BATCH_SIZE = 2
    experiment = draft(checkpoint, ks=(1, 2), texts=("Dear team,", "Premise one:", "Hello", "Why"))
    scheduling.schedule_experiment(experiment=experiment)
    first = experiment.variants.get(name="k=1")
    generate_arm(experiment.pk, first.pk)
    speed = (
        sum(Generation.objects.filter(variant=first).values_list("tokens_per_s", flat=True)) / 4
    )  # the mean tokens/s of the arm that ran, per stream
    expected_seconds = 2 * 8 / speed  # two batches of two prompts, up to 8 new tokens each

    page = page_text(staff.get(reverse("admin:evaluator_experiment_change", args=[experiment.pk])))

    assert '<progress max="8" value="4"></progress> Outputs 4 / 8' in page
    assert f"at {format_rate(speed)} tokens/s per stream" in page

    assert f"≈ {format_duration(expected_seconds)}" in page
    listing = page_text(staff.get(reverse("admin:evaluator_experiment_changelist")))
    assert '<progress max="8" value="4"></progress>' in listing


def test_time_left_waits_for_a_first_measurement(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)

    page = page_text(staff.get(reverse("admin:evaluator_experiment_change", args=[experiment.pk])))

    assert "estimated after the first outputs" in page
    assert '<progress max="4" value="0"></progress> Outputs 0 / 4' in page


def test_an_experiment_is_created_from_a_preset_page(staff, checkpoint):
    Prompt.objects.create(category=Category.objects.create(slug="routine", name="R"), text="Hi there")

    response = staff.post(
        reverse("admin:evaluator_experiment_preset"),
        {
            "preset": "base-vs-extreme",
            "checkpoint": checkpoint.pk,
            "name": "quick",
            "seeds": "0",
            "schedule": "on",
        },
        follow=True,
    )

    page = page_text(response)
    assert "Created quick: 2 arms, 1 prompts." in page
    assert "Quick: 2 outputs and 1 comparisons queued." in page
    experiment = Experiment.objects.get(name="quick")
    assert sorted(v.depth["k"] for v in experiment.variants.all()) == [4, 8]
    assert Comparison.objects.filter(experiment=experiment).count() == 1


def test_a_checkpoint_action_opens_the_preset_page_for_it(staff, checkpoint):
    response = staff.post(
        reverse("admin:evaluator_checkpoint_changelist"),
        {"action": "experiment_from_preset", "_selected_action": [checkpoint.pk]},
    )

    assert response.url == reverse("admin:evaluator_experiment_preset") + f"?checkpoint={checkpoint.pk}"
    page = page_text(staff.get(response.url))
    assert f'<option value="{checkpoint.pk}" selected>small</option>' in page
    assert "Depth sweep" in page


def test_retry_failed_from_the_admin_puts_failed_outputs_back(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    Generation.objects.filter(experiment=experiment).update(status=Generation.Status.FAILED, error="boom")

    response = staff.post(
        reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "retry"]), follow=True
    )

    assert "Study: 4 failed outputs queued again." in page_text(response)
    assert set(Generation.objects.values_list("status", flat=True)) == {Generation.Status.PENDING}


def test_jobs_and_outputs_are_read_only_records(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    generation = Generation.objects.first()

    assert staff.get(reverse("admin:evaluator_generation_changelist")).status_code == 200
    assert staff.get(reverse("admin:evaluator_job_changelist")).status_code == 200
    assert staff.get(reverse("admin:evaluator_generation_add")).status_code == 403
    page = page_text(staff.get(reverse("admin:evaluator_generation_change", args=[generation.pk])))
    assert 'name="status"' not in page
    assert Job.objects.count() == 0  # jobs are queued on commit, which this test never reaches


def test_unfinished_arms_are_queued_again_unless_a_live_worker_runs_them(staff, checkpoint):
    from datetime import timedelta

    from django.utils import timezone

    from evaluator import scheduling
    from evaluator.models import WorkerStatus

    experiment = draft(checkpoint, ks=(1, 2, 4))
    scheduling.schedule_experiment(experiment=experiment)
    k1, k2, k4 = (experiment.variants.get(name=f"k={k}") for k in (1, 2, 4))
    lost = Job.objects.create(experiment=experiment, variant=k1, task_id="lost-in-a-restarted-broker")
    Job.objects.create(
        experiment=experiment, variant=k2, task_id="live", status=Job.Status.RUNNING, worker="a@h"
    )
    Job.objects.create(
        experiment=experiment, variant=k4, task_id="dead", status=Job.Status.RUNNING, worker="b@h"
    )
    WorkerStatus.objects.create(hostname="a@h", last_seen=timezone.now())
    WorkerStatus.objects.create(hostname="b@h", last_seen=timezone.now() - timedelta(minutes=5))

    response = staff.post(
        reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "requeue"]), follow=True
    )

    assert "Study: 2 arms queued again." in page_text(response)
    statuses = dict(Job.objects.values_list("task_id", "status"))
    assert statuses == {"lost-in-a-restarted-broker": "cancelled", "live": "running", "dead": "cancelled"}
    assert Job.objects.get(pk=lost.pk).error == "superseded: queued again"


def test_cancelling_from_the_change_page_asks_first(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    url = reverse("admin:evaluator_experiment_operate", args=[experiment.pk, "cancel"])

    asked = page_text(staff.post(url))
    assert "Yes, cancel them" in asked and f'action="{url}"' in asked
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.SCHEDULED

    staff.post(url, {"confirmed": "yes"})
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.CANCELLED


# Bad input: a clear message on the field, nothing written


def test_a_yarn_factor_beyond_the_bound_is_refused_on_its_field(staff, checkpoint):
    response = staff.post(
        reverse("admin:evaluator_variant_add"),
        variant_post(checkpoint, k=2, context_kind="yarn", factor="1e308", input_budget=100),
    )

    assert response.status_code == 200
    assert any("less than or equal to 64" in e for e in form_errors(response)["factor"])
    assert not Variant.objects.exists()


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("0, " + "9" * 40, "Seed 999999…999 (40 digits) is out of range: seeds go from 0 to 2,147,483,647."),
        ("2147483648", "Seed 2147483648 is out of range"),
        ("-1", "Seed -1 is out of range"),
    ],
)
def test_a_seed_the_database_cannot_hold_is_refused_on_the_form(staff, checkpoint, seeds, message):
    category = Category.objects.create(slug="routine", name="Routine")
    Prompt.objects.create(category=category, text="r")
    data = experiment_post(checkpoint, [arm(checkpoint, 1), arm(checkpoint, 4)], categories=[category.pk])

    response = staff.post(reverse("admin:evaluator_experiment_add"), {**data, "seeds": seeds})

    assert any(message in e for e in form_errors(response)["seeds"]), form_errors(response)
    assert not Experiment.objects.exists()


def test_a_seed_out_of_range_stops_scheduling_with_a_message(checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    experiment.seeds = [10**40]
    experiment.save(update_fields=["seeds"])

    with pytest.raises(scheduling.ScheduleError, match="Seeds must be whole numbers from 0 to 2,147,483,647"):
        scheduling.schedule_experiment(experiment=experiment)
    assert not Generation.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"raters_per_comparison": 51}, "raters_per_comparison", "less than or equal to 50"),
        ({"qualification_accuracy": 1.5}, "qualification_accuracy", "less than or equal to 1"),
        ({"qualification_items": 51}, "qualification_items", "less than or equal to 50"),
        ({"temperature": "1e308"}, "temperature", "less than or equal to 10"),
        ({"max_new_tokens": 10**12}, "max_new_tokens", "less than or equal to 131072"),
        ({"min_seconds_per_vote": "1e308"}, "min_seconds_per_vote", "less than or equal to 600"),
    ],
)
def test_numbers_the_engine_cannot_use_are_refused_on_their_fields(staff, checkpoint, fields, field, message):
    category = Category.objects.create(slug="routine", name="Routine")
    Prompt.objects.create(category=category, text="r")
    data = experiment_post(checkpoint, [arm(checkpoint, 1), arm(checkpoint, 4)], categories=[category.pk])

    response = staff.post(reverse("admin:evaluator_experiment_add"), {**data, **fields})

    assert any(message in e for e in form_errors(response).get(field, [])), form_errors(response)
    assert not Experiment.objects.exists()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(staff, settings):
    settings.MAX_UPLOAD_MB = 1
    Category.objects.create(slug="routine", name="Routine")
    upload = io.BytesIO(b"category,text\nroutine," + b"x" * (2 * 1024 * 1024) + b"\n")
    upload.name = "prompts.csv"

    response = staff.post(reverse("admin:evaluator_prompt_import"), {"file": upload})

    assert "over the 1 MB limit (DEPTH_ARENA_MAX_UPLOAD_MB)" in page_text(response)
    assert Prompt.objects.count() == 0


def test_an_unclosed_quote_in_an_uploaded_csv_names_its_line(staff):
    Category.objects.create(slug="routine", name="Routine")
    upload = io.BytesIO(b'category,text\nroutine,"Dear team,\nroutine,next\n')
    upload.name = "prompts.csv"

    response = staff.post(reverse("admin:evaluator_prompt_import"), {"file": upload})

    assert "line 2: not valid CSV" in page_text(response)
    assert Prompt.objects.count() == 0


# The qualification round and numbers for people


def test_an_experiment_asks_for_a_qualification_round(staff, checkpoint):
    category = Category.objects.create(slug="routine", name="Routine")
    Prompt.objects.create(category=category, text="r")
    data = experiment_post(
        checkpoint,
        [arm(checkpoint, 1), arm(checkpoint, 4)],
        categories=[category.pk],
        qualification_items=4,
        qualification_accuracy=0.75,
    )

    assert staff.post(reverse("admin:evaluator_experiment_add"), data).status_code == 302
    experiment = Experiment.objects.get()
    assert (experiment.qualification_items, experiment.qualification_accuracy) == (4, 0.75)
    assert experiment.raters_per_comparison == 3


def test_a_new_experiment_asks_two_raters_per_comparison(staff, checkpoint):
    page = page_text(staff.get(reverse("admin:evaluator_experiment_add")))

    assert re.search(r'name="raters_per_comparison" value="2"', page)


def test_a_scheduled_experiment_shows_shares_as_percentages(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint, gold_rate=0.1, qualification_items=2, qualification_accuracy=0.75)
    scheduling.schedule_experiment(experiment=experiment)

    page = page_text(staff.get(reverse("admin:evaluator_experiment_change", args=[experiment.pk])))

    assert "10% of the comparisons" in page
    assert "2 checks before any real comparison; pass mark 75%" in page


def test_the_experiment_list_keeps_to_a_few_columns_and_cuts_long_names(staff, checkpoint):
    draft(checkpoint, name="A study with a very long name that goes on about depths and contexts")

    page = page_text(staff.get(reverse("admin:evaluator_experiment_changelist")))

    headers = re.findall(r'<th scope="col" class="(?:sortable )?column-(\w+)', page)
    assert headers == ["short_name", "status", "outputs", "votes", "time_left", "priority"]
    assert ">A study with a very long name that goes on…</span>" in page


def test_outputs_show_speed_and_time_rounded_for_people(staff, checkpoint):
    from evaluator import scheduling

    experiment = draft(checkpoint)
    scheduling.schedule_experiment(experiment=experiment)
    generation = Generation.objects.first()
    Generation.objects.filter(pk=generation.pk).update(tokens_per_s=111.77, seconds=2.345, new_tokens=8)

    listing = page_text(staff.get(reverse("admin:evaluator_generation_changelist")))
    detail = page_text(staff.get(reverse("admin:evaluator_generation_change", args=[generation.pk])))

    assert '<td class="field-speed">112</td>' in listing and "111.77" not in listing
    assert "2.3 s" in detail and "2.345" not in detail


@pytest.mark.parametrize(
    ("value", "rate", "share"),
    [(111.77, "112", "11177%"), (0.25, "0.2", "25%"), (0.125, "0.1", "12.5%"), (1.0, "1.0", "100%")],
)
def test_numbers_are_rounded_for_people(value, rate, share):
    from evaluator.admin.formatting import format_share

    assert (format_rate(value), format_share(value)) == (rate, share)

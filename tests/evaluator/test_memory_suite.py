"""The context-memory suite: needles sized to the windows, scored through the real worker, and its presets."""

import pytest
from django.core.management import call_command

from evaluator import memory_suite, presets, scheduling
from evaluator.models import Generation, Prompt
from tests.factories import make_checkpoint, run_generations

pytestmark = pytest.mark.django_db


def test_on_the_reference_model_the_needles_fill_4k_to_128k_windows():
    targets = memory_suite.needle_targets(32768)
    assert [round((tokens + memory_suite.ANSWER_ROOM) / 1024) for _, tokens in targets] == [
        4,
        16,
        32,
        64,
        128,
    ]
    assert [fraction for fraction, _ in targets] == [0.125, 0.5, 1.0, 2.0, 4.0]
    assert memory_suite.guide_tokens(32768) == 15_000


def test_the_command_builds_needles_that_fit_each_window_with_their_answers(tiny_model_path, capsys):
    checkpoint = make_checkpoint(tiny_model_path)
    call_command("make_memory_prompts", "--checkpoint", checkpoint.name)
    out = capsys.readouterr().out
    assert "16 prompts created" in out
    needles = [p for p in Prompt.objects.all() if "needle" in p.tags]
    assert len(needles) == 15 and {p.category.slug for p in needles} == {"long_context"}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    sizes = {}
    for p in needles:
        assert p.reference_answer and p.scoring_rule == "contains"
        assert f"is {p.reference_answer}." in p.text and p.text.endswith("Answer:")
        length = next(t for t in p.tags if t.startswith("len-"))
        sizes.setdefault(length, set()).add(len(tokenizer(p.text)["input_ids"]))
        depth = int(next(t for t in p.tags if t.startswith("depth-"))[6:]) / 100
        position = p.text.index(f"is {p.reference_answer}.") / len(p.text)
        assert abs(position - depth) < 0.25
    limits = {"len-128": 128, "len-512": 256, "len-1k": 768, "len-2k": 1792, "len-4k": 3840}
    assert set(sizes) == set(limits)
    for length, counts in sizes.items():
        assert max(counts) <= limits[length]
    assert {("yarn-only" in p.tags) for p in needles if p.tags[2] in ("len-2k", "len-4k")} == {True}
    guide = next(p for p in Prompt.objects.all() if "long-output" in p.tags)
    assert "469 tokens" in guide.text and not guide.reference_answer

    call_command("make_memory_prompts", "--checkpoint", checkpoint.name)
    assert "0 prompts created, 16 already present" in capsys.readouterr().out


def test_native_vs_yarn_runs_the_needles_that_fit_and_scores_recall(tiny_model_path):
    checkpoint = make_checkpoint(tiny_model_path)
    memory_suite.create_memory_prompts(checkpoint=checkpoint)
    experiment = presets.create_from_preset(preset="native-vs-yarn", checkpoint=checkpoint)
    chosen = list(experiment.prompts.all())
    assert len(chosen) == 9 and not any("yarn-only" in p.tags or "long-output" in p.tags for p in chosen)
    # The shortest needles only, few new tokens: the worker runs them here as it would on a GPU.
    experiment.prompts.set([p for p in chosen if "len-128" in p.tags])
    experiment.sampling = {**experiment.sampling, "max_new_tokens": 8}
    experiment.save(update_fields=["sampling"])
    scheduling.schedule_experiment(experiment=experiment)
    run_generations(experiment)
    outputs = Generation.objects.filter(experiment=experiment)
    assert outputs.count() == 6
    assert all(g.status == "done" and g.reference_correct is not None for g in outputs)


def test_the_yarn_memory_preset_takes_every_needle_and_schedules_without_cuts(tiny_model_path):
    checkpoint = make_checkpoint(tiny_model_path)
    memory_suite.create_memory_prompts(checkpoint=checkpoint)
    experiment = presets.create_from_preset(preset="yarn-memory", checkpoint=checkpoint)
    assert experiment.prompts.count() == 15
    assert [v.context["kind"] for v in experiment.variants.all()] == ["yarn", "yarn"]
    assert (
        scheduling.experiment_problems(
            experiment, list(experiment.variants.all()), list(experiment.prompts.all())
        )
        == []
    )


def test_other_presets_leave_out_what_needs_yarn_or_thousands_of_new_tokens(tiny_model_path):
    checkpoint = make_checkpoint(tiny_model_path)
    memory_suite.create_memory_prompts(checkpoint=checkpoint)
    experiment = presets.create_from_preset(preset="base-vs-extreme", checkpoint=checkpoint)
    assert experiment.prompts.count() == 9

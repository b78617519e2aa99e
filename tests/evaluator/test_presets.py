"""Presets: one step from a checkpoint to a ready experiment, with depths scaled to the checkpoint."""

import json

import pytest
from django.core.management import call_command

from evaluator import presets, scheduling
from evaluator.models import Category, Checkpoint, Experiment, Prompt, Variant

pytestmark = pytest.mark.django_db


def moe_folder(path, *, experts: int, top_k: int, native: int = 32768, layers: int = 48):
    """A checkpoint folder as far as validation reads it: a Qwen3-MoE config.json."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "qwen3_moe",
        "num_experts": experts,
        "num_experts_per_tok": top_k,
        "num_hidden_layers": layers,
        "max_position_embeddings": native,
        "hidden_size": 2048,
        "vocab_size": 151936,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def checkpoint(tmp_path, name="qwen3-30b-a3b", **arch) -> Checkpoint:
    return Checkpoint.objects.create(name=name, path=str(moe_folder(tmp_path / name, **arch)))


@pytest.fixture
def prompts():
    routine = Category.objects.create(slug="routine", name="Routine")
    long_context = Category.objects.create(slug="long_context", name="Long context")
    return [
        Prompt.objects.create(category=routine, text="Write a reminder.", tags=["short"]),
        Prompt.objects.create(category=routine, text="Why do we sleep?", tags=["reasoning"]),
        Prompt.objects.create(category=long_context, text="A long document …"),
    ]


def depths(experiment: Experiment) -> list:
    return [v.depth for v in experiment.variants.order_by("pk")]


def test_base_vs_extreme_is_8_vs_16_on_the_reference_model(tmp_path, prompts):
    experiment = presets.create_from_preset(
        preset="base-vs-extreme", checkpoint=checkpoint(tmp_path, experts=128, top_k=8)
    )

    assert depths(experiment) == [{"kind": "fixed", "k": 8}, {"kind": "fixed", "k": 16}]
    assert experiment.status == Experiment.Status.DRAFT
    assert experiment.prompts.count() == 3
    assert experiment.preset == "base-vs-extreme"
    assert experiment.sampling["max_new_tokens"] == 256


def test_depths_scale_to_the_small_demo_model(tmp_path, prompts):
    small = checkpoint(tmp_path, name="tiny", experts=16, top_k=4, native=512, layers=4)

    extreme = presets.create_from_preset(preset="base-vs-extreme", checkpoint=small)
    sweep = presets.create_from_preset(preset="depth-sweep", checkpoint=small)

    assert [d["k"] for d in depths(extreme)] == [4, 8]
    assert sorted(d["k"] for d in depths(sweep)) == [1, 2, 4, 8]
    assert sweep.pairing == Experiment.Pairing.ADJACENT
    assert sweep.sampling["max_new_tokens"] == 128  # a quarter of the small window


def test_the_depth_sweep_is_2_4_8_16_on_the_reference_and_capped_at_the_experts(tmp_path, prompts):
    reference = presets.create_from_preset(
        preset="depth-sweep", checkpoint=checkpoint(tmp_path, experts=128, top_k=8)
    )
    capped = presets.create_from_preset(
        preset="depth-sweep", checkpoint=checkpoint(tmp_path, name="twelve", experts=12, top_k=8)
    )

    assert sorted(d["k"] for d in depths(reference)) == [2, 4, 8, 16]
    assert sorted(d["k"] for d in depths(capped)) == [2, 4, 8, 12]


def test_a_model_already_using_every_expert_has_no_extreme_arm(tmp_path, prompts):
    full = checkpoint(tmp_path, name="dense-ish", experts=8, top_k=8)

    with pytest.raises(presets.PresetError, match="uses all 8 experts"):
        presets.create_from_preset(preset="base-vs-extreme", checkpoint=full)
    assert Experiment.objects.count() == 0


def test_native_vs_yarn_compares_context_on_long_prompts_only(tmp_path, prompts):
    experiment = presets.create_from_preset(
        preset="native-vs-yarn", checkpoint=checkpoint(tmp_path, experts=128, top_k=8)
    )

    contexts = [v.context for v in experiment.variants.order_by("pk")]
    assert contexts == [{"kind": "native"}, {"kind": "yarn", "factor": 4.0}]
    assert [d["k"] for d in depths(experiment)] == [8, 8]
    assert list(experiment.prompts.values_list("category__slug", flat=True)) == ["long_context"]


def test_native_vs_yarn_without_long_prompts_says_what_is_missing(tmp_path):
    Prompt.objects.create(category=Category.objects.create(slug="routine", name="R"), text="hi")

    with pytest.raises(presets.PresetError, match="no long-context prompts"):
        presets.create_from_preset(
            preset="native-vs-yarn", checkpoint=checkpoint(tmp_path, experts=16, top_k=4)
        )
    assert Variant.objects.count() == 0


def test_tag_depth_maps_reasoning_deeper_and_routine_shallower_against_fixed_d(tmp_path, prompts):
    experiment = presets.create_from_preset(
        preset="tag-depth", checkpoint=checkpoint(tmp_path, experts=128, top_k=8)
    )

    fixed, by_tag = experiment.variants.order_by("pk")
    assert fixed.depth == {"kind": "fixed", "k": 8}
    assert by_tag.depth_policy.k_for(tags=["reasoning"]) == 16
    assert by_tag.depth_policy.k_for(tags=["short"]) == 4
    assert by_tag.depth_policy.k_for(tags=["other"]) == 8
    assert experiment.pairing == Experiment.Pairing.BASELINE and experiment.baseline == fixed


def test_dynamic_vs_fixed_bounds_the_dynamic_depth_by_the_experts(tmp_path, prompts):
    experiment = presets.create_from_preset(
        preset="dynamic-vs-fixed", checkpoint=checkpoint(tmp_path, experts=16, top_k=4)
    )

    assert depths(experiment)[1] == {"kind": "dynamic", "p": 0.9, "k_min": 2, "k_max": 8}
    assert experiment.baseline.depth == {"kind": "fixed", "k": 4}


def test_presets_reuse_existing_arms_of_the_same_configuration(tmp_path, prompts):
    ckpt = checkpoint(tmp_path, experts=128, top_k=8)
    presets.create_from_preset(preset="base-vs-extreme", checkpoint=ckpt)
    presets.create_from_preset(preset="depth-sweep", checkpoint=ckpt)

    assert sorted(v.depth["k"] for v in Variant.objects.all()) == [2, 4, 8, 16]
    assert Experiment.objects.count() == 2
    assert len(set(Experiment.objects.values_list("name", flat=True))) == 2


def test_a_checkpoint_that_was_never_validated_is_read_first_or_refused(tmp_path, prompts):
    good = checkpoint(tmp_path, experts=128, top_k=8)
    assert good.num_experts is None
    presets.create_from_preset(preset="base-vs-extreme", checkpoint=good)
    good.refresh_from_db()
    assert good.num_experts == 128

    missing = Checkpoint.objects.create(name="gone", path=str(tmp_path / "nothing-here"))
    with pytest.raises(presets.PresetError, match="not found"):
        presets.create_from_preset(preset="base-vs-extreme", checkpoint=missing)


def test_an_unknown_preset_lists_the_known_ones(tmp_path, prompts):
    with pytest.raises(presets.PresetError, match="depth-sweep"):
        presets.create_from_preset(preset="nope", checkpoint=checkpoint(tmp_path, experts=16, top_k=4))


def test_a_preset_experiment_on_the_trained_model_schedules(tiny_model_path, prompts):
    tiny = Checkpoint(name="tiny", path=str(tiny_model_path))
    tiny.full_clean()
    tiny.save()
    Prompt.objects.filter(category__slug="long_context").delete()

    experiment = presets.create_from_preset(preset="depth-sweep", checkpoint=tiny)
    report = scheduling.schedule_experiment(experiment=experiment)

    assert report.arms == len(presets.scaled_depths(tiny.num_experts, tiny.default_top_k, (0.25, 0.5, 1, 2)))
    assert experiment.generations.count() == report.arms * 2
    assert experiment.comparisons.count() == (report.arms - 1) * 2


def test_the_command_line_lists_the_presets_in_its_help(capsys):
    with pytest.raises(SystemExit):
        call_command("schedule_experiment", "--help")
    assert "base-vs-extreme" in capsys.readouterr().out


def test_a_preset_asks_two_raters_per_comparison_so_agreement_can_be_measured(tmp_path):
    checkpoint = Checkpoint.objects.create(name="ref", path=str(moe_folder(tmp_path, experts=128, top_k=8)))
    Prompt.objects.create(category=Category.objects.create(slug="routine", name="R"), text="Hello")

    experiment = presets.create_from_preset(preset="base-vs-extreme", checkpoint=checkpoint)

    assert experiment.raters_per_comparison == 2
    assert experiment.qualification_items == 0

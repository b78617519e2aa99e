"""What is compared and how outputs are produced: checkpoints, arms, prompts, experiments, outputs, pairs."""

import random
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from evaluator import scoring
from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy
from evaluator.engine.loading import CheckpointError, inspect_checkpoint

CRITERIA = {
    "reasoning": "Depth of reasoning and structure",
    "clarity": "Clarity",
    "faithfulness": "Faithfulness to the given context",
    "effort": "Right-sized effort (no overthinking of a simple task)",
}


def new_comparison_token() -> str:
    return secrets.token_urlsafe(16)


def new_order_key() -> float:
    """Where a comparison stands in the hand-out order: random, so the order names no arm."""
    return random.random()


class Checkpoint(models.Model):
    """A local folder holding an unquantized MoE model, loaded with from_pretrained."""

    class Dtype(models.TextChoices):
        AUTO = "auto", "auto (bf16 on CUDA, fp32 on CPU)"
        BF16 = "bf16", "bfloat16"
        FP16 = "fp16", "float16"
        FP32 = "fp32", "float32"

    name = models.CharField(max_length=100, unique=True)
    path = models.CharField(max_length=500, help_text="Folder with config.json, weights and tokenizer.")
    dtype = models.CharField(max_length=8, choices=Dtype.choices, default=Dtype.AUTO)
    # Facts read from the folder when it is validated.
    family = models.CharField(max_length=50, blank=True, editable=False)
    num_layers = models.PositiveIntegerField(null=True, editable=False)
    num_experts = models.PositiveIntegerField(null=True, editable=False)
    default_top_k = models.PositiveIntegerField(null=True, editable=False)
    native_context = models.PositiveIntegerField(null=True, editable=False)
    max_position_embeddings = models.PositiveIntegerField(null=True, editable=False)
    architecture = models.JSONField(default=dict, blank=True, editable=False)
    validated_at = models.DateTimeField(null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            arch = inspect_checkpoint(self.path)
        except CheckpointError as exc:
            raise ValidationError({"path": str(exc)}) from exc
        self.apply_architecture(arch.to_dict())

    # What apply_architecture sets (the folder's config.json as read, and when).
    ARCHITECTURE_FIELDS = (
        "architecture",
        "family",
        "num_layers",
        "num_experts",
        "default_top_k",
        "native_context",
        "max_position_embeddings",
        "validated_at",
    )

    def apply_architecture(self, arch: dict) -> None:
        from django.utils import timezone

        self.architecture = arch
        self.family = arch["family"]
        self.num_layers = arch["num_layers"]
        self.num_experts = arch["num_experts"]
        self.default_top_k = arch["default_top_k"]
        self.native_context = arch["native_context"]
        self.max_position_embeddings = arch["max_position_embeddings"]
        self.validated_at = timezone.now()


class Variant(models.Model):
    """An arm: one checkpoint under one depth policy and one context configuration."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="variants")
    name = models.CharField(max_length=100, help_text="Admin-only label; raters never see it.")
    depth = models.JSONField(help_text='Depth policy, e.g. {"kind": "fixed", "k": 8}.')
    context = models.JSONField(default=dict, blank=True, help_text='e.g. {"kind": "native"}.')
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["checkpoint", "name"]
        constraints = [models.UniqueConstraint(fields=["checkpoint", "name"], name="variant_unique_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def depth_policy(self) -> DepthPolicy:
        return DepthPolicy.from_dict(self.depth)

    @property
    def context_config(self) -> ContextConfig:
        return ContextConfig.from_dict(self.context or {"kind": "native"})

    def describe(self) -> str:
        return f"{self.depth_policy.describe()}, {self.context_config.describe()}"

    def clean(self) -> None:
        errors = {}
        try:
            policy = self.depth_policy
            if self.checkpoint_id and self.checkpoint.num_experts:
                policy.validate(self.checkpoint.num_experts)
        except (ValueError, KeyError, TypeError) as exc:
            errors["depth"] = str(exc)
        try:
            ctx = self.context_config
            if self.checkpoint_id and self.checkpoint.architecture:
                from evaluator.engine.loading import Architecture

                ctx.validate(Architecture(**self.checkpoint.architecture))
        except (ValueError, KeyError, TypeError) as exc:
            errors["context"] = str(exc)
        if errors:
            raise ValidationError(errors)


class Category(models.Model):
    """A task category: routine, dialogue, philosophy, long context, …"""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "slug"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="prompts")
    text = models.TextField()
    tags = models.JSONField(default=list, blank=True)
    external_id = models.CharField(max_length=100, blank=True)
    # A right answer that needs no rater (a recalled fact, a sum): every output of the prompt is scored.
    reference_answer = models.TextField(
        blank=True, help_text="Optional expected answer; outputs are scored against it when stored."
    )
    scoring_rule = models.CharField(
        max_length=10,
        choices=[(rule, label) for rule, label in scoring.RULE_LABELS.items()],
        default="contains",
        help_text="How an output's first non-empty line is compared with the reference answer.",
    )
    tolerance = models.FloatField(
        null=True, blank=True, help_text="Numeric rule only: the largest accepted difference."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["category", "id"]

    def __str__(self) -> str:
        return f"{self.category.slug}: {self.text[:60]}"

    def clean(self) -> None:
        if self.reference_answer:
            try:
                scoring.check_reference(
                    reference=self.reference_answer, rule=self.scoring_rule, tolerance=self.tolerance
                )
            except scoring.ScoringError as exc:
                raise ValidationError({"reference_answer": str(exc)}) from exc
        elif self.tolerance is not None:
            raise ValidationError({"tolerance": "A tolerance needs a numeric reference answer."})


class Experiment(models.Model):
    """Arms × prompts × seeds, shared sampling parameters, and how pairs are formed and rated."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        SCHEDULED = "scheduled"
        PAUSED = "paused"
        DONE = "done"
        CANCELLED = "cancelled"

    class Pairing(models.TextChoices):
        ALL_PAIRS = "all_pairs", "all pairs"
        BASELINE = "baseline", "each arm against the baseline"
        ADJACENT = "adjacent", "adjacent depths"

    name = models.CharField(max_length=200, unique=True)
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="experiments")
    variants = models.ManyToManyField(Variant, related_name="experiments")
    prompts = models.ManyToManyField(Prompt, related_name="experiments")
    seeds = models.JSONField(default=list, help_text="Seeds shared by every arm, e.g. [0].")
    sampling = models.JSONField(default=dict, blank=True, help_text="Sampling shared by every arm.")
    pairing = models.CharField(max_length=20, choices=Pairing.choices, default=Pairing.ALL_PAIRS)
    baseline = models.ForeignKey(Variant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    raters_per_comparison = models.PositiveIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Raters who judge each comparison; 2 or more lets agreement between raters be measured.",
    )
    priority = models.IntegerField(
        default=0,
        validators=[MinValueValidator(-1000), MaxValueValidator(1000)],
        help_text="Higher is rated first.",
    )
    guidelines = models.TextField(blank=True)
    criteria = models.JSONField(
        default=list, blank=True, help_text=f"Optional per-criterion verdicts, any of: {', '.join(CRITERIA)}."
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of extra gold comparisons mixed in (0 to 0.5).",
    )
    min_seconds_per_vote = models.FloatField(
        default=3.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(600.0)],
        help_text="Minimum reading time: the vote keys wake after it, and faster votes are kept but flagged.",
    )
    qualification_items = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(50)],
        help_text="Gold checks a rater must answer before real comparisons (0: no qualification).",
    )
    qualification_accuracy = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of the qualification checks a rater must get right.",
    )
    preset = models.CharField(max_length=50, blank=True, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    schedule_error = models.TextField(blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "-created_at"]

    def __str__(self) -> str:
        return self.name


class Generation(models.Model):
    """One arm's output for one prompt and seed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="generations")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="generations")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="generations")
    seed = models.IntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    text = models.TextField(blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True)
    new_tokens = models.PositiveIntegerField(null=True)
    seconds = models.FloatField(null=True)
    tokens_per_s = models.FloatField(null=True)
    depth_k = models.PositiveIntegerField(null=True, help_text="k the policy chose; empty for dynamic depth.")
    mean_active_experts = models.FloatField(null=True)
    compute_experts = models.FloatField(
        null=True,
        help_text="Expert slots computed per token (what the depth cost); dynamic depth drops some.",
    )
    routing = models.JSONField(null=True, blank=True)
    # Automatic measures, set when the output is stored (evaluator.measures, evaluator.scoring).
    output_tokens = models.PositiveIntegerField(null=True, help_text="Generated tokens, end token excluded.")
    repetition = models.FloatField(null=True, help_text="Share of repeated 4-grams of tokens.")
    hit_limit = models.BooleanField(
        null=True, help_text="Used all max_new_tokens without stopping by itself."
    )
    reference_correct = models.BooleanField(
        null=True, help_text="Gave the prompt's reference answer; empty when the prompt has none."
    )
    auto_depth = models.JSONField(
        null=True, blank=True, help_text="An automatic depth policy's decision: predicted category, k, why."
    )
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(
        max_length=64, blank=True, help_text="The job (Celery task id) producing this output now."
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["experiment", "variant", "prompt", "seed"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "variant", "prompt", "seed"],
                name="generation_unique_per_arm_prompt_seed",
            )
        ]
        indexes = [models.Index(fields=["experiment", "variant", "status"])]

    def __str__(self) -> str:
        return f"{self.experiment} / {self.variant} / prompt {self.prompt_id} / seed {self.seed}"


class Likelihood(models.Model):
    """Teacher-forced log-likelihood of one prompt's text (and reference answer) under one arm."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="likelihoods")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="likelihoods")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="likelihoods")
    tokens = models.PositiveIntegerField(help_text="Tokens predicted (all but the first).")
    nll = models.FloatField(help_text="Sum of negative log-likelihood over those tokens, in nats.")
    answer_tokens = models.PositiveIntegerField(default=0)
    answer_nll = models.FloatField(null=True, help_text="Of the reference answer given the prompt, in nats.")
    depth_k = models.PositiveIntegerField(null=True)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "variant", "prompt"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "variant", "prompt"], name="likelihood_unique_per_arm_prompt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.experiment} / {self.variant} / prompt {self.prompt_id}"


class ComparisonQuerySet(models.QuerySet):
    def ready(self) -> "ComparisonQuerySet":
        return self.filter(ready_at__isnull=False, is_identical=False)


class Comparison(models.Model):
    """Two generations of one prompt and seed, with sides drawn at random when scheduled."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="+")
    seed = models.IntegerField()
    left = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    right = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    token = models.CharField(max_length=32, unique=True, default=new_comparison_token, editable=False)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="Set when both outputs exist.")
    is_identical = models.BooleanField(
        default=False, help_text="Both outputs are the same text: never shown."
    )
    gold_side = models.CharField(
        max_length=5,
        blank=True,
        choices=[("left", "left"), ("right", "right")],
        help_text="Gold check: this side shows a degraded copy of the other side's output.",
    )
    gold_text = models.TextField(blank=True)
    ratings_count = models.PositiveIntegerField(default=0)
    flag_count = models.PositiveIntegerField(default=0)
    flag_decision = models.CharField(
        max_length=12,
        blank=True,
        choices=[
            ("exclude", "excluded from results"),
            ("keep", "kept in results"),
            ("fix_prompt", "prompt to fix"),
        ],
        help_text="A researcher's decision on a flagged comparison.",
    )
    flag_note = models.TextField(blank=True)
    flag_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    flag_reviewed_at = models.DateTimeField(null=True, blank=True)
    qualification = models.BooleanField(
        default=False, help_text="A gold check that raters answer before real comparisons (not limited to k)."
    )
    order_key = models.FloatField(
        default=new_order_key, editable=False, help_text="Random place in the hand-out order."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ComparisonQuerySet.as_manager()

    class Meta:
        ordering = ["experiment", "id"]
        indexes = [
            # The hand-out order (dashboard.services.next_comparison): fewest votes first, then random.
            models.Index(
                fields=["experiment", "ratings_count", "order_key"],
                condition=Q(ready_at__isnull=False, is_identical=False),
                name="comparison_hand_out",
            ),
            models.Index(fields=["experiment", "ready_at"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "left", "right"], name="comparison_unique_pair"),
            models.CheckConstraint(
                condition=~Q(left=models.F("right")) | ~Q(gold_side=""), name="comparison_two_outputs"
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk} of {self.experiment}"

    @property
    def is_gold(self) -> bool:
        return bool(self.gold_side)

    @property
    def left_text(self) -> str:
        return self.gold_text if self.gold_side == "left" else self.left.text

    @property
    def right_text(self) -> str:
        return self.gold_text if self.gold_side == "right" else self.right.text


class Job(models.Model):
    """One queued Celery job: the outputs of one arm of one experiment."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="jobs")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="jobs")
    task_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [models.Index(fields=["status", "queued_at"])]

    def __str__(self) -> str:
        return f"job {self.task_id[:8]} ({self.status})"


class WorkerStatus(models.Model):
    """The last heartbeat of a generation worker: where it runs and what it has loaded."""

    hostname = models.CharField(max_length=200, unique=True)
    device = models.CharField(max_length=200, blank=True)
    memory = models.CharField(max_length=100, blank=True)
    loaded_checkpoint = models.CharField(max_length=500, blank=True)
    pid = models.PositiveIntegerField(null=True)
    started_at = models.DateTimeField(null=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["hostname"]
        verbose_name_plural = "worker statuses"

    def __str__(self) -> str:
        return self.hostname

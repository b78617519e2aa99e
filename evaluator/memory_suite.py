"""The context-memory suite: needle prompts sized to a checkpoint's windows, and one long-output prompt.

"Can it still recall a fact from a book-length context?" has a right answer that needs no rater. A needle
prompt is a log of plain filler sentences with one fact ("The clerk's locker number is 1653.") at 10%, 50% or
90% of its length, two distractor facts about other people, and at the end the question and "Answer:". Its
reference answer is the fact's value. Lengths are fractions of the windows the arms can have: 1/8, 1/2 and 1
of the native window, and 2 and 4 times it (only a YaRN ×4 arm takes those), each less the room kept for the
answer, so on Qwen3-30B-A3B (32,768 native) the prompts fill 4k, 16k, 32k, 64k and 128k windows and on the
small demo model (1,024) the same command scales down. Lengths are measured with the checkpoint's tokenizer.

The long-output prompt asks for a guide of about 15,000 tokens (scaled to the window the same way); it has no
reference answer: its measures are its length, repetition and whether it stopped by itself.

Prompts are keyed by an external id per (checkpoint, length, depth), so running the command again changes
nothing.
"""

import random
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from evaluator.corpus import ATTRIBUTES, FILLER_EVENTS, FILLER_PLACES, FILLER_WEATHER, ROLES
from evaluator.models import Category, Checkpoint, Prompt

CATEGORY = ("long_context", "Long context", "A long document, then a question that needs a fact from it.")
WINDOW_FRACTIONS = (0.125, 0.5, 1.0, 2.0, 4.0)  # of the native window; above 1 needs YaRN ×4
DEPTHS = (0.1, 0.5, 0.9)
ANSWER_ROOM = 256  # tokens kept for the answer: the presets' max_new_tokens
MIN_TOKENS = 128
GUIDE_TOKENS = 15_000  # the seed's "write a 15k-token guide", for a 32k native window
GUIDE_REFERENCE_WINDOW = 32_768
YARN_ONLY_TAG = "yarn-only"
LONG_OUTPUT_TAG = "long-output"
MEMORY_TAG = "memory"


@dataclass(frozen=True)
class Needle:
    text: str
    answer: str
    tokens: int
    target: int
    depth: float
    window_fraction: float


def _filler_sentence(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(FILLER_EVENTS)
    subjects, predicates = rng.choice((FILLER_WEATHER, FILLER_PLACES))
    return f"{rng.choice(subjects)} {rng.choice(predicates)}."


def _facts(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """n facts about different people: (statement, question, answer)."""
    people = rng.sample([(role, attr) for role in ROLES for attr in ATTRIBUTES], n)
    facts = []
    for role, attr in people:
        value = str(rng.randint(1000, 9999))
        facts.append((f"The {role}'s {attr} is {value}.", f"What is the {role}'s {attr}?", value))
    return facts


def _document(sentences: list[str], title: str, question: str) -> str:
    paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    return f"{title}\n\n" + "\n\n".join(paragraphs) + f"\n\nQuestion: {question}\nAnswer:"


def build_needle(
    tokenizer: Any, *, target: int, depth: float, seed: int, window_fraction: float = 1.0
) -> Needle:
    """A needle prompt of at most `target` tokens (and within a few sentences of it), fact at `depth`."""
    rng = random.Random(seed)
    (fact, question, answer), *distractors = _facts(rng, 3)
    title = f"Station log, volume {rng.randint(2, 90)}"

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def assemble(n: int) -> str:
        local = random.Random(seed + 1)
        sentences = [_filler_sentence(local) for _ in range(n)]
        for statement in (statement for statement, _, _ in distractors):
            sentences.insert(local.randint(0, len(sentences)), statement)
        sentences.insert(round(depth * len(sentences)), fact)
        return _document(sentences, title, question)

    # Filler sentences are about ten tokens; a few rounds of proportional correction land just under target.
    n = max(1, target // 10)
    for _ in range(8):
        tokens = count(assemble(n))
        if tokens <= target and (target - tokens) < 24:
            break
        n = max(1, n + int((target - tokens) / max(1.0, tokens / max(n, 1))) - (tokens > target))
    while n > 1 and count(assemble(n)) > target:
        n -= 1
    text = assemble(n)
    return Needle(text, answer, count(text), target, depth, window_fraction)


def needle_targets(native_context: int, *, room: int = ANSWER_ROOM) -> list[tuple[float, int]]:
    """(window fraction, prompt tokens) for each length of the suite, without repeats."""
    targets: list[tuple[float, int]] = []
    for fraction in WINDOW_FRACTIONS:
        tokens = max(MIN_TOKENS, int(native_context * fraction) - room)
        if tokens not in [t for _, t in targets]:
            targets.append((fraction, tokens))
    return targets


def guide_tokens(native_context: int) -> int:
    """The long-output target, scaled from 15,000 tokens in a 32,768 window."""
    return max(MIN_TOKENS, round(GUIDE_TOKENS * native_context / GUIDE_REFERENCE_WINDOW))


def _length_label(tokens: int) -> str:
    return f"{round(tokens / 1024)}k" if tokens >= 1024 else str(tokens)


@dataclass
class MemoryReport:
    created: int
    existing: int
    rows: list[tuple[str, int, float | None, str]]  # (kind, tokens, depth, window)


def create_memory_prompts(*, checkpoint: Checkpoint, tokenizer: Any = None) -> MemoryReport:
    """Create the suite's prompts for a validated checkpoint (its tokenizer measures every length)."""
    if not checkpoint.native_context:
        raise ValueError(
            f"Checkpoint {checkpoint.name!r} has not been validated: save it in the admin first."
        )
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    native = checkpoint.native_context
    wanted: list[tuple[str, dict[str, Any], tuple]] = []
    for index, (fraction, target) in enumerate(needle_targets(native)):
        window = int(native * fraction)
        for depth in DEPTHS:
            needle = build_needle(
                tokenizer,
                target=target,
                depth=depth,
                seed=1000 * index + int(depth * 100),
                window_fraction=fraction,
            )
            tags = [MEMORY_TAG, "needle", f"len-{_length_label(window)}", f"depth-{round(depth * 100)}"]
            if fraction > 1:
                tags.append(YARN_ONLY_TAG)
            fields = {
                "text": needle.text,
                "tags": tags,
                "reference_answer": needle.answer,
                "scoring_rule": "contains",
            }
            key = f"memory:{checkpoint.name}:{_length_label(window)}:{round(depth * 100)}"
            wanted.append((key, fields, ("needle", needle.tokens, depth, f"{window:,}")))
    target = guide_tokens(native)
    guide = (
        f"Write a complete, practical guide of about {target:,} tokens on keeping a small harbour station "
        "running through a winter: supplies, repairs, the radio, the logbook, visitors and emergencies. "
        "Use numbered chapters with headings, and finish with a checklist.\n\nChapter 1:"
    )
    wanted.append(
        (
            f"memory:{checkpoint.name}:guide",
            {
                "text": guide,
                "tags": [MEMORY_TAG, LONG_OUTPUT_TAG, f"target-{target}"],
                "reference_answer": "",
            },
            ("long output", target, None, "answer"),
        )
    )
    created = existing = 0
    with transaction.atomic():
        slug, name, description = CATEGORY
        category, _ = Category.objects.get_or_create(
            slug=slug, defaults={"name": name, "description": description}
        )
        for key, fields, _row in wanted:
            _, made = Prompt.objects.get_or_create(
                external_id=key[:100], defaults={"category": category, **fields}
            )
            created += made
            existing += not made
    return MemoryReport(created, existing, [row for _, _, row in wanted])

"""The demo data: its long-context prompts carry the answer to their question, so accuracy shows."""

import pytest

from evaluator import scoring
from evaluator.demo import ensure_demo_data
from evaluator.models import Prompt

pytestmark = pytest.mark.django_db


def test_every_long_context_demo_prompt_carries_the_answer_its_document_states(tiny_model_path):
    ensure_demo_data(checkpoint_path=tiny_model_path)
    long_context = Prompt.objects.filter(category__slug="long_context")
    assert long_context.count() == 13
    for prompt in long_context:
        assert prompt.reference_answer and prompt.reference_answer in prompt.text
        # The answer as a reader would write it passes; a wrong number does not.
        assert scoring.score(
            output=f" {prompt.reference_answer}.\n", reference=prompt.reference_answer, rule="contains"
        )
        assert not scoring.score(output=" 99999.\n", reference=prompt.reference_answer, rule="contains")

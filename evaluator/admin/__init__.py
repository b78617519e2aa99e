"""Admin for what is compared: checkpoints, arms, prompts, experiments and their outputs.

An admin sets up and runs a study here without reading code: validate a checkpoint, define arms with plain
fields, import prompts, build an experiment (by hand or from a preset), schedule, pause, resume, cancel or
retry it, and watch its progress and the time it still needs.
"""

# Importing the modules registers their ModelAdmins with the admin site.
from evaluator.admin import checkpoints, experiments, prompts, records, variants  # noqa: F401

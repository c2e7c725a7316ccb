"""One independent network per task: its own encoder, bottom MLP and tower.

The baseline every multi-task claim is measured against: nothing is shared, so a task
with few positives learns from its own labels only.
"""

from __future__ import annotations

from models import blocks
from models.multitask import MultiTaskModel


class SingleTask(MultiTaskModel):
    shared_input = False

    def make_bottom(self, names, hparams, seed):
        return blocks.Independent(names, hparams.bottom, seed=seed, name="bottom")

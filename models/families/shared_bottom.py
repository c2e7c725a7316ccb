"""Shared-Bottom (Caruana, 1997): one MLP shared by every task, one tower per task."""

from __future__ import annotations

from models import blocks
from models.multitask import MultiTaskModel


class SharedBottomModel(MultiTaskModel):
    def make_bottom(self, names, hparams, seed):
        return blocks.SharedBottom(names, hparams.bottom, seed=seed, name="bottom")

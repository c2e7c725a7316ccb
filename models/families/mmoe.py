"""MMoE (Ma et al., KDD'18): n shared experts; each task mixes them with its own softmax gate."""

from __future__ import annotations

import dataclasses

from models import blocks
from models.multitask import MultiTaskModel, MultiTaskParams


@dataclasses.dataclass(frozen=True)
class MMoEParams(MultiTaskParams):
    """Attributes: experts: number of shared experts (each an MLP of widths `bottom`)."""

    experts: int = 4


class MMoEModel(MultiTaskModel):
    def make_bottom(self, names, hparams: MMoEParams, seed):
        return blocks.MMoE(names, hparams.experts, hparams.bottom, seed=seed, name="bottom")

"""PLE (Tang et al., RecSys'20): stacked customized gate control levels with shared and
task-specific experts; a task's gate mixes its own and the shared experts."""

from __future__ import annotations

import dataclasses

from models import blocks
from models.multitask import MultiTaskModel, MultiTaskParams


@dataclasses.dataclass(frozen=True)
class PLEParams(MultiTaskParams):
    """Attributes: levels: extraction levels; shared_experts / task_experts: experts per level."""

    levels: int = 2
    shared_experts: int = 2
    task_experts: int = 1


class PLEModel(MultiTaskModel):
    def make_bottom(self, names, hparams: PLEParams, seed):
        return blocks.PLE(names, hparams.levels, hparams.shared_experts, hparams.task_experts, hparams.bottom,
                          seed=seed, name="bottom")

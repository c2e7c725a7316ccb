"""DTRN (Liu et al., CIKM'23): a task-specific bottom representation for every task.

Each task t reads `raw_t = [query, item, query * item, interest_t]`: the multi-task
families' interaction input plus the task's own interest from the user's behavior
sequences split by type (MovieLens disliked / neutral / liked; Taobao pv / cart / fav /
buy), encoded by one transformer layer shared by every (task, type) pair whose layer
norms a hypernetwork conditions on the pair (`blocks.TaskInterest`). The refinement
module then scales `raw_t` by a task's own SENet-like MLP (`blocks.Refinement`; its output
activation is `refine_gate`).

Above the bottom, `sharing` chooses what is shared: `none` (each task's representation
goes through its own MLP and tower), `mmoe` or `ple` (the multi-task families' expert
blocks, each task's experts and gate reading its own representation).

Ablations, by hyperparameter: `hyper=false` (plain layer norms, so every task gets the
same interest), `refine=false` (raw_t as is), `typed=false` (one sequence of every
behavior, `seq_len * types` items long, each item's behavior embedding added).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from contract import features as F
from models import blocks
from models.multitask import MultiTaskModel, MultiTaskParams

SHARING = ("none", "mmoe", "ple")


@dataclasses.dataclass(frozen=True)
class DTRNParams(MultiTaskParams):
    """Attributes:
      sharing: above the task-specific bottom: none, mmoe or ple.
      experts: MMoE's shared experts.
      levels / shared_experts / task_experts: PLE's levels and experts per level.
      seq_len: most recent items kept per behavior type.
      seq_dim: width of the interest encoder (every (task, type) pair is encoded, so its
        cost grows with tasks x types x seq_len x seq_dim).
      heads: attention heads of the interest encoder.
      hyper: hypernetwork-conditioned layer norms (false: plain layer norms).
      refine: the task-specific refinement (false: raw_t as is).
      typed: one sequence per behavior type (false: one sequence of every behavior).
      cond_dim / hyper_hidden: task and type embedding size; the hypernetworks' hidden width.
      refine_hidden: the refinement MLPs' hidden width.
      refine_gate: the refinement MLPs' output activation: sigmoid (SENet's (0, 1)
        excitation; chosen on the eval split of both datasets), relu (unbounded; the first
        default) or 2sigmoid ((0, 2), the identity at a zero pre-activation).
      seq_dropout: dropout in the interest encoder.
    """

    sharing: str = "none"
    experts: int = 4
    levels: int = 2
    shared_experts: int = 2
    task_experts: int = 1
    seq_len: int = 8
    seq_dim: int = 16
    heads: int = 2
    hyper: bool = True
    refine: bool = True
    typed: bool = True
    cond_dim: int = 16
    hyper_hidden: int = 32
    refine_hidden: int = 64
    refine_gate: str = "sigmoid"
    seq_dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.sharing not in SHARING:
            raise ValueError(f"hyperparameter sharing must be one of {SHARING}, got {self.sharing!r}")
        if self.seq_len < 1:
            raise ValueError(f"hyperparameter seq_len must be >= 1, got {self.seq_len}")
        if self.refine_gate not in blocks.REFINE_GATES:
            raise ValueError(f"hyperparameter refine_gate must be one of {blocks.REFINE_GATES}, "
                             f"got {self.refine_gate!r}")


class DTRNModel(MultiTaskModel):
    def __init__(self, context, hparams: DTRNParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        behaviors = len(context.dataset.behaviors)  # behavior ids 1..n (0 padding, n + 1 unknown)
        self.interest = blocks.TaskInterest(
            self.names, context.num_items, tuple(range(1, behaviors + 1)) if hparams.typed else None,
            context.num_behaviors, hparams.seq_dim, hparams.seq_len * (1 if hparams.typed else behaviors),
            heads=hparams.heads, hyper=hparams.hyper, cond_dim=hparams.cond_dim, hyper_hidden=hparams.hyper_hidden,
            dropout=hparams.seq_dropout, seed=context.seed + 700, name="interest")
        self.refinement = (blocks.Refinement(self.names, hparams.refine_hidden, hparams.refine_gate,
                                             seed=context.seed + 800, name="refinement")
                           if hparams.refine else None)

    def make_bottom(self, names, hparams: DTRNParams, seed):
        if hparams.sharing == "mmoe":
            return blocks.MMoE(names, hparams.experts, hparams.bottom, seed=seed, name="bottom")
        if hparams.sharing == "ple":
            return blocks.PLE(names, hparams.levels, hparams.shared_experts, hparams.task_experts, hparams.bottom,
                              seed=seed, name="bottom")
        return blocks.Independent(names, hparams.bottom, seed=seed, name="bottom")

    def task_inputs(self, features, training=False):
        """({task: raw_t or refined raw_t}, embedding penalty): the task-specific bottom."""
        x, penalty, item = self.encoder(features, training=training, with_item=True)
        interest = self.interest(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX], item,
                                 training=training)
        raw = {t: tf.concat([x, interest[t]], axis=-1) for t in self.names}
        return (self.refinement(raw, training=training) if self.refinement is not None else raw), penalty

    def represent(self, features, training=False):
        inputs, penalty = self.task_inputs(features, training=training)
        reps, gates = self.bottom(inputs, training=training)
        return reps, gates, penalty

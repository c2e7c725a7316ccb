"""Task specs: what a model predicts, where its label comes from, and how its push is gated.

A task names one model output. The same name is the output key of `serving_default`,
the TFMA output name, the prefix of the task's Keras metrics and the key of its gate
in the run summary. Models (`models/tasks.py`) turn a spec into a loss and metrics;
the Evaluator config (`evaluation/eval_config.py`) turns it into TFMA metrics and
thresholds; export turns a family's tasks and capabilities into signatures.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from contract import run

# Task kinds.
REGRESSION = "regression"  # a real-valued label (MSE), e.g. the rating
BINARY = "binary"  # a 0/1 label (sigmoid cross-entropy), e.g. liked, cart
RETRIEVAL = "retrieval"  # the held-out items of a user, ranked over the whole catalogue
KINDS = (REGRESSION, BINARY, RETRIEVAL)

# Metric names of the gates (as TFMA reports them).
RMSE = "rmse"
AUC = "auc"
# Protocol S (next item) reports NDCG at 10 whatever the run's K (the K of `recommend`).
NEXT_ITEM_NDCG_K = 10


def ndcg_at(k: int) -> str:
    """The name of NDCG@k, e.g. `ndcg@10`."""
    return f"ndcg@{k}"


def ndcg_lift_at(k: int) -> str:
    """The name of NDCG@k minus MostPopular's on the same queries, e.g. `ndcg@10_lift`."""
    return f"{ndcg_at(k)}_lift"


# A next-behavior task's AUC minus its history peer's (the share of the input's items with
# the task's behavior) on the same examples.
AUC_LIFT = "auc_lift"


@dataclasses.dataclass(frozen=True)
class Gate:
    """When a task's model may be pushed: a value bound and a tolerated worsening.

    Attributes:
      metric: the TFMA metric the gate reads (on the eval split, overall slice).
      higher_is_better: direction of the metric.
      threshold: lower bound (higher is better) or upper bound of the value.
      max_worsening: how much worse than the latest blessed model of the same family
        the value may be (absolute, >= 0).
      change_metric: the metric the worsening is measured on, when not `metric` (a lift
        over a peer is bounded by `threshold`, the model's own value may not worsen).
    """

    metric: str
    higher_is_better: bool
    threshold: float
    max_worsening: float = 0.01
    change_metric: str = ""

    def __post_init__(self):
        if self.max_worsening < 0:
            raise ValueError(f"gate {self.metric}: max_worsening must be >= 0, got {self.max_worsening}")

    def at_k(self, k: int) -> "Gate":
        """This gate on metrics at K = k: a top-K metric's name (`ndcg@10_lift`) takes k, so the
        gate reads what an Evaluator at K = k computes; other metrics are unchanged."""
        return dataclasses.replace(self, metric=_at_k(self.metric, k), change_metric=_at_k(self.change_metric, k))


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One prediction target.

    Attributes:
      name: the output name (see module docstring).
      kind: REGRESSION, BINARY or RETRIEVAL.
      label: the transformed label feature (REGRESSION, BINARY); empty for RETRIEVAL,
        whose targets are the user view's `target_item_ids`.
      condition: a 0/1 label that must be 1 for the task to apply: loss and metrics are
        computed on those rows only (e.g. `liked` is defined on watched rows, not on
        sampled negatives). Empty: every row.
      gate: the push gate; None leaves the task ungated (reported only).
      parent: the task before this one in the behavior funnel (watched -> liked -> loved;
        viewed -> cart / fav -> buy), for cascade models; empty for the first.
    """

    name: str
    kind: str
    label: str = ""
    condition: str = ""
    gate: Optional[Gate] = None
    parent: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind != RETRIEVAL and not self.label:
            raise ValueError(f"task {self.name!r}: a {self.kind} task needs a label")

    def with_gate(self, **changes) -> "TaskSpec":
        """This task with some gate fields replaced (e.g. a threshold from the pipeline config)."""
        if self.gate is None:
            raise ValueError(f"task {self.name!r} has no gate to change")
        return dataclasses.replace(self, gate=dataclasses.replace(self.gate, **changes))


def default_gate(kind: str) -> Gate:
    """The gate a task of `kind` gets unless its dataset says otherwise."""
    if kind == REGRESSION:
        return Gate(RMSE, higher_is_better=False, threshold=1.0)
    if kind == BINARY:
        return Gate(AUC, higher_is_better=True, threshold=0.6)
    # A retrieval model must rank better than the training popularity list does on
    # the same queries; its NDCG may also not fall behind the last blessed model's.
    # The K is the run's (`Gate.at_k`, applied by the Evaluator's config).
    return Gate(ndcg_lift_at(run.TOP_K), higher_is_better=True, threshold=0.0)


def history_peer_gate() -> Gate:
    """The gate of a task with a history peer (next-behavior tasks): its AUC must beat the
    peer's on the same examples (lift > 0), and may not fall behind the last blessed model's."""
    return Gate(AUC_LIFT, higher_is_better=True, threshold=0.0, change_metric=AUC)


def _at_k(name: str, k: int) -> str:
    return re.sub(r"@\d+", f"@{k}", name)

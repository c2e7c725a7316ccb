"""Per model family: Resolver (latest blessed) -> Trainer -> Evaluator -> Pusher.

The Resolver gives the Evaluator its baseline (the candidate must not be worse than it by
more than each gate's max_worsening) and, with warm start, the Trainer its starting weights.

What each stage does follows from the family's registry entry: its view decides the
examples the Trainer and the Evaluator read, its tasks the Evaluator's metrics and
gates (evaluation/eval_config.py), its capabilities the exported signatures.
"""

from __future__ import annotations

from typing import Any, List

from tfx import v1 as tfx

from components.pusher import ServingPusher
from contract import features as F
from contract.datasets import LEAVE_LAST_TWO_OUT_SPLIT
from contract import tasks as T
from evaluation.eval_config import PROTOCOL_K, PROTOCOL_S, REPORT_SPLIT, GATE_SPLIT, eval_config, with_thresholds
from models.registry import get_family
from pipeline.configs import PipelineConfig
from training.trainer import TrainConfig


def family_tasks(config: PipelineConfig, family_name: str):
    """The family's task specs on the configured dataset, gates from the config.

    Without sampled negatives every row is a positive of the dataset's implicit label
    (watched / viewed), so a task on that label is left out.
    """
    config = config.resolved()
    spec = config.spec
    tasks = get_family(family_name).task_specs(spec)
    if config.negatives_per_positive == 0:
        tasks = tuple(t for t in tasks if t.label != spec.implicit_label)
        if not tasks:
            raise ValueError(f"model family {family_name!r} only predicts {spec.implicit_label!r}, which needs "
                             f"sampled negatives: set negatives_per_positive > 0")
    return with_thresholds(tasks, config.gate_thresholds, config.gate_max_worsening)


# A distilled family's Multi-AUC gate: better than a random order of the label pairs, and
# no worse than the last blessed model by more than the gate's tolerance.
MULTI_AUC_GATE = T.Gate(metric="", higher_is_better=True, threshold=0.5)


def create_model_stages(config: PipelineConfig, examples, raw_examples, user_examples, transform_graph,
                        schema) -> List:
    """The components that train, evaluate and push every configured family.

    A family with a teacher or a base (registry) trains from that family's Trainer's model
    (its `base_model`, so ML Metadata records the teacher / pretrained model as the
    student / fine-tuning Trainer's input); a teacher or base that is not itself a
    configured family is trained only (never evaluated or pushed).
    """
    config = config.resolved()
    components: List = []
    trainers = {}
    resolvers = {name: _latest_blessed(name) for name in config.families}

    def trainer_of(family_name: str):
        if family_name not in trainers:
            upstream = get_family(family_name).upstream
            # A warm start is from the family's last blessed model (none on the first run: from scratch).
            warm = config.warm_starts and not upstream and family_name in resolvers
            base_model = (trainer_of(upstream).outputs["model"] if upstream
                          else resolvers[family_name].outputs["model"] if warm else None)
            trainers[family_name] = _trainer(config, family_name, examples, user_examples, transform_graph, schema,
                                             base_model, warm_start=warm)
            if family_name not in config.families:
                components.append(trainers[family_name])
        return trainers[family_name]

    for family_name in config.families:
        family = get_family(family_name)  # fails early, listing the known families
        tasks = family_tasks(config, family_name)  # fails early if the dataset lacks a task
        on_users = family.view == F.USER_VIEW
        if family.sequential and config.split != LEAVE_LAST_TWO_OUT_SPLIT:
            raise ValueError(f"model family {family_name!r} is sequential and is evaluated with protocol S, which "
                             f"needs --split {LEAVE_LAST_TWO_OUT_SPLIT} (got {config.split!r})")
        trainer = trainer_of(family_name)
        resolver = resolvers[family_name]

        evaluator = tfx.components.Evaluator(
            examples=user_examples if on_users else raw_examples,
            model=trainer.outputs["model"],
            baseline_model=resolver.outputs["model"],
            eval_config=eval_config(tasks, top_k=config.top_k, dataset=config.description,
                                    pair=[t.name for t in tasks] if family.teacher else (),
                                    pair_gate=MULTI_AUC_GATE if family.teacher else None,
                                    protocol_name=PROTOCOL_S if family.sequential else PROTOCOL_K,
                                    history_peers=dict(config.spec.next_behavior_tasks),
                                    peer_window=config.max_history,
                                    view=family.view),
            example_splits=[GATE_SPLIT, REPORT_SPLIT],
        ).with_id(f"Evaluator_{family_name}")

        pusher = ServingPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=raw_examples,
            serving_base_dir=config.serving_model_dir,
            model_name=family_name,
        ).with_id(f"Pusher_{family_name}")
        components.extend([resolver, trainer, evaluator, pusher])
    return components


def _latest_blessed(family_name: str):
    """The Resolver of the family's last blessed model: the Evaluator's baseline and, with
    warm start, the Trainer's starting point."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        # Only this family's models and blessings are its baseline.
        model=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.Model,
            producer_component_id=f"Trainer_{family_name}",
            output_key="model",
        ),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing,
            producer_component_id=f"Evaluator_{family_name}",
            output_key="blessing",
        ),
    ).with_id(f"Resolver_{family_name}")


def train_config(config: PipelineConfig, family_name: str, **overrides: Any) -> TrainConfig:
    """The Trainer's configuration of a family on this run's data: the description's content,
    the run's max_history, split, seed, top_k and strategy, the family's hyperparameters.

    Args:
      config: the run's configuration.
      family_name: a registry name.
      overrides: TrainConfig fields to set instead (benchmarks: hparams, seed, tasks).
    """
    config = config.resolved()
    values = dict(
        family=family_name,
        description=config.description,
        hparams=config.hparams.get(family_name, {}),
        max_history=config.max_history,
        seed=config.seed,
        top_k=config.top_k,
        strategy=config.train_strategy,
        split=config.split,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _trainer(config: PipelineConfig, family_name: str, examples, user_examples, transform_graph, schema,
             base_model=None, warm_start: bool = False):
    family = get_family(family_name)
    tasks = family_tasks(config, family_name)
    hparams = family.hparams().override(config.hparams.get(family_name, {}))  # fails early on bad names
    on_users = family.view == F.USER_VIEW
    return tfx.components.Trainer(
        run_fn="training.trainer.run_fn",
        examples=user_examples if on_users else examples,
        transform_graph=transform_graph,
        schema=None if on_users else schema,
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(num_steps=config.train_steps) if config.train_steps else tfx.proto.TrainArgs(),
        eval_args=tfx.proto.EvalArgs(),
        custom_config=train_config(config, family_name, hparams=hparams.to_dict(),
                                   tasks=tuple(t.name for t in tasks), warm_start=warm_start).to_custom_config(),
    ).with_id(f"Trainer_{family_name}")

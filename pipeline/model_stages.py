"""Per model family: Trainer -> Resolver (latest blessed) -> Evaluator -> Pusher.

Every family reads the same Transform output. The Evaluator (TFMA) computes the
recommendation metrics of `evaluation` per output, per slice (overall, user
activity, genre) and gates the push with a value threshold plus a change threshold
against the latest blessed model of the same family.
"""

from __future__ import annotations

from typing import List

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2
from tfx import v1 as tfx

from evaluation import recommendation_metrics_specs
from components.pusher import ServingPusher
from contract import datasets as D
from contract import features as F
from models.registry import get_family
from pipeline.configs import PipelineConfig


def gate_threshold(config: PipelineConfig, classification: bool) -> tuple:
    """(metric class, MetricThreshold) that blesses a family's model."""
    if classification:
        return "LikedAUC", tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.min_auc}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -config.max_auc_decrease},
            ),
        )
    return "RatingRMSE", tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": config.max_rmse}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": config.max_rmse_increase},
        ),
    )


def eval_config(config: PipelineConfig, family_name: str) -> tfma.EvalConfig:
    """TFMA config of one family: metrics of protocol R, slices, and the push gate."""
    head = get_family(family_name).head
    specs = recommendation_metrics_specs(
        # A single-output model's dict output reaches TFMA unwrapped: no output name.
        output_name="",
        label_is_rating=not head.classification,
        top_k=config.top_k,
        skip_unrated=config.negatives_per_positive > 0,
    )
    gated, threshold = gate_threshold(config, head.classification)
    for spec in specs:
        for metric in spec.metrics:
            if metric.class_name == gated:  # the gate looks at the overall slice only
                metric.per_slice_thresholds.append(
                    tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)
                )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=head.label,
                preprocessing_function_names=["transform_features"],
            )
        ],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[F.USER_ACTIVITY]),
            tfma.SlicingSpec(feature_keys=[F.ITEM_GENRES]),
        ],
        metrics_specs=specs,
        # Only the metrics above: the compiled Keras metrics would make TFMA call the
        # Keras model on transformed features instead of the serving signature.
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
    )


def create_model_stages(config: PipelineConfig, examples, raw_examples, transform_graph, schema) -> List:
    """The components that train, evaluate and push every configured family."""
    components: List = []
    spec = D.dataset_spec(config.dataset)
    for family_name in config.families:
        head = get_family(family_name).head  # fails early, listing the known families
        if head.label not in spec.labels:
            raise ValueError(
                f"model family {family_name!r} predicts {head.label!r}, which dataset {spec.name!r} "
                f"does not have (its labels: {', '.join(spec.labels)}); choose other families "
                f"or --families none"
            )
        trainer = tfx.components.Trainer(
            run_fn="models.trainer.run_fn",
            examples=examples,
            transform_graph=transform_graph,
            schema=schema,
            train_args=tfx.proto.TrainArgs(num_steps=config.train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=config.eval_steps),
            custom_config={
                "family": family_name,
                "dataset": config.dataset,
                "seed": config.seed,
                "batch_size": config.batch_size,
                "top_k": config.top_k,
            },
        ).with_id(f"Trainer_{family_name}")

        resolver = tfx.dsl.Resolver(
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

        evaluator = tfx.components.Evaluator(
            examples=raw_examples,
            model=trainer.outputs["model"],
            baseline_model=resolver.outputs["model"],
            eval_config=eval_config(config, family_name),
            example_splits=["test"],
        ).with_id(f"Evaluator_{family_name}")

        pusher = ServingPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=raw_examples,
            serving_base_dir=config.serving_model_dir,
            model_name=family_name,
        ).with_id(f"Pusher_{family_name}")
        components.extend([trainer, resolver, evaluator, pusher])
    return components


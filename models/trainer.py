"""The Trainer's `run_fn`: builds the family named in the custom config, trains, exports.

One `run_fn` serves every family; the pipeline holds one Trainer per family, each with
`custom_config={"family": ..., ...}`, all reading the same Transform output.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from contract import datasets as D
from contract import features as F
from models.base import FactorizationModel, ModelContext
from models.export import export_model
from models.inputs import item_feature_table, load_examples, make_dataset
from models.registry import get_family

TRAINING_SUMMARY = "training_summary.json"


def _skip_autograph_for_tf_keras() -> None:
    """Stops autograph from converting tf_keras internals on the first `fit`.

    TF 2.16's do-not-convert list names `keras` but not `tf_keras`, so the first
    fit spent 25-40 s converting tf_keras code that needs no conversion (measured:
    Trainer fit ~40 s -> 3-6 s). This is a private TensorFlow setting; it lives here
    only, and without it training is slower but identical.
    """
    try:
        from tensorflow.python.autograph.core import config  # private: see docstring

        rule = config.DoNotConvert("tf_keras")
        if all(getattr(r, "module_prefix", None) != "tf_keras" for r in config.CONVERSION_RULES):
            config.CONVERSION_RULES = (rule,) + tuple(config.CONVERSION_RULES)
    except (ImportError, AttributeError):  # a TF without that setting: just slower
        logging.info("autograph do-not-convert rule for tf_keras not available")


def vocabulary_rows(tf_transform_output: tft.TFTransformOutput, name: str) -> int:
    """Embedding rows for a shifted vocabulary: padding 0, the vocabulary, OOV buckets."""
    return tf_transform_output.vocabulary_size_by_name(name) + F.OOV_BUCKETS + 1


def build_context(
    tf_transform_output: tft.TFTransformOutput,
    train_data: Dict[str, np.ndarray],
    spec: D.DatasetSpec,
    family_name: str,
    config: Dict[str, Any],
) -> Tuple[ModelContext, np.ndarray]:
    """Sizes and training-split statistics of a family's model, and the seen item rows."""
    family = get_family(family_name)
    num_items = vocabulary_rows(tf_transform_output, F.ITEM_VOCAB)
    table = item_feature_table(
        train_data, num_items, [n for n in family.item_table_features if n in train_data]
    )
    return ModelContext(
        num_users=vocabulary_rows(tf_transform_output, F.USER_VOCAB),
        num_items=num_items,
        num_genres=vocabulary_rows(tf_transform_output, F.GENRE_VOCAB),
        num_behaviors=len(spec.behaviors) + 2,
        mean_rating=float(np.mean(train_data[F.RATING])) if spec.has_rating else 0.0,
        dim=int(config.get("dim", 32)),
        l2=float(config.get("l2", family.l2)),
        seed=int(config.get("seed", 42)),
        item_table=table if family.item_table_features else None,
    ), table["present"]


def train(
    family_name: str,
    train_files,
    eval_files,
    transform_output: str,
    train_steps: int,
    eval_steps: Optional[int] = None,
    config: Optional[Dict[str, Any]] = None,
) -> Tuple[FactorizationModel, Dict[str, Any], np.ndarray]:
    """Trains one family; returns the model, a summary and the valid candidate rows."""
    config = dict(config or {})
    _skip_autograph_for_tf_keras()
    seed = int(config.get("seed", 42))
    keras.utils.set_random_seed(seed)
    spec = D.dataset_spec(config.get("dataset", D.MOVIELENS.name))
    family = get_family(family_name)
    tft_output = tft.TFTransformOutput(transform_output)
    train_data = load_examples(train_files, tft_output)
    context, present = build_context(tft_output, train_data, spec, family_name, config)
    model = family.build(context, family.head)
    model.compile(optimizer=keras.optimizers.Adam(float(config.get("learning_rate", family.learning_rate))))

    batch_size = int(config.get("batch_size", 256))
    epochs = max(1, min(int(config.get("epochs", family.epochs)), train_steps))
    steps_per_epoch = max(1, train_steps // epochs)
    train_ds = make_dataset(train_data, batch_size, shuffle=True, seed=seed, repeat=True)
    eval_ds = make_dataset(load_examples(eval_files, tft_output), batch_size, shuffle=False)
    started = time.monotonic()
    history = model.fit(
        train_ds,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        validation_data=eval_ds,
        validation_steps=eval_steps,
        verbose=2,
    )
    seconds = time.monotonic() - started
    valid = np.asarray(present, dtype=bool).copy()
    valid[0] = False  # padding row
    summary = {
        "family": family_name,
        "train_steps": steps_per_epoch * epochs,
        "batch_size": batch_size,
        "train_seconds": round(seconds, 2),
        "examples_per_second": round(steps_per_epoch * epochs * batch_size / seconds, 1),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
    }
    return model, summary, valid


def train_and_export(
    family_name: str,
    train_files,
    eval_files,
    transform_output: str,
    serving_model_dir: str,
    train_steps: int,
    eval_steps: Optional[int] = None,
    config: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Trains one family and exports it with its signatures; returns the training summary."""
    config = dict(config or {})
    model, summary, valid = train(
        family_name, train_files, eval_files, transform_output, train_steps, eval_steps, config
    )
    export_model(
        model,
        tft.TFTransformOutput(transform_output),
        D.dataset_spec(config.get("dataset", D.MOVIELENS.name)),
        valid,
        serving_model_dir,
        top_k=int(config.get("top_k", 10)),
    )
    return summary


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    config = dict(fn_args.custom_config or {})
    summary = train_and_export(
        config["family"],
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.serving_model_dir,
        train_steps=fn_args.train_steps,
        eval_steps=fn_args.eval_steps,
        config=config,
    )
    if fn_args.model_run_dir:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(f"{fn_args.model_run_dir}/{TRAINING_SUMMARY}", "w") as f:
            f.write(json.dumps(summary, indent=2))
    logging.info("trained %s: %s", config["family"], summary)

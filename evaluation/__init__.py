"""Evaluation: metric definitions (numpy, `definitions`), their TFMA metrics
(`tfma_metrics`), and the Evaluator config derived from tasks (`eval_config`).

`definitions` imports without TensorFlow, for benchmarks; the TFMA modules load
TFMA when imported.
"""
import os as _os

# tensorflow-recommenders needs Keras 2 (tf_keras); the switch must be set before
# TensorFlow is first imported, so every package of the project sets it on import.
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

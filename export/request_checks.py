"""In-graph checks of a served signature's inputs against each other.

A signature declares each input's dtype and rank, and a server checks each input on its
own; inputs that must agree with one another (a history's ids and its behaviors) are
checked inside the graph, so TF Serving and the local server both answer
INVALID_ARGUMENT with a message naming the inputs and their shapes. Kept free of the
model code so the stand-in test fixture uses the same checks.
"""

from __future__ import annotations

import tensorflow as tf


def shape_text(tensor: tf.Tensor) -> tf.Tensor:
    """A tensor's runtime shape as a string such as `[1, 2]`."""
    dims = tf.strings.reduce_join(tf.strings.as_string(tf.shape(tensor, out_type=tf.int64)), separator=", ")
    return tf.strings.join(["[", dims, "]"])


def assert_same_shape(signature: str, name_a: str, a: tf.Tensor, name_b: str, b: tf.Tensor) -> tf.Operation:
    """An assertion (InvalidArgumentError when it fails) that `a` and `b`, of one rank,
    have one shape; its message names the signature, both inputs and both shapes.

    Args:
      signature: the signature's name, for the message.
      name_a, a: the first input's name and value.
      name_b, b: the second input's name and value (same rank as `a`).
    """
    same = tf.reduce_all(tf.equal(tf.shape(a), tf.shape(b)))
    message = tf.strings.join([
        f"{signature}: {name_a} has shape ", shape_text(a), f" but {name_b} has shape ", shape_text(b),
        f"; they must have the same shape [batch, length], {name_b} aligned with {name_a} (pad both with \"\")",
    ])
    return tf.debugging.Assert(same, [message])


def assert_same_rows(signature: str, name_a: str, a: tf.Tensor, name_b: str, b: tf.Tensor) -> tf.Operation:
    """An assertion that `a` and `b` have the same first (batch) dimension; its message
    names the signature, both inputs and both shapes.

    Args:
      signature: the signature's name, for the message.
      name_a, a: the first input's name and value.
      name_b, b: the second input's name and value.
    """
    same = tf.equal(tf.shape(a)[0], tf.shape(b)[0])
    message = tf.strings.join([
        f"{signature}: {name_a} has shape ", shape_text(a), f" but {name_b} has shape ", shape_text(b),
        f"; they must have the same number of rows (one row of {name_b} per request row)",
    ])
    return tf.debugging.Assert(same, [message])

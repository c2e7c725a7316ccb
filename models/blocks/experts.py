"""How a multi-task bottom is shared: one block per scheme, each mapping an input
representation [B, D] to one representation per task {task: [B, d]}.

- `Independent`: one MLP per task (nothing shared).
- `SharedBottom`: one MLP, its output given to every task.
- `MMoE` (Ma et al., KDD'18): n expert MLPs; each task mixes them with its own softmax gate.
- `PLE` (Tang et al., RecSys'20): stacked CGC levels; each level has shared experts and
  experts of each task; a task's gate mixes its own and the shared experts, and a shared
  gate (all experts) feeds the shared input of the next level.

Every block's call returns (representations, gate weights): {task: [B, d]} and
{task: [B, experts]} (empty when nothing is gated), so a family can report what the
gates do. Every block also takes one input per task ({task: [B, D]}, a task-specific
bottom such as DTRN's): the sharing above stays, each task's experts and gate read its
own input (PLE's shared path reads the tasks' mean).
"""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf
import tf_keras as keras

from models.blocks.core import MLP


class Independent(keras.layers.Layer):
    """One MLP per task."""

    def __init__(self, tasks: Sequence[str], units: Sequence[int], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.mlps = {t: MLP(units, output_activation="relu", seed=seed + 10 * i, name=f"mlp_{t}")
                     for i, t in enumerate(self.tasks)}

    def call(self, x, training=False):
        if isinstance(x, dict):  # one input per task
            return {t: self.mlps[t](x[t], training=training) for t in self.tasks}, {}
        return {t: self.mlps[t](x, training=training) for t in self.tasks}, {}


class SharedBottom(keras.layers.Layer):
    """One MLP shared by every task."""

    def __init__(self, tasks: Sequence[str], units: Sequence[int], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.mlp = MLP(units, output_activation="relu", seed=seed, name="shared")

    def call(self, x, training=False):
        if isinstance(x, dict):
            return {t: self.mlp(x[t], training=training) for t in self.tasks}, {}
        shared = self.mlp(x, training=training)
        return {t: shared for t in self.tasks}, {}


class Experts(keras.layers.Layer):
    """n expert MLPs over the same input: [B, D] -> [B, n, d]."""

    def __init__(self, count: int, units: Sequence[int], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.experts = [MLP(units, output_activation="relu", seed=seed + 7 * i, name=f"expert_{i}")
                        for i in range(count)]

    def call(self, x, training=False):
        return tf.stack([e(x, training=training) for e in self.experts], axis=1)


class Gate(keras.layers.Layer):
    """Softmax weights over n experts from the input, and the weighted sum of the experts."""

    def __init__(self, count: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(count, kernel_initializer=keras.initializers.GlorotUniform(seed),
                                        name="logits")

    def call(self, x, experts):
        weights = tf.nn.softmax(self.dense(x), axis=-1)  # [B, n]
        return tf.reduce_sum(experts * weights[..., None], axis=1), weights


class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts: shared experts, one gate per task."""

    def __init__(self, tasks: Sequence[str], experts: int, units: Sequence[int], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.experts = Experts(experts, units, seed=seed, name="experts")
        self.gates = {t: Gate(experts, seed=seed + 100 + i, name=f"gate_{t}") for i, t in enumerate(self.tasks)}

    def call(self, x, training=False):
        per_task = isinstance(x, dict)
        e = None if per_task else self.experts(x, training=training)
        out, gates = {}, {}
        for t in self.tasks:
            if per_task:  # the shared experts applied to the task's own input
                out[t], gates[t] = self.gates[t](x[t], self.experts(x[t], training=training))
            else:
                out[t], gates[t] = self.gates[t](x, e)
        return out, gates


class CGC(keras.layers.Layer):
    """One customized gate control level: shared and task-specific experts.

    `call(inputs)` takes {task: [B, D]} plus inputs["__shared__"] and returns the same
    shape: each task's gate mixes its own and the shared experts; the shared gate mixes
    all experts (used by the next level only).
    """

    SHARED = "__shared__"

    def __init__(self, tasks: Sequence[str], shared: int, specific: int, units: Sequence[int], seed: int = 0,
                 last: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.shared = Experts(shared, units, seed=seed, name="shared_experts")
        self.specific = {t: Experts(specific, units, seed=seed + 50 * (i + 1), name=f"experts_{t}")
                         for i, t in enumerate(self.tasks)}
        self.gates = {t: Gate(shared + specific, seed=seed + 200 + i, name=f"gate_{t}")
                      for i, t in enumerate(self.tasks)}
        self.shared_gate = None if last else Gate(shared + specific * len(self.tasks), seed=seed + 300,
                                                  name="gate_shared")

    def call(self, inputs: Dict[str, tf.Tensor], training=False):
        shared = self.shared(inputs[self.SHARED], training=training)
        own = {t: self.specific[t](inputs[t], training=training) for t in self.tasks}
        out, gates = {}, {}
        for t in self.tasks:  # a task's gate weights: its own experts first, then the shared ones
            out[t], gates[t] = self.gates[t](inputs[t], tf.concat([own[t], shared], axis=1))
        if self.shared_gate is not None:
            everything = tf.concat([own[t] for t in self.tasks] + [shared], axis=1)
            out[self.SHARED], _ = self.shared_gate(inputs[self.SHARED], everything)
        return out, gates


class PLE(keras.layers.Layer):
    """Progressive layered extraction: `levels` CGC levels, the last without a shared gate."""

    def __init__(self, tasks: Sequence[str], levels: int, shared: int, specific: int, units: Sequence[int],
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.levels = [CGC(tasks, shared, specific, units, seed=seed + 1000 * i, last=i == levels - 1,
                           name=f"cgc_{i}") for i in range(levels)]

    def call(self, x, training=False):
        if isinstance(x, dict):
            inputs = {t: x[t] for t in self.tasks}
            inputs[CGC.SHARED] = tf.add_n([x[t] for t in self.tasks]) / float(len(self.tasks))
        else:
            inputs = {t: x for t in self.tasks}
            inputs[CGC.SHARED] = x
        for level in self.levels:
            inputs, gates = level(inputs, training=training)
        return {t: inputs[t] for t in self.tasks}, gates

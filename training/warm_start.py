"""Warm start: a Trainer starts from the last blessed model of its family.

The last blessed model reaches the Trainer as its `base_model` (the family's Resolver with
LatestBlessedModelStrategy, as in TFX's warm-start examples; pipeline/model_stages.py). It
is a SavedModel: its variables keep their names, and its assets hold the Transform
vocabularies it was trained with. A new model of the same family takes from it:

- every id table (a weight whose first dimension is a vocabulary's rows: padding, the
  vocabulary, the OOV buckets, see `training.recipes.common.vocabulary_rows`): the rows of the ids the old
  vocabulary also had, moved to their new rows, and the padding and OOV rows; the rows of
  new ids keep their fresh initialisation (N(0, stddev) for embeddings, zero for biases);
- every other weight whose shape matches, as is (dense layers, towers, gates).

Trainable weights pair up by position in the model's order (their names carry a per-process
model scope, and eagerly built tables share the name `embeddings`); the pairing holds only
when both models have as many, of the same kinds. Non-trainable weights (moving averages)
start fresh.

Vocabularies are rebuilt by Transform on each run's window (the rebuild policy): an id that
left the window loses its row, an id that entered it starts fresh. The optimizer's state is
not carried. A weight the old model lacks, or whose shape changed other than along a
vocabulary (other hyperparameters), keeps its initialisation and is counted in the summary.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from contract import description as desc
from contract import features as F
from contract import protocol

ASSETS = "assets"


def vocabulary_names(spec) -> List[str]:
    """The Transform vocabularies a model's id tables may follow: users, items, categorical features.

    Args:
      spec: the dataset's spec (contract.datasets.DatasetSpec).
    """
    names = [F.USER_VOCAB, F.ITEM_VOCAB]
    names += [f.vocabulary_name for f in spec.description.features
              if f.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL, desc.TEXT)]
    return list(dict.fromkeys(names))


def read_vocabulary(path: str) -> List[str]:
    """The tokens of a Transform vocabulary file, one a line, in id order."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return [line.rstrip(b"\n").decode("utf-8", "replace") for line in f]


def old_weights(base_model: str) -> List[Tuple[str, np.ndarray]]:
    """The trainable variables of an exported model as (name, value), in the model's order (the
    export's own variables, such as the serving catalogue, are not among them).

    Read from the SavedModel's object graph (the export's `protocol.TRAINED_WEIGHTS` list, or,
    in a model exported without it, Keras's `trainable_variables`) and its variables
    checkpoint, without loading its functions (~20 ms instead of ~0.8 s). A SavedModel with
    neither list has no weights to give: [].
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2, trackable_object_graph_pb2

    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(base_model, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    objects = saved.meta_graphs[0].object_graph_def

    def child(node: Optional[int], name: str) -> Optional[int]:
        if node is None:
            return None
        return next((c.node_id for c in objects.nodes[node].children if c.local_name == name), None)

    listed = child(child(0, protocol.TRAINED_WEIGHTS), "ordered")
    if listed is None:
        listed = child(0, "trainable_variables")
    if listed is None:
        return []
    reader = tf.train.load_checkpoint(os.path.join(base_model, "variables", "variables"))
    # The checkpoint's object graph numbers its nodes as the SavedModel's does.
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    out = []
    for entry in objects.nodes[listed].children:
        keys = [a.checkpoint_key for a in graph.nodes[entry.node_id].attributes if a.name == "VARIABLE_VALUE"]
        out.append((objects.nodes[entry.node_id].variable.name, np.asarray(reader.get_tensor(keys[0]))))
    return out


def _name(variable) -> str:
    return variable.name.split(":")[0]


def _leaf(name: str) -> str:
    """A weight's own name (`kernel`, `embeddings`), without the scopes of its layer and model
    (a model's scope is numbered by how many were built in the process)."""
    return name.rsplit("/", 1)[-1]


def row_map(old: Sequence[str], new: Sequence[str], oov_buckets: int = F.OOV_BUCKETS) -> np.ndarray:
    """For each row of a new id table, the old table's row it takes, or -1 (a new id).

    Rows: 0 padding, 1..len(vocabulary) the vocabulary in order, then the OOV buckets.
    """
    where = {token: index for index, token in enumerate(old)}
    out = np.full(len(new) + oov_buckets + 1, -1, dtype=np.int64)
    out[0] = 0
    for index, token in enumerate(new):
        if token in where:
            out[index + 1] = where[token] + 1
    for bucket in range(oov_buckets):
        out[len(new) + 1 + bucket] = len(old) + 1 + bucket
    return out


def _vocabulary_of(name: str, rows: int, sizes: Mapping[str, int]) -> Optional[str]:
    """The vocabulary whose rows a weight's first dimension is (by the weight's name when
    several have that many rows); None: no vocabulary, or no way to tell."""
    matches = [v for v, n in sizes.items() if n + F.OOV_BUCKETS + 1 == rows]
    if len(matches) > 1:
        named = [v for v in matches if v.replace("_vocab", "").split("_")[0] in name]
        matches = named if len(named) == 1 else []
    return matches[0] if len(matches) == 1 else None


def warm_start(model, base_model: str, vocabularies: Mapping[str, Sequence[str]]) -> Dict[str, Any]:
    """Sets `model`'s weights from the last blessed model (see module docstring).

    Args:
      model: the new model, built (its weights exist) and not yet trained.
      base_model: the last blessed model's SavedModel directory.
      vocabularies: this run's Transform vocabularies, name -> tokens.

    Returns:
      A summary: base_model, weights copied, id tables carried with their known / new ids,
      weights left initialised (names).
    """
    previous = old_weights(base_model)
    sizes = {name: len(tokens) for name, tokens in vocabularies.items()}
    old_vocabularies: Dict[str, List[str]] = {}
    summary: Dict[str, Any] = {"base_model": base_model, "copied": 0, "id_tables": {}, "initialised": []}
    weights = list(model.trainable_weights)
    # Weights pair up by position (one family's code builds them in one order); a different
    # count or any pair of different kinds means another architecture: nothing is carried.
    same = len(previous) == len(weights) and all(
        _leaf(_name(w)) == _leaf(name) and len(w.shape) == value.ndim for w, (name, value) in zip(weights, previous))
    if not same:
        summary["initialised"] = [_name(w) for w in weights]
        summary["reason"] = ("the base model lists no trained weights" if not previous else
                             f"the base model's {len(previous)} weights are not this model's {len(weights)} (another "
                             "family or other hyperparameters)") + ": trained from scratch"
        return summary
    for index, (weight, (_, old)) in enumerate(zip(weights, previous)):
        name = f"{index}:{_name(weight)}"
        shape = tuple(weight.shape)
        vocabulary = _vocabulary_of(_name(weight), shape[0], sizes) if shape else None
        if vocabulary is not None and old.shape[1:] == shape[1:]:
            if vocabulary not in old_vocabularies:
                path = os.path.join(base_model, ASSETS, vocabulary)
                old_vocabularies[vocabulary] = read_vocabulary(path) if os.path.exists(path) else []
            source = old_vocabularies[vocabulary]
            if len(source) + F.OOV_BUCKETS + 1 != old.shape[0]:
                summary["initialised"].append(name)  # the old table is not that vocabulary's
                continue
            rows = row_map(source, vocabularies[vocabulary])
            value = weight.numpy()
            known = rows >= 0
            value[known] = old[rows[known]]
            weight.assign(value)
            summary["id_tables"][name] = {"vocabulary": vocabulary, "known_ids": int(known.sum()) - 1 - F.OOV_BUCKETS,
                                          "new_ids": int((~known).sum())}
        elif old.shape == shape:
            weight.assign(old)
            summary["copied"] += 1
        else:
            summary["initialised"].append(name)
    return summary

"""The user view in memory: histories and targets as item rows, retrieval batches and
sequence batches.

The user view's examples are raw (ExampleGen's ids and behaviors); they are mapped to
rows with the Transform's item vocabulary (training split only), exactly as the
Transform maps history ids: row = vocabulary position + 1, unknown -> V + 1, 0 = padding;
behaviors 1..n in the dataset's order, unknown -> n + 1. A test checks this mapping
against the Transform graph.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from contract import features as F
from models.base import EXCLUDE_IDX, TARGET_IDX
from models.families.sequential import CLOZE, NEXT_ITEM, SEQUENCE_TARGET_IDX

USER_VIEW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.SPLIT: tf.io.FixedLenFeature([], tf.string),
    F.USER_ACTIVITY_LEVEL: tf.io.FixedLenFeature([], tf.string),
    F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
    F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string),
    F.TARGET_ITEM_IDS: tf.io.VarLenFeature(tf.string),
    F.TARGET_BEHAVIORS: tf.io.VarLenFeature(tf.string),
}


class ItemRows:
    """Item id <-> row mapping of the training vocabulary (0 padding, V + 1 unknown)."""

    def __init__(self, vocabulary: Sequence[bytes], behaviors: Sequence[str]):
        self.ids = [v if isinstance(v, bytes) else str(v).encode() for v in vocabulary]
        self._row = {item: i + 1 for i, item in enumerate(self.ids)}
        self.unknown = len(self.ids) + 1
        self._behavior = {b.encode(): i + 1 for i, b in enumerate(behaviors)}
        self.unknown_behavior = len(behaviors) + 1

    def rows(self, ids: Sequence[bytes]) -> np.ndarray:
        return np.fromiter((self._row.get(i, self.unknown) for i in ids), dtype=np.int64, count=len(ids))

    def behavior_rows(self, behaviors: Sequence[bytes]) -> np.ndarray:
        return np.fromiter((self._behavior.get(b, self.unknown_behavior) for b in behaviors), dtype=np.int64,
                           count=len(behaviors))


@dataclasses.dataclass
class UserView:
    """One split of the user view: per user, history and target rows (time order).

    Attributes:
      users: user ids.
      activity: user activity levels (light / medium / heavy).
      items / behaviors: history item and behavior rows, oldest first, untruncated.
      targets: target item rows (unknown items map to the unknown row, never ranked).
      target_behaviors: behavior rows aligned with `targets` (empty when not loaded).
    """

    users: List[bytes]
    activity: List[bytes]
    items: List[np.ndarray]
    behaviors: List[np.ndarray]
    targets: List[np.ndarray]
    target_behaviors: List[np.ndarray] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.users)


def load_user_view(files: Sequence[str], rows: ItemRows) -> UserView:
    """Reads user-view examples (GZIP TFRecords) and maps them to rows."""
    if not files:
        raise FileNotFoundError("no user-view files given")
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(512)
    ds = ds.map(lambda records: tf.io.parse_example(records, USER_VIEW_SPEC))
    view = UserView([], [], [], [], [], [])
    for batch in ds:
        def lists(name):
            sparse = batch[name]
            return tf.RaggedTensor.from_sparse(sparse).to_list()
        histories, behaviors, targets = lists(F.HISTORY_ITEM_IDS), lists(F.HISTORY_BEHAVIORS), lists(F.TARGET_ITEM_IDS)
        target_behaviors = lists(F.TARGET_BEHAVIORS)
        view.users.extend(batch[F.USER_ID].numpy().tolist())
        view.activity.extend(batch[F.USER_ACTIVITY_LEVEL].numpy().tolist())
        for h, b, t, tb in zip(histories, behaviors, targets, target_behaviors):
            view.items.append(rows.rows(h))
            view.behaviors.append(rows.behavior_rows(b))
            view.targets.append(rows.rows(t))
            view.target_behaviors.append(rows.behavior_rows(tb))
    return view


def pad(rows: Sequence[np.ndarray], width: Optional[int] = None) -> np.ndarray:
    """[len(rows), width] int64, left-aligned, 0-padded (width: the longest row, at least 1)."""
    width = max([1] + [len(r) for r in rows]) if width is None else width
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[-width:] if len(r) > width else r
    return out


def recent(view: UserView, max_history: int):
    """The most recent `max_history` history rows of every user, padded: (items, behaviors)."""
    items = pad([r[-max_history:] for r in view.items], max_history)
    behaviors = pad([r[-max_history:] for r in view.behaviors], max_history)
    return items, behaviors


def item_counts(view: UserView, num_rows: int) -> np.ndarray:
    """Training interactions per item row (from the train split's histories)."""
    counts = np.zeros(num_rows, dtype=np.float32)
    for items in view.items:
        np.add.at(counts, items[items < num_rows], 1.0)
    counts[0] = 0.0
    return counts


def retrieval_pairs(view: UserView, target_behaviors: Sequence[int] = ()) -> np.ndarray:
    """(user index, history position) of every training target: [n, 2]."""
    pairs = []
    allowed = set(target_behaviors)
    for u, behaviors in enumerate(view.behaviors):
        positions = np.arange(len(behaviors))
        if allowed:
            positions = positions[np.isin(behaviors, list(allowed))]
        pairs.append(np.stack([np.full(len(positions), u), positions], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def user_balanced_probabilities(pairs: np.ndarray, power: float) -> Optional[np.ndarray]:
    """Drawing probabilities of training pairs ((user, position) rows), proportional to
    (the user's number of pairs) ** -power: None (no reweighting) at power 0; at 1 every
    user is drawn equally often, as a per-user average metric (protocol K) weighs them."""
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"user balance power must be in [0, 1], got {power}")
    if power == 0.0 or not len(pairs):
        return None
    _, inverse, counts = np.unique(pairs[:, 0], return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -power
    return weights / weights.sum()


def retrieval_dataset(view: UserView, pairs: np.ndarray, batch_size: int, max_history: int, seed: int,
                      exclude_own: bool = True, user_balance: float = 0.0) -> tf.data.Dataset:
    """Leave-one-out retrieval batches, reshuffled every epoch (seeded).

    For a target at position j of a user's history, the query is the rest of the
    history (the most recent `max_history` of it) and, with `exclude_own`, every item
    of the user is kept out of the softmax's negatives except the target. An epoch is
    len(pairs) targets: each pair once (user_balance 0), or drawn with replacement with
    probability proportional to (the user's pair count) ** -user_balance
    (`user_balanced_probabilities`), so that heavy users do not dominate the loss.
    """
    epoch = [0]
    probabilities = user_balanced_probabilities(pairs, user_balance)

    def batches() -> Iterator[Dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed + epoch[0])
        epoch[0] += 1
        order = (rng.permutation(len(pairs)) if probabilities is None
                 else rng.choice(len(pairs), size=len(pairs), p=probabilities))
        for start in range(0, len(order), batch_size):
            chosen = pairs[order[start: start + batch_size]]
            items, behaviors, targets, own = [], [], [], []
            for u, j in chosen:
                h, b = view.items[u], view.behaviors[u]
                # The most recent max_history items other than position j: only the
                # window of the last max_history + 1 items can hold j.
                start = max(0, len(h) - max_history - 1)
                if j < start:
                    items.append(h[-max_history:])
                    behaviors.append(b[-max_history:])
                else:
                    window = np.delete(np.arange(start, len(h)), j - start)[-max_history:]
                    items.append(h[window])
                    behaviors.append(b[window])
                targets.append(h[j])
                own.append(h)
            out = {
                F.HISTORY_ITEM_IDX: pad(items),
                F.HISTORY_BEHAVIOR_IDX: pad(behaviors),
                TARGET_IDX: np.asarray(targets, dtype=np.int64),
            }
            if exclude_own:
                out[EXCLUDE_IDX] = pad(own)
            yield out

    signature = {
        F.HISTORY_ITEM_IDX: tf.TensorSpec([None, None], tf.int64),
        F.HISTORY_BEHAVIOR_IDX: tf.TensorSpec([None, None], tf.int64),
        TARGET_IDX: tf.TensorSpec([None], tf.int64),
    }
    if exclude_own:
        signature[EXCLUDE_IDX] = tf.TensorSpec([None, None], tf.int64)
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


# --------------------------------------------------------------------------
# Sequence training (the sequential families): windows of each user's training sequence.
# --------------------------------------------------------------------------
def sequence_windows(view: UserView, max_len: int, objective: str, stride: int = 0) -> np.ndarray:
    """(user index, start, end, first) of every training window: [n, 4].

    `next`: windows of up to max_len + 1 items whose inputs are items [start, end - 1)
    and whose targets are items [first, end); the last window ends at the sequence's
    end and earlier ones step back by `stride` (0: max_len), so every item after the
    first is a target exactly once. With stride max_len the windows do not overlap
    (first = start + 1) and a target is read with 1 to max_len items before it; a smaller
    stride overlaps them, so that every target but a sequence's first few is read with
    at least max_len - stride + 1 items before it (as a served query is), at max_len /
    stride times the positions encoded. `cloze`: windows of up to max_len items, stepping
    back from the end by max_len (first = start; stride must be 0 or max_len). Sequences
    too short to train on (one item for `next`) give none.
    """
    stride = int(stride) or max_len
    if not 1 <= stride <= max_len:
        raise ValueError(f"window stride must be in [1, max_len={max_len}] (0: max_len), got {stride}")
    if objective != NEXT_ITEM and stride != max_len:
        raise ValueError(f"overlapping windows (stride {stride} < max_len {max_len}) are for the "
                         f"{NEXT_ITEM!r} objective, not {objective!r}")
    span, least, lag = (max_len + 1, 2, 1) if objective == NEXT_ITEM else (max_len, 1, 0)
    out = []
    for u, items in enumerate(view.items):
        end = len(items)
        while end >= least:
            start = max(0, end - span)
            first = max(start + lag, end - stride)
            out.append((u, start, end, first))
            if first == lag:
                break
            end = first
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def cloze_mask(length: int, rng: np.random.Generator, mask_prob: float, last_mask_prob: float) -> np.ndarray:
    """Positions of a cloze window to mask (bool [length], at least one): only the last
    with probability last_mask_prob, else each with probability mask_prob."""
    if rng.random() < last_mask_prob:
        masked = np.zeros(length, dtype=bool)
    else:
        masked = rng.random(length) < mask_prob
    if not masked.any():
        masked[-1] = True
    return masked


def sequence_dataset(view: UserView, windows: np.ndarray, batch_size: int, seed: int, objective: str,
                     mask_row: int = 0, mask_prob: float = 0.2, last_mask_prob: float = 0.1) -> tf.data.Dataset:
    """Batches of training windows (`sequence_windows`), reshuffled every epoch (seeded).

    Keys: `history_item_idx` / `history_behavior_idx` [B, L] the input windows (0 pads)
    and `sequence_target_idx` [B, L], the item row to predict at each position (0: none).
    `next`: inputs = window[:-1], targets = window[1:] from the window's `first` item on
    (0 before it: the context of an overlapping window). `cloze`: inputs = the window with
    masked positions set to `mask_row` (behavior 0: a masked item's behavior is unknown
    too), targets = the masked items.
    """
    if objective not in (NEXT_ITEM, CLOZE):
        raise ValueError(f"objective must be {NEXT_ITEM!r} or {CLOZE!r}, got {objective!r}")
    if objective == CLOZE and mask_row < 1:
        raise ValueError(f"the cloze objective needs the mask's item row (> 0), got {mask_row}")
    epoch = [0]

    def batches() -> Iterator[Dict[str, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch[0]])
        epoch[0] += 1
        order = rng.permutation(len(windows))
        for at in range(0, len(order), batch_size):
            inputs, behaviors, targets = [], [], []
            for u, start, end, first in windows[order[at: at + batch_size]]:
                items, kinds = view.items[u][start:end], view.behaviors[u][start:end]
                if objective == NEXT_ITEM:
                    inputs.append(items[:-1])
                    behaviors.append(kinds[:-1])
                    # positions before `first` are context only (an overlapping window)
                    targets.append(np.where(np.arange(start + 1, end) >= first, items[1:], 0))
                else:
                    masked = cloze_mask(len(items), rng, mask_prob, last_mask_prob)
                    inputs.append(np.where(masked, mask_row, items))
                    behaviors.append(np.where(masked, 0, kinds))
                    targets.append(np.where(masked, items, 0))
            yield {
                F.HISTORY_ITEM_IDX: pad(inputs),
                F.HISTORY_BEHAVIOR_IDX: pad(behaviors),
                SEQUENCE_TARGET_IDX: pad(targets),
            }

    signature = {name: tf.TensorSpec([None, None], tf.int64)
                 for name in (F.HISTORY_ITEM_IDX, F.HISTORY_BEHAVIOR_IDX, SEQUENCE_TARGET_IDX)}
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)

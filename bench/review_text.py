"""Reviews as tasks (issue 31): the review families' ratings and explanations against their peers, one split, one run.

Data: the Amazon Musical Instruments 5-core reviews through the pipeline's own data stages
(bench/text_stages.py: ExampleGen's run_ingest, then the Transform preprocessing_fn analyzed on
the training split), read with `--description` (default: bench/descriptions/amazon_reviews_text.yaml,
the dataset's description with its text sized for a 2-core machine) from `--data_dir`. Hash
split (80/10/10 by md5 of user:item); the eval split stops training, the test split is
reported. A row's documents are the user's and the item's most recent earlier TRAINING
reviews, so no test text is ever an input.

Models, trained for each of `--seeds` through the Trainer's code (training.trainer.train) and
scored through their exported signatures on the raw test examples (`serving_default` for the
rating, `explain` for the text):
- the review families with their text task: semax (documents and its related task: the
  `review` column), review_mt and nor_reviews (documents: `review`; generated: `summary`, the
  review's title line, as NRT-style explanation datasets use one short sentence);
- ablations: each without its text task (`text_task=false`, rating only), and review_mt with
  its adversarial stage (`adversarial=true`; the default is teacher forcing alone);
- rating peers on the same rows: `mf` (the registry's defaults), surprise BaselineOnly and
  surprise SVD (their settings chosen on the eval split by peers.tune_baseline_only and
  peers.tune_svd, widened past a chosen edge; SVD's random_state = seed),
  and the global mean;
- text peers: `retrieval` (for a test row (u, i), the training summary of item i whose review
  is most similar, tf-idf cosine over review tokens, to the user's own training reviews;
  deterministic) and `att2seq` (a generator trained alone on user and item ids: their
  embeddings are the decoder's start context and its attention memory; early stopping on
  the eval split's token perplexity, decoded as the review families decode; its learning
  rate, patience and the dropout on its id embeddings chosen by eval perplexity, `tune_att2seq`).

A peer re-run after its search changed replaces its rows in a saved report:
`--variants none` runs the peers alone, `--no_peers` the variants alone; `--from_run A,B --replace
att2seq=PEERS_RUN_PKL` reports with a model's rows taken (or added) from another saved run.

Metrics: rating RMSE and MAE (no prediction clipped), AUC of the prediction against the
description's liked label (rating >= 4); for text, BLEU-1 and BLEU-4 (corpus), ROUGE-1/2/L F1,
distinct-1/2 (evaluation/text_metrics.py: the Transform's tokens, method-1 smoothing) in percent,
and perplexity (teacher forcing, test references' tokens and the end token), over the test
rows that have a summary. Each model's value is the mean and standard deviation over seeds;
"A beats B" lines give the paired bootstrap interval (95%, `--resamples` draws of the test rows,
the same draws for every model, each draw's value averaged over seeds) of A - B; A is better
only when the interval excludes 0 and the difference is larger than the larger of the two seed
stds (the project's rule, bench.common.PairedVerdict), "no difference" otherwise.

Writes `<out>/<name>.json` (settings, per-seed values, comparisons, goals, examples, command,
commit, machine, date) and `<out>/<name>.md`.

    python -m bench.review_text --data_dir ../shared/data/amazon-musical-instruments-5core \\
        [--seeds 42,43,44,45,46] [--max_epochs N] [--variants semax,review_mt,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench import peers, text_stages  # noqa: E402
from bench.common import (ADDITIVE, RESULTS_DIR, IntervalVerdict, Knob, Tuned, machine, md_table,  # noqa: E402
                          mean_std, widening_search)
from bench.machine import command_line as machine_command_line, commit as machine_commit  # noqa: E402
from common.io_utils import atomic_write  # noqa: E402
from contract import description as desc  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from evaluation import text_metrics as tm  # noqa: E402

NAME = "review_text"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESCRIPTION = os.path.join(REPO, "bench", "descriptions", "amazon_reviews_text.yaml")
WORK_DIR = os.path.join(REPO, "outputs", "bench")
TARGET = "summary"  # the generated column of review_mt, nor_reviews and att2seq
RESAMPLES = 1000
LEVEL = 0.95
EXAMPLES = 5
RETRIEVAL, ATT2SEQ, MF = "retrieval", "att2seq", "mf"
BASELINE, SVD, GLOBAL = peers.BASELINE_ONLY, peers.SVD, peers.GLOBAL_MEAN
TEXT_METRICS = ("bleu_1", "bleu_4", "rouge_1", "rouge_2", "rouge_l", "distinct_1", "distinct_2")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A trained model of the benchmark: a family with overrides."""

    name: str
    family: str
    overrides: Tuple[Tuple[str, str], ...] = ()

    @property
    def hparams(self) -> Dict[str, str]:
        return dict(self.overrides)


GENERATED = (("target", TARGET),)
VARIANTS = (
    Variant(MF, "mf"),
    Variant("semax", "semax"),
    Variant("semax rating only", "semax", (("text_task", "false"),)),
    Variant("review_mt", "review_mt", GENERATED),
    # The adversarial stage acts in the generator stage; its start and weight are chosen on eval
    # (`--eval_only --sweep`, bench/results/review_text_adversarial_eval.md).
    Variant("review_mt adversarial", "review_mt", GENERATED + (("adversarial", "true"),)),
    Variant("review_mt rating only", "review_mt", GENERATED + (("text_task", "false"),)),
    Variant("nor_reviews", "nor_reviews", GENERATED),
    # Stopped on the whole objective: the generator trains past the rating's best epoch.
    Variant("review_mt joint stop", "review_mt", GENERATED + (("stop_on", "joint"), ("patience", "3"))),
    Variant("nor_reviews joint stop", "nor_reviews", GENERATED + (("stop_on", "joint"), ("patience", "3"))),
    Variant("nor_reviews rating only", "nor_reviews", GENERATED + (("text_task", "false"),)),
)
TEXT_FAMILIES = ("semax", "review_mt", "nor_reviews")
GENERATORS = ("review_mt", "nor_reviews")


NO_VARIANTS = "none"  # --variants none: the peers alone (e.g. a peer re-run to replace its rows)


def chosen_variants(names: str) -> List[Variant]:
    """The variants named (comma-separated; empty: all, `none`: no family), in VARIANTS' order;
    an unknown name is an error that lists the known ones."""
    if not names:
        return list(VARIANTS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == [NO_VARIANTS]:
        return []
    unknown = [n for n in wanted if n not in {v.name for v in VARIANTS}]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {[v.name for v in VARIANTS]} or {NO_VARIANTS!r}")
    return [v for v in VARIANTS if v.name in wanted]


def swept_variants(chosen: List[Variant], sweeps: Sequence[str]) -> List[Variant]:
    """The chosen variants with each `--sweep VARIANT:KNOB=V1,V2,...` expanded: that variant
    once per value (named `VARIANT KNOB=V`), the others as they are; a sweep of a variant not
    chosen, or of a knob its family does not take, is an error."""
    out = list(chosen)
    for sweep in sweeps:
        name, _, rest = sweep.rpartition(":")
        knob, _, values = rest.partition("=")
        variant = next((v for v in out if v.name == name), None)
        if variant is None or not knob or not values:
            raise ValueError(f"--sweep {sweep!r}: expected VARIANT:KNOB=V1,V2,... of a chosen variant "
                             f"({[v.name for v in out]})")
        if not _known(variant.family, knob):
            raise ValueError(f"--sweep {sweep!r}: {variant.family} takes no hyperparameter {knob!r}")
        expanded = [Variant(f"{name} {knob}={value}", variant.family,
                            tuple((k, v) for k, v in variant.overrides if k != knob) + ((knob, value),))
                    for value in (x.strip() for x in values.split(",")) if value]
        at = out.index(variant)
        out[at:at + 1] = expanded
    return out


# --------------------------------------------------------------------------
# Paired bootstrap over test rows (per row of a text metric; bench.common's resamples users)
# --------------------------------------------------------------------------
def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] row indices drawn with replacement; every model uses the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def rmse_draws(predictions: np.ndarray, ratings: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((predictions - ratings)[draws] ** 2, axis=1))


def mean_draws(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float64)[draws].mean(axis=1)


def bleu_draws(statistics: Tuple[np.ndarray, ...], draws: np.ndarray) -> np.ndarray:
    """Corpus BLEU of each draw from per-pair statistics (text_metrics.bleu_statistics)."""
    matches, totals, hyp, ref = statistics
    return tm.bleu_from_statistics(matches[draws].sum(1), totals[draws].sum(1), hyp[draws].sum(1),
                                   ref[draws].sum(1))


def interval(a_draws: Sequence[np.ndarray], b_draws: Sequence[np.ndarray], level: float = LEVEL
             ) -> Tuple[float, float]:
    """Percentile interval of (A - B) over draws, each side's draws averaged over its seeds."""
    diff = np.mean(a_draws, axis=0) - np.mean(b_draws, axis=0)
    return (float(np.percentile(diff, 100 * (1 - level) / 2)), float(np.percentile(diff, 100 * (1 + level) / 2)))


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def liked_threshold(dd: desc.Description) -> float:
    """The smallest rating of the description's first `rating >= x` label."""
    for label in dd.labels:
        c = label.condition
        if label.source == desc.EXPR and c is not None and c.field == desc.RATING and c.op == ">=":
            return float(c.value)
    raise ValueError(f"{dd.name}: no `rating >= x` label to measure AUC against")


def transformed_rows(tft_output, examples: Sequence[bytes], batch: int = 512) -> Dict[str, np.ndarray]:
    """The Transform's features of serialized raw examples, in their order (dense numpy)."""
    import tensorflow as tf

    from export.signatures import densify

    spec = tft_output.raw_feature_spec()
    layer = tft_output.transform_features_layer()
    parts: Dict[str, List[np.ndarray]] = {}
    for start in range(0, len(examples), batch):
        raw = tf.io.parse_example(tf.constant(list(examples[start:start + batch])), spec)
        out = densify(layer(raw))
        for name, value in out.items():
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value)
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(v) if v[0].ndim < 2 else _pad_concat(v) for name, v in parts.items()}


def _pad_concat(values: List[np.ndarray]) -> np.ndarray:
    width = max(v.shape[1] for v in values)
    return np.concatenate([np.pad(v, [(0, 0), (0, width - v.shape[1])] + [(0, 0)] * (v.ndim - 2)) for v in values])


def references(tokens: np.ndarray, vocabulary: Sequence[bytes], max_length: int) -> List[List[str]]:
    return [tm.tokens_of(row[:max_length], vocabulary, reference=True) for row in tokens]


# --------------------------------------------------------------------------
# Text peers
# --------------------------------------------------------------------------
def tfidf_rows(tokens: np.ndarray, vocabulary_rows: int, idf: Optional[np.ndarray] = None):
    """Sparse l2-normalized tf-idf rows of token-id rows (0 = padding), and the idf used."""
    import scipy.sparse as sp

    rows, cols = np.nonzero(tokens > 0)
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, tokens[rows, cols])), shape=(len(tokens), vocabulary_rows))
    if idf is None:
        df = np.asarray((counts > 0).sum(0)).ravel()
        idf = np.log((1.0 + len(tokens)) / (1.0 + df)) + 1.0
    weighted = counts.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted, idf


def retrieval_explanations(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray], documents: str, target: str,
                           vocabulary_rows: int) -> np.ndarray:
    """For each test row (u, i): the target text of the training row of item i whose documents-
    column text is closest (tf-idf cosine) to the sum of user u's training texts; an item
    without a training row: the closest training row of any item. Returns target ids [N, T]."""
    import scipy.sparse as sp

    vectors, idf = tfidf_rows(train[documents], vocabulary_rows)
    users = train[F.USER_IDX]
    order = np.argsort(users, kind="stable")
    profiles: Dict[int, Any] = {}
    out = np.zeros((len(test[F.USER_IDX]),) + train[target].shape[1:], train[target].dtype)
    by_item: Dict[int, np.ndarray] = {}
    for item in np.unique(train[F.ITEM_IDX]):
        by_item[int(item)] = np.flatnonzero(train[F.ITEM_IDX] == item)
    starts = np.searchsorted(users[order], np.unique(users))
    for user, start, end in zip(np.unique(users), starts, list(starts[1:]) + [len(order)]):
        profiles[int(user)] = sp.csr_matrix(vectors[order[start:end]].sum(0))
    empty = sp.csr_matrix((1, vocabulary_rows))
    for n, (user, item) in enumerate(zip(test[F.USER_IDX], test[F.ITEM_IDX])):
        candidates = by_item.get(int(item), np.arange(len(users)))
        scores = np.asarray((vectors[candidates] @ profiles.get(int(user), empty).T).todense()).ravel()
        out[n] = train[target][candidates[int(np.argmax(scores))]]
    return out


def att2seq_model(num_users: int, num_items: int, rows: int, target: str, dim: int, units: int, max_length: int,
                  seed: int, decode: Optional[Dict[str, Any]] = None, dropout: float = 0.0):
    """Att2Seq-like peer (Dong et al., 2017): user and item id embeddings are the decoder's start
    context and its attention memory; no review document, no rating task. `decode`: the
    generator's decoding settings (the review families', so both decode alike); `dropout`: on the
    id embeddings while training (the peer's regularization, chosen on eval by `tune_att2seq`)."""
    import tensorflow as tf
    import tf_keras as keras

    from models.blocks import embedding
    from models.blocks.text import SequenceGenerator, decoder_targets
    from models.tasks import GenerationTask

    class Att2Seq(keras.Model):
        def __init__(self):
            super().__init__()
            self.users = embedding(num_users, dim, seed, "users")
            self.items = embedding(num_items, dim, seed + 1, "items")
            self.generator = SequenceGenerator(rows, units, seed=seed + 2, name="generator")
            self.task = GenerationTask(target)
            self.drop = keras.layers.Dropout(dropout, seed=seed + 3)

        def decoder_inputs(self, features, training=False):
            u, v = (self.drop(e(features[k]), training=training)
                    for e, k in ((self.users, F.USER_IDX), (self.items, F.ITEM_IDX)))
            return tf.concat([u, v], -1), tf.stack([u, v], 1), tf.ones([tf.shape(u)[0], 2], tf.bool)

        def targets(self, features):
            return decoder_targets(features[target], max_length, self.generator.end)

        def loss_of(self, features, training):
            targets = self.targets(features)
            logits = self.generator(*self.decoder_inputs(features, training), targets, training=training)
            present = tf.cast(tf.reduce_any(features[target] > 0, -1), tf.float32)
            return self.task(targets, logits, present)

        def train_step(self, features):
            with tf.GradientTape() as tape:
                loss = self.loss_of(features, True)
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables),
                                               self.trainable_variables))
            return {"loss": loss, **{m.name: m.result() for m in self.metrics}}

        def test_step(self, features):
            return {"loss": self.loss_of(features, False), **{m.name: m.result() for m in self.metrics}}

        def teacher_forced(self, features):
            targets = self.targets(features)
            return targets, self.generator(*self.decoder_inputs(features), targets)

        def explain(self, features):
            return self.generator.generate(*self.decoder_inputs(features), max_length, **(decode or {}))

    return Att2Seq()


def att2seq_settings(base) -> Dict[str, Any]:
    """The Att2Seq peer's settings from review_mt's record (with the run's overrides): its sizes,
    training knobs and decoding, and as many epochs as a family's generator may train (the
    joint epochs, then its own stage)."""
    from models.reviews import decoding

    training = base.training
    return {"dim": base.dim, "units": base.units, "max_length": base.max_length,
            "learning_rate": training.learning_rate, "batch_size": training.batch_size,
            "max_epochs": training.max_epochs + base.generator_epochs, "patience": training.patience,
            "decode": decoding(base)}


# The Att2Seq peer's own search (on eval, at one seed): it has no rating task to share its
# training with, so its learning rate and the dropout on its id embeddings are chosen for it,
# as BaselineOnly's and SVD's settings are (issue 30: peers get the same care).
# Its patience too: from ids alone the decoder first sits for several epochs on the same few
# words (eval perplexity about 165) before it learns more, and a patience of 2 stops it there.
# The dropout is searched as the share of each id vector kept (1 - dropout), halved or doubled.
# The first grid is where a wider search on eval (learning rates 0.001-0.03, patience 2-10,
# dropout 0-0.75) ended: learning rate 0.01 and patience 6 interior, the dropout at 0.75.
ID_KEEP = "id_keep"
ATT2SEQ_KNOBS = (
    Knob("learning_rate", (0.003, 0.01, 0.03), step=3.0),
    Knob("patience", (6,), widen=ADDITIVE, step=4, low=1, high=18, integer=True,
         why="patience above a third of the epoch cap (55) stops nothing"),
    Knob(ID_KEEP, (0.5, 0.25), step=2.0, low=1 / 32, high=1.0,
         why="a share of the id vector: 1 keeps all of it; below 1/32 (one dimension of 32 on average) the "
             "ids reach the decoder as noise"),
)
ATT2SEQ_EVALUATIONS = 24  # a cost bound: one to three minutes per fit on 2 cores
ATT2SEQ_SEARCH_SEED = 0  # like the rating peers' searches: not one of the reported seeds


def att2seq_with(hparams: Dict[str, Any], setting: Dict[str, Any]) -> Dict[str, Any]:
    """`hparams` with a searched setting applied (`id_keep` becomes the id dropout)."""
    out = {**hparams, **{k: v for k, v in setting.items() if k != ID_KEEP}}
    if ID_KEEP in setting:
        out["dropout"] = 1.0 - float(setting[ID_KEEP])
    return out


def _perplexity_key(history: Dict[str, List[float]]) -> str:
    return next(k for k in history if k.startswith("val_") and k.endswith("perplexity"))


def kept_epoch(history: Dict[str, List[float]]) -> int:
    """The epoch early stopping keeps (0-based): the lowest eval token perplexity."""
    return int(np.argmin(history[_perplexity_key(history)]))


def eval_perplexity(history: Dict[str, List[float]]) -> float:
    """The eval split's token perplexity at the epoch early stopping keeps."""
    return float(history[_perplexity_key(history)][kept_epoch(history)])


def tune_att2seq(train, evaluation, context, target: str, hparams: Dict[str, Any],
                 knobs: Sequence[Knob] = ATT2SEQ_KNOBS, max_evaluations: Optional[int] = None,
                 seed: int = ATT2SEQ_SEARCH_SEED) -> Tuned:
    """The Att2Seq peer's knobs chosen by eval perplexity (`widening_search` over `knobs` on top
    of `hparams`, every fit at `seed` and stopped on the eval perplexity). Perplexity, not a
    decoded metric: the review families' generators are stopped on it too."""
    import tf_keras as keras

    def objective(setting: Dict[str, Any]) -> float:
        _, history = fit_att2seq(train, evaluation, context, target, att2seq_with(hparams, setting), seed, verbose=0)
        keras.backend.clear_session()
        return eval_perplexity(history)

    return widening_search(objective, knobs, higher_is_better=False,
                           max_evaluations=ATT2SEQ_EVALUATIONS if max_evaluations is None else max_evaluations,
                           log=lambda line: print(f"{ATT2SEQ} {line}", file=sys.stderr, flush=True))


def fit_att2seq(train, evaluation, context, target: str, hparams: Dict[str, Any], seed: int, verbose: int = 2):
    """The Att2Seq peer trained on the training rows, stopped on the eval rows' token perplexity
    (as the review families' generator stage is)."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    columns = (F.USER_IDX, F.ITEM_IDX, target)
    model = att2seq_model(context["num_users"], context["num_items"], context["rows"], target, hparams["dim"],
                          hparams["units"], hparams["max_length"], seed, hparams.get("decode"),
                          hparams.get("dropout", 0.0))
    model.compile(optimizer=keras.optimizers.Adam(hparams["learning_rate"]))
    data = tf.data.Dataset.from_tensor_slices({k: train[k] for k in columns}).shuffle(len(train[target]), seed=seed)
    stop = keras.callbacks.EarlyStopping(monitor=f"val_{model.task.perplexity.name}", mode="min",
                                         patience=int(hparams["patience"]), restore_best_weights=True)
    history = model.fit(data.batch(hparams["batch_size"]), epochs=hparams["max_epochs"], verbose=verbose,
                        validation_data=tf.data.Dataset.from_tensor_slices(
                            {k: evaluation[k] for k in columns}).batch(1024), callbacks=[stop])
    return model, {k: [float(x) for x in v] for k, v in history.history.items()}


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------
def batched(fn, features: Dict[str, np.ndarray], names: Sequence[str], batch: int = 512) -> List[Any]:
    """fn over row batches of the named features; the per-batch results in order."""
    import tensorflow as tf

    n = len(features[names[0]])
    return [fn({k: tf.constant(features[k][s:s + batch]) for k in names}) for s in range(0, n, batch)]


def perplexity_of(model, features: Dict[str, np.ndarray], names: Sequence[str], rows: np.ndarray) -> float:
    """Teacher-forced perplexity of the rows' own target texts (rows: those with a reference)."""
    from models.tasks import token_nll

    nll, mask = [], []
    for targets, logits in batched(model.teacher_forced, features, names):
        a, b = token_nll(targets, logits)
        nll.append(a.numpy())
        mask.append(b.numpy())
    return tm.perplexity(np.concatenate(nll)[rows], np.concatenate(mask)[rows])


def served(loaded, signature: str, examples: Sequence[bytes], batch: int = 512) -> Dict[str, np.ndarray]:
    """A loaded SavedModel's signature over serialized examples, in batches."""
    import tensorflow as tf

    fn = loaded.signatures[signature]
    parts: Dict[str, List[np.ndarray]] = {}
    for s in range(0, len(examples), batch):
        for k, v in fn(examples=tf.constant(list(examples[s:s + batch]))).items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def eval_at_best(summary: Dict[str, Any]) -> Dict[str, float]:
    """The eval split's rating RMSE and token perplexity at the kept epoch (what alternatives are
    compared on; the test split is only reported); a generator stage's perplexity at its own
    kept epoch (training/recipes/generate.py)."""
    best = summary.get("best_epoch")
    if best is None:
        return {}
    out = {k[len("val_"):]: summary["history"][k][best - 1] for k in sorted(summary["history"])
           if k.startswith("val_") and (k.endswith("rating_rmse") or k.endswith("perplexity"))}
    stage = summary.get("generator_stage")
    if stage and stage.get("best_value") is not None:
        out[stage["monitor"][len("val_"):]] = stage["best_value"]
    return out


def train_variant(variant: Variant, stages, seed: int, extra: Dict[str, str], export_dir: str):
    """(model, training summary) of one variant trained by the Trainer's code and exported."""
    import tensorflow_transform as tft

    from export.signatures import export_model
    from training.trainer import TrainConfig, train

    config = TrainConfig(family=variant.family, description=stages.spec.to_dict(),
                         hparams={**variant.hparams, **extra}, seed=seed)
    model, summary, valid = train(config, stages.files("train"), stages.files("eval"), stages.transform_graph)
    export_model(model, tft.TFTransformOutput(stages.transform_graph), valid, export_dir, family=variant.family)
    return model, summary


# Decodings `--eval_only` compares for a generating variant (SequenceGenerator.generate's
# keyword arguments): greedy, greedy with two tokens at least, and beams ranked by the whole
# text's log-probability or by its mean per token.
DECODINGS = {
    "greedy": {},
    "greedy min 2": {"min_length": 2},
    "beam 4": {"beam_width": 4},
    "beam 4 per token": {"beam_width": 4, "length_penalty": 1.0},
    "beam 8 per token": {"beam_width": 8, "length_penalty": 1.0},
    "beam 8 per token^0.5": {"beam_width": 8, "length_penalty": 0.5},
    "beam 8 per token^1.5": {"beam_width": 8, "length_penalty": 1.5},
    "beam 16 per token": {"beam_width": 16, "length_penalty": 1.0},
}


def decoded_metrics(model, features: Dict[str, np.ndarray], refs: List[List[str]], has_ref: np.ndarray,
                    vocabulary: Sequence[bytes], max_length: int) -> Dict[str, Dict[str, float]]:
    """{decoding: text metrics in percent} of a generating model's texts of the rows with a
    reference, for each of DECODINGS."""
    names = sorted(features)
    out = {}
    for label, kwargs in DECODINGS.items():
        def generate(batch, kwargs=kwargs):
            return model.generator.generate(*model.decoder_inputs(model.encode(batch)), max_length, **kwargs)

        ids = np.concatenate([x.numpy() for x in batched(generate, features, names)])
        hypotheses = [tm.tokens_of(r, vocabulary, reference=False) for r, keep in zip(ids, has_ref) if keep]
        out[label] = {k: round(100.0 * v, 3) for k, v in tm.text_metrics(hypotheses, refs).items()}
        out[label]["mean_length"] = round(float(np.mean([len(h) for h in hypotheses])), 2)
    return out


def eval_only(args) -> Dict[str, Any]:
    """Alternatives compared on the eval split alone: each chosen variant trained for each seed
    (no export, the test split unread); its eval rating RMSE and token perplexity per epoch
    and at the kept epoch, and for a generating variant the eval texts' metrics under each of
    DECODINGS. Kept after each run in `<out>/<name>.json`."""
    import tensorflow_transform as tft

    from training.trainer import TrainConfig, train

    started = time.monotonic()
    commit = machine_commit()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = swept_variants(chosen_variants(args.variants), args.sweep)
    extra = dict(a.split("=", 1) for a in args.hparam)
    stages = text_stages.run(args.description, args.data_dir, args.work_dir)
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    dd = stages.spec.description
    eval_rows = peers.read_rated_rows(os.path.dirname(stages.raw_files("eval")[0]), dd)
    evaluation = transformed_rows(tft_output, eval_rows.examples)
    target_column = dd.column(TARGET)
    vocabulary = tft_output.vocabulary_by_name(target_column.vocabulary_name)
    runs: List[Dict[str, Any]] = []
    out = {"meta": {"command": machine_command_line("bench.review_text"), "commit": commit,
                    "machine": machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()]},
           "split": "eval", "runs": runs}
    for seed in seeds:
        for variant in chosen:
            config = TrainConfig(family=variant.family, description=stages.spec.to_dict(),
                                 hparams={**variant.hparams, **{k: v for k, v in extra.items()
                                                                if _known(variant.family, k)}}, seed=seed)
            model, summary, _ = train(config, stages.files("train"), stages.files("eval"), stages.transform_graph)
            history = summary["history"]
            runs.append({"variant": variant.name, "seed": seed, "monitor": summary["monitor"],
                         "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                         "at_best": eval_at_best(summary),
                         "per_epoch": {k[len("val_"):]: history[k] for k in sorted(history)
                                       if k.startswith("val_") and (k.endswith("rating_rmse")
                                                                    or k.endswith("perplexity") or k == "val_loss")}})
            stage = summary.get("generator_stage")
            if stage:
                runs[-1]["generator_stage"] = {k: stage[k] for k in ("best_epoch", "epochs_run", "best_value")}
                runs[-1]["per_epoch"]["generator stage perplexity"] = stage["history"][stage["monitor"]]
            if getattr(model, "generator", None) is not None:
                max_length = model.hparams.max_length
                refs = references(evaluation[target_column.transformed_name()], vocabulary, max_length)
                has_ref = np.array([len(r) > 0 for r in refs])
                runs[-1]["decodings"] = decoded_metrics(model, evaluation, [r for r in refs if r], has_ref,
                                                        vocabulary, max_length)
            out["meta"].update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               seconds=round(time.monotonic() - started, 1),
                               load_average_end=[round(x, 2) for x in os.getloadavg()])
            os.makedirs(args.out, exist_ok=True)
            atomic_write(os.path.join(args.out, f"{args.name}.json"), json.dumps(out, indent=2) + "\n")
            atomic_write(os.path.join(args.out, f"{args.name}.md"), eval_only_markdown(out))
            print(f"{variant.name} seed {seed}: {runs[-1]['at_best']} best epoch {summary['best_epoch']}",
                  file=sys.stderr, flush=True)
    return out


def eval_only_markdown(out: Dict[str, Any]) -> str:
    """`eval_only`'s results as a page: one row per variant and seed (kept epoch, its eval
    values), the per-epoch eval values, then the command, commit and machine."""
    rows = [{"variant": r["variant"], "seed": r["seed"], "monitor": r["monitor"], "best_epoch": r["best_epoch"],
             "epochs_run": r["epochs_run"], **{k: round(float(v), 4) for k, v in r["at_best"].items()}}
            for r in out["runs"]]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["# Review families: alternatives on the eval split (the test split unread)", "",
             md_table(rows, columns) if rows else "No run finished.", "", "## Eval values per epoch", ""]
    for r in out["runs"]:
        lines.append(f"- {r['variant']}, seed {r['seed']}: " + "; ".join(
            f"{k} " + ", ".join(f"{float(v):.4f}" for v in values) for k, values in r["per_epoch"].items()))
    decoded = [{"variant": r["variant"], "seed": r["seed"], "decoding": label, **values}
               for r in out["runs"] for label, values in r.get("decodings", {}).items()]
    if decoded:
        lines += ["", "## Generated texts on the eval split by decoding (BLEU / ROUGE / distinct in percent)", "",
                  md_table(decoded, list(dict.fromkeys(k for row in decoded for k in row)))]
    meta = out["meta"]
    lines += ["", f"Produced by: `{meta['command']}`", f"Commit: {meta['commit']}",
              f"Machine: {json.dumps(meta['machine'])}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
def choose_peers(train: peers.RatedRows, evaluation: peers.RatedRows,
                 scale: Tuple[float, float]) -> Dict[str, Dict[str, Any]]:
    """BaselineOnly's and SVD's settings chosen on eval by the shared widening searches
    (`peers.tune_baseline_only`; `peers.tune_svd` from `peers.SMALL_LOG_SVD_KNOBS`, seed 0):
    {peer: {"params", "eval_rmse", "status"}}."""
    baseline = peers.best_baseline(peers.tune_baseline_only(train, evaluation, scale=scale))
    svd = peers.tune_svd(train, evaluation, seed=0, scale=scale, knobs=peers.SMALL_LOG_SVD_KNOBS,
                         max_evaluations=peers.SMALL_LOG_SVD_EVALUATIONS)
    return {peer: {"params": t.chosen, "eval_rmse": float(t.score), "status": t.status_text()}
            for peer, t in ((BASELINE, baseline), (SVD, svd))}


def run(args) -> Dict[str, Any]:
    import tensorflow as tf
    import tensorflow_transform as tft

    started = time.monotonic()
    load_start = os.getloadavg()
    commit = machine_commit()  # the code that runs: read before anything can change it
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = swept_variants(chosen_variants(args.variants), args.sweep)
    extra = dict(a.split("=", 1) for a in args.hparam)
    stages = text_stages.run(args.description, args.data_dir, args.work_dir)
    spec = stages.spec
    dd = spec.description
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    threshold = liked_threshold(dd)

    train_rows, eval_rows, test_rows = (peers.read_rated_rows(os.path.dirname(stages.raw_files(split)[0]), dd)
                                        for split in ("train", "eval", "test"))
    scale = peers.rating_scale(dd)
    test = transformed_rows(tft_output, test_rows.examples)
    evaluation = transformed_rows(tft_output, eval_rows.examples)
    train = transformed_rows(tft_output, train_rows.examples)
    target_column = dd.column(TARGET)
    documents_column = desc.text_docs(dd.columns)[0]
    vocabulary = tft_output.vocabulary_by_name(target_column.vocabulary_name)
    from models.registry import get_family

    base = get_family("review_mt").hparams().override({k: v for k, v in extra.items()
                                                      if k in ("max_length", "dim", "units", "learning_rate",
                                                               "batch_size", "max_epochs", "patience",
                                                               "beam_width", "length_penalty", "min_length",
                                                               "generator_epochs")})
    max_length = base.max_length
    refs = references(test[target_column.transformed_name()], vocabulary, max_length)
    has_ref = np.array([len(r) > 0 for r in refs])
    refs = [r for r, keep in zip(refs, has_ref) if keep]
    n = len(test_rows)
    draws = resample_indices(n, args.resamples)
    text_draws = resample_indices(int(has_ref.sum()), args.resamples, seed=1)
    ratings = test_rows.ratings

    results: Dict[str, Dict[str, Any]] = {}

    def record(model: str, seed: Optional[int], predictions: Optional[np.ndarray] = None,
               hypotheses: Optional[List[List[str]]] = None, perplexity: Optional[float] = None,
               info: Optional[Dict[str, Any]] = None) -> None:
        entry = results.setdefault(model, {"seeds": [], "values": {}, "draws": {}, "info": []})
        entry["seeds"].append(seed)
        values = {}
        if predictions is not None:
            values.update(rmse=d.rmse(predictions, ratings), mae=d.mae(predictions, ratings),
                          auc=d.liked_auc(predictions, ratings, threshold))
            entry["draws"].setdefault("rmse", []).append(rmse_draws(predictions, ratings, draws))
        if hypotheses is not None:
            values.update({k: 100.0 * v for k, v in tm.text_metrics(hypotheses, refs).items()})
            stats = [tm.bleu_statistics(h, r) for h, r in zip(hypotheses, refs)]
            stacked = tuple(np.stack([s[k] for s in stats]) for k in range(4))
            entry["draws"].setdefault("bleu_4", []).append(100.0 * bleu_draws(stacked, text_draws))
            rouge_l = tm.pairwise_rouge(hypotheses, refs)["rouge_l"]
            entry["draws"].setdefault("rouge_l", []).append(100.0 * mean_draws(rouge_l, text_draws))
            if len(entry["seeds"]) == 1:
                entry["hypotheses"] = hypotheses
        if perplexity is not None:
            values["perplexity"] = perplexity
        for k, v in values.items():
            entry["values"].setdefault(k, []).append(float(v))
        if info:
            entry["info"].append(info)
        print(f"[{time.monotonic() - started:7.0f}s] {model} seed {seed}: "
              f"{ {k: round(v, 4) for k, v in values.items()} }", file=sys.stderr, flush=True)

    with_peers = not args.no_peers
    peer_settings: Dict[str, Any] = {}
    if with_peers:
        # Rating peers.
        record(GLOBAL, None, peers.global_mean(train_rows, test_rows))
        chosen_peers = choose_peers(train_rows, eval_rows, scale)
        record(BASELINE, None, peers.baseline_only(train_rows, test_rows, scale=scale,
                                                   **chosen_peers[BASELINE]["params"]))
        for seed in seeds:
            record(SVD, seed, peers.svd(train_rows, test_rows, seed=seed, scale=scale, **chosen_peers[SVD]["params"]))
        peer_settings.update(svd=chosen_peers[SVD], baseline_only=chosen_peers[BASELINE])

        # Retrieval explanation (deterministic).
        documents_vocabulary = int(tft_output.vocabulary_size_by_name(documents_column.vocabulary_name))
        retrieved = retrieval_explanations(train, test, documents_column.transformed_name(),
                                           target_column.transformed_name(), documents_vocabulary + 2)
        record(RETRIEVAL, None, hypotheses=[tm.tokens_of(r[:max_length], vocabulary, reference=False)
                                            for r, keep in zip(retrieved, has_ref) if keep])

        # The generator trained alone on ids, its settings chosen on eval.
        sizes = {"num_users": tft_output.vocabulary_size_by_name(F.USER_VOCAB) + F.OOV_BUCKETS + 1,
                 "num_items": tft_output.vocabulary_size_by_name(F.ITEM_VOCAB) + F.OOV_BUCKETS + 1,
                 "rows": tft_output.vocabulary_size_by_name(target_column.vocabulary_name) + F.OOV_BUCKETS + 1}
        att2seq_base = att2seq_settings(base)
        att2seq_search = tune_att2seq(train, evaluation, sizes, target_column.transformed_name(), att2seq_base)
        att2seq_hparams = att2seq_with(att2seq_base, att2seq_search.chosen)
        peer_settings.update(att2seq=att2seq_hparams, att2seq_search={
            "params": att2seq_search.chosen, "eval_perplexity": att2seq_search.score,
            "status": att2seq_search.status_text(), "points": att2seq_search.points})
    names = sorted(test)
    rows_text = np.flatnonzero(has_ref)

    def assemble(done: Sequence[int]) -> Dict[str, Any]:
        """The run so far (the seeds in `done` finished), as main() reports it."""
        meta = {
            "command": machine_command_line("bench.review_text"),
            "commit": commit,
            "machine": machine(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.monotonic() - started, 1),
        }
        settings = {
            "description": os.path.relpath(args.description, REPO) if args.description.startswith(REPO)
            else args.description,
            "split": dd.split, "seeds": list(done), "test_rows": n, "test_rows_with_text": int(has_ref.sum()),
            "train_rows": len(train_rows), "eval_rows": len(eval_rows), "target": TARGET,
            "documents": documents_column.name, "max_length": max_length,
            "liked_threshold": threshold, "resamples": args.resamples, "overrides": extra,
            "variants": [dataclasses.asdict(v) for v in chosen], **peer_settings,
        }
        examples = example_rows(test_rows, test, has_ref, refs, results, target_column, vocabulary, max_length)
        return {"meta": meta, "settings": settings, "results": results, "examples": examples}

    def save_so_far(done: Sequence[int]) -> None:
        """Everything measured so far, kept after each model (report it with --from_run)."""
        os.makedirs(args.work_dir, exist_ok=True)
        atomic_write(os.path.join(args.work_dir, f"{args.name}_run.pkl"), pickle.dumps(assemble(done)))

    scratch = tempfile.mkdtemp(prefix="review-text-")
    try:
        for seed in seeds:
            for variant in chosen:
                export = os.path.join(scratch, f"{variant.family}-{seed}")
                t0 = time.monotonic()
                model, summary = train_variant(variant, stages, seed, {k: v for k, v in extra.items()
                                                                       if _known(variant.family, k)}, export)
                loaded = tf.saved_model.load(export)
                predictions = served(loaded, protocol.SERVING_DEFAULT, test_rows.examples)[
                    model.task_name].astype(np.float64).reshape(-1)
                hypotheses = perplexity = None
                if protocol.EXPLAIN in loaded.signatures:
                    words = served(loaded, protocol.EXPLAIN, test_rows.examples)[protocol.EXPLANATION_TOKENS]
                    hypotheses = [[w.decode() for w in row if w] for row, keep in zip(words, has_ref) if keep]
                    perplexity = perplexity_of(model, test, names, rows_text)
                record(variant.name, seed, predictions, hypotheses, perplexity,
                       {"best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                        "train_seconds": summary["train_seconds"], "seconds": round(time.monotonic() - t0, 1),
                        **({"generator_stage": {k: summary["generator_stage"][k] for k in ("best_epoch", "epochs_run")}}
                           if summary.get("generator_stage") else {}),
                        "hparams": summary["hparams"], "eval": eval_at_best(summary)})
                shutil.rmtree(export, ignore_errors=True)
                tf.keras.backend.clear_session()
                save_so_far(seeds[:seeds.index(seed) + 1])  # the current seed may be partial
            if not with_peers:
                continue
            t0 = time.monotonic()
            model, history = fit_att2seq(train, evaluation, sizes, target_column.transformed_name(),
                                         att2seq_hparams, seed)
            ids = np.concatenate([x.numpy() for x in batched(model.explain, test, names)])
            record(ATT2SEQ, seed, hypotheses=[tm.tokens_of(r, vocabulary, reference=False)
                                              for r, keep in zip(ids, has_ref) if keep],
                   perplexity=perplexity_of(model, test, names, rows_text),
                   info={"epochs_run": len(history["loss"]), "seconds": round(time.monotonic() - t0, 1),
                         "best_epoch": kept_epoch(history) + 1,
                         "eval": {_perplexity_key(history)[len("val_"):]: eval_perplexity(history)}})
            save_so_far(seeds[:seeds.index(seed) + 1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    return assemble(seeds)


def _known(family: str, name: str) -> bool:
    """Whether the family takes the hyperparameter `name` (its own or a training knob)."""
    from models.registry import get_family

    return name in get_family(family).hparams().to_dict()


def example_rows(test_rows, test, has_ref, refs, results, column, vocabulary, max_length) -> List[Dict[str, Any]]:
    """EXAMPLES test rows (every tenth row with a reference): the reference and each text
    model's explanation from its first seed."""
    rows = np.flatnonzero(has_ref)
    picked = [int(i) for i in rows[:: max(len(rows) // EXAMPLES, 1)][:EXAMPLES]]
    position = {int(r): k for k, r in enumerate(rows)}
    out = []
    for i in picked:
        entry = {"user": str(test_rows.users[i]), "item": str(test_rows.items[i]),
                 "rating": float(test_rows.ratings[i]), "reference": " ".join(refs[position[i]])}
        for model, values in results.items():
            if "hypotheses" in values:
                entry[model] = " ".join(values["hypotheses"][position[i]])
        out.append(entry)
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def summarize(run_out: Dict[str, Any]) -> Dict[str, Any]:
    """Mean / std rows, comparisons with paired intervals, and the goal lines."""
    results = run_out["results"]
    rows = []
    for model, entry in results.items():
        row = {"model": model, "seeds": len(entry["seeds"])}
        for metric, values in entry["values"].items():
            stats = mean_std(values)
            row[metric] = stats["mean"]
            row[f"{metric}_std"] = stats["std"]
        rows.append(row)
    by_model = {r["model"]: r for r in rows}

    def compare(a: str, b: str, metric: str, higher: bool) -> Optional[Dict[str, Any]]:
        if a not in results or b not in results or metric not in results[a]["draws"] \
                or metric not in results[b]["draws"]:
            return None
        low, high = interval(results[a]["draws"][metric], results[b]["draws"][metric])
        diff = by_model[a][metric] - by_model[b][metric]
        # The project's rule: ahead only when the interval excludes 0 and the difference is
        # larger than the larger seed std (one seed: 0).
        rule = IntervalVerdict(diff=diff, low=low, high=high, a_std=by_model[a].get(f"{metric}_std"),
                               b_std=by_model[b].get(f"{metric}_std"), higher_is_better=higher)
        verdict = "A better" if rule.ahead else "A worse" if rule.ahead is False else rule.why_no_difference()
        return {"a": a, "b": b, "metric": metric, "diff": diff, "low": low, "high": high,
                "larger_seed_std": rule.larger_seed_std, "beats": rule.ahead is True,
                "verdict": verdict, "higher_is_better": higher}

    comparisons = []
    for family in TEXT_FAMILIES:
        for peer in (MF, BASELINE, SVD, f"{family} rating only"):
            comparisons.append(compare(family, peer, "rmse", False))
    def teacher_forced(name: str) -> str:  # the adversarial variant's teacher-forcing-alone twin
        return "review_mt joint stop" if name.endswith("joint stop") else "review_mt"

    adversarial = [m for m in results if m.startswith("review_mt adversarial")]
    for name in adversarial:
        comparisons.append(compare(name, teacher_forced(name), "rmse", False))
    for family in GENERATORS:
        for name, peer in itertools.product((family, f"{family} joint stop"), (RETRIEVAL, ATT2SEQ)):
            for metric in ("bleu_4", "rouge_l"):
                comparisons.append(compare(name, peer, metric, True))
    for name, metric in itertools.product(adversarial, ("bleu_4", "rouge_l")):
        comparisons.append(compare(name, teacher_forced(name), metric, True))
    comparisons = [c for c in comparisons if c is not None]
    found = {(c["a"], c["b"], c["metric"]): c for c in comparisons}

    goals = []
    for family in TEXT_FAMILIES:
        if family not in by_model or MF not in by_model:
            continue
        f, m = by_model[family], by_model[MF]
        stds = [v for v in (f.get("rmse_std"), m.get("rmse_std")) if v is not None]
        # One seed on a side has no spread: the std part of the goal cannot be met then.
        checks = [len(stds) == 2 and m["rmse"] - f["rmse"] > max(stds)] + [found[(family, p, "rmse")]["beats"]
                                                     for p in (MF, BASELINE, SVD) if (family, p, "rmse") in found]
        goals.append({"goal": f"{family} rating RMSE below mf by more than one std (max of the two seed stds) "
                              f"and below BaselineOnly and SVD (paired intervals, beyond one seed std)",
                      "met": all(checks), "detail": f"{family} {f['rmse']:.4f} ± {_std(f.get('rmse_std'))}; "
                                                    f"mf {m['rmse']:.4f} ± {_std(m.get('rmse_std'))}"})
    for family in GENERATORS:
        keys = [(family, p, metric) for p in (RETRIEVAL, ATT2SEQ) for metric in ("bleu_4", "rouge_l")]
        if all(k in found for k in keys):
            goals.append({"goal": f"{family} above the retrieval explanation and att2seq on BLEU-4 and ROUGE-L "
                                  f"(paired intervals, beyond one seed std)",
                          "met": all(found[k]["beats"] for k in keys),
                          "detail": "; ".join(f"{k[1]} {k[2]} {found[k]['diff']:+.3f} "
                                              f"[{found[k]['low']:+.3f}, {found[k]['high']:+.3f}]" for k in keys)})
    return {"rows": rows, "comparisons": comparisons, "goals": goals}


def _std(value: Optional[float]) -> str:
    return "n/a (one seed)" if value is None else f"{value:.4f}"


RATING_COLUMNS = ("model", "seeds", "rmse", "rmse_std", "mae", "mae_std", "auc", "auc_std")
TEXT_COLUMNS = ("model", "seeds", "bleu_1", "bleu_4", "bleu_4_std", "rouge_1", "rouge_2", "rouge_l", "rouge_l_std",
                "distinct_1", "distinct_2", "perplexity")


def decoding_text(decode: Dict[str, Any]) -> str:
    """How the generators decoded, in words (`SequenceGenerator.generate`'s keyword arguments)."""
    width, penalty = int(decode.get("beam_width", 1)), float(decode.get("length_penalty", 0.0))
    text = "greedy" if width == 1 else (f"a beam of {width}, the text of highest log-probability"
                                        + (f" / length^{penalty:g}" if penalty else ""))
    minimum = int(decode.get("min_length", 1))
    return text + (f", at least {minimum} tokens" if minimum > 1 else "")


def markdown(run_out: Dict[str, Any], summary: Dict[str, Any]) -> str:
    meta, settings = run_out["meta"], run_out["settings"]
    rated = [r for r in summary["rows"] if "rmse" in r]
    texts = [r for r in summary["rows"] if "bleu_4" in r]
    lines = [
        "# Reviews as tasks (issue 31): ratings and explanations on the Amazon reviews", "",
        f"Data: `{settings['description']}` (Amazon Musical Instruments 5-core), {settings['split']} split, "
        f"{settings['train_rows']} / {settings['eval_rows']} / {settings['test_rows']} train / eval / test rows "
        f"({settings['test_rows_with_text']} test rows with a {settings['target']}). Seeds "
        f"{', '.join(map(str, settings['seeds']))}; mean and standard deviation over seeds (peers without a seed: "
        "one run). Families read the `review` documents; review_mt, nor_reviews and att2seq generate the "
        f"`{settings['target']}` (at most {settings['max_length']} tokens, "
        f"{decoding_text(settings.get('att2seq', {}).get('decode') or {})}).", "",
        "## Rating (test, no clipping; AUC against liked = rating >= "
        f"{settings['liked_threshold']:g})", "", md_table(rated, RATING_COLUMNS), "",
        "## Generated text (test rows with a reference; BLEU / ROUGE / distinct in percent)", "",
        md_table(texts, TEXT_COLUMNS, digits=3), "",
        "Tokens: the Transform's (lower-cased, split on non-alphanumerics), ids mapped back through the "
        "summary vocabulary; an unknown id never matches. BLEU: corpus level, uniform weights, brevity penalty, "
        "Chen & Cherry method-1 smoothing (0.1 matches for an order with none). ROUGE: F1 per pair, averaged. "
        "Perplexity: teacher forcing over the reference tokens and the end token.", "",
        "## Comparisons (A - B, paired bootstrap over test rows, "
        f"{settings['resamples']} draws, 95%; better only beyond the larger seed std too)", "",
        md_table([{**c, "interval": f"[{c['low']:+.4f}, {c['high']:+.4f}]"} for c in summary["comparisons"]],
                 ("a", "b", "metric", "diff", "interval", "larger_seed_std", "verdict")), "",
        "## Goals (issue 31)", "",
    ]
    lines += [f"- {'MET' if g['met'] else 'NOT MET'}: {g['goal']} ({g['detail']})" for g in summary["goals"]]
    lines += ["- Published orientation (TripAdvisor, different data): NRT / Att2Seq / PETER BLEU-1 about 16, "
              "BLEU-4 about 1.1, ROUGE-L about 13; rating RMSE 0.79-0.81.", "",
              "## Five example explanations (first seed)", ""]
    for e in run_out["examples"]:
        lines.append(f"- user {e['user']}, item {e['item']}, rating {e['rating']:g}: reference \"{e['reference']}\"")
        for k, v in e.items():
            if k not in ("user", "item", "rating", "reference"):
                lines.append(f"  - {k}: \"{v}\"")
    lines += ["", "## Eval split at the kept epoch (mean over seeds; what alternatives are chosen on)", ""]
    for m, e in run_out["results"].items():
        values: Dict[str, List[float]] = {}
        for info in e["info"]:
            for k, v in (info.get("eval") or {}).items():
                values.setdefault(k, []).append(v)
        if values:
            lines.append(f"- {m}: " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in sorted(values.items()))
                         + f" (best epochs {[i.get('best_epoch') for i in e['info']]})")
    peers_run = "att2seq" in settings  # a run with --no_peers has no peer settings
    lines += ["", "## Settings", "",
              *([f"- SVD chosen on eval: `{json.dumps(settings['svd'])}`"] if settings.get("svd") else []),
              *([f"- BaselineOnly chosen on eval: `{json.dumps(settings['baseline_only'])}`"]
                if settings.get("baseline_only") else []),
              *([f"- att2seq's learning rate, patience and id dropout chosen on eval (perplexity, seed "
                 f"{ATT2SEQ_SEARCH_SEED}): `{json.dumps(settings['att2seq_search']['params'])}`, eval perplexity "
                 f"{settings['att2seq_search']['eval_perplexity']:.2f} "
                 f"({settings['att2seq_search']['status']}; {len(settings['att2seq_search']['points'])} fits)"]
                if settings.get("att2seq_search") else
                ["- att2seq: not tuned (review_mt's learning rate and patience, no dropout)"] if peers_run else
                ["- Peers: not run (`--no_peers`)"]),
              f"- Overrides: `{json.dumps(settings['overrides'])}`"
              + (f"; att2seq: `{json.dumps(settings['att2seq'])}`" if peers_run else ""),
              "- Per-run training (first seed's run of each model): "
              + "; ".join(f"{m}: best epoch {e['info'][0].get('best_epoch')} of {e['info'][0].get('epochs_run')}"
                          + (f", then the generator stage's best epoch {e['info'][0]['generator_stage']['best_epoch']}"
                             f" of {e['info'][0]['generator_stage']['epochs_run']}"
                             if e["info"][0].get("generator_stage") else "")
                          + f", {e['info'][0].get('seconds')} s" for m, e in run_out["results"].items() if e["info"]),
              "", f"Run {meta['date']}, {meta['seconds']} s." + (f" {meta['note']}" if meta.get("note") else ""),
              "", f"Produced by: `{meta['command']}`", f"Commit: {meta['commit']}",
              f"Machine: {json.dumps(meta['machine'])}; load average at the start "
              f"{meta['load_average_start']}, at the end {meta['load_average_end']} (2 cores shared with other "
              "jobs: times are not evidence, and the numbers are provisional when the machine was loaded)."]
    return "\n".join(lines) + "\n"


def merge_runs(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One report's run from saved runs of the same data and settings with different seeds (each
    run its own process, e.g. one seed at a time on a loaded machine). Seeded models gather
    every run's seeds; a model without a seed (global mean, BaselineOnly, retrieval) is
    deterministic and kept from the first run. The bootstrap draws depend only on the test
    rows, so every run's draws are the same rows."""
    first = runs[0]
    if len(runs) == 1:
        return first
    for other in runs[1:]:
        for key in SAME_DATA:
            if other["settings"][key] != first["settings"][key]:
                raise ValueError(f"saved runs differ in {key}: {first['settings'][key]!r} vs "
                                 f"{other['settings'][key]!r}")
    results: Dict[str, Dict[str, Any]] = {}
    for run_out in runs:
        for model, entry in run_out["results"].items():
            if model not in results:
                results[model] = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                                  for k, v in entry.items()}
                results[model]["values"] = {k: list(v) for k, v in entry["values"].items()}
                results[model]["draws"] = {k: list(v) for k, v in entry["draws"].items()}
                continue
            if entry["seeds"] == [None] or set(entry["seeds"]) & set(results[model]["seeds"]):
                continue  # deterministic, or a seed already gathered
            merged = results[model]
            merged["seeds"] += entry["seeds"]
            merged["info"] += entry["info"]
            for k, v in entry["values"].items():
                merged["values"].setdefault(k, []).extend(v)
            for k, v in entry["draws"].items():
                merged["draws"].setdefault(k, []).extend(v)
    seeds = sorted({s for r in runs for s in r["settings"]["seeds"]})
    meta = dict(first["meta"])
    meta["command"] = " + ".join(r["meta"]["command"] for r in runs)
    meta["commit"] = " + ".join(dict.fromkeys(r["meta"]["commit"] for r in runs))
    meta["date"] = " + ".join(r["meta"]["date"] for r in runs)
    meta["seconds"] = round(sum(r["meta"]["seconds"] for r in runs), 1)
    meta["load_average_end"] = runs[-1]["meta"]["load_average_end"]
    return {"meta": meta, "settings": {**first["settings"], "seeds": seeds}, "results": results,
            "examples": first["examples"]}


# The settings a model's rows depend on: replaced with the model's rows (`replace_models`).
SETTINGS_OF = {ATT2SEQ: ("att2seq", "att2seq_search"), SVD: ("svd",), BASELINE: ("baseline_only",)}
SAME_DATA = ("description", "split", "test_rows", "test_rows_with_text", "target", "max_length", "resamples")


def replace_models(run_out: Dict[str, Any], replacement: Dict[str, Any], models: Sequence[str]) -> Dict[str, Any]:
    """`run_out` with the named models' rows, settings and example texts taken from
    `replacement`, a saved run of the same data and seeds (e.g. a peer re-run after its
    search changed, with `--variants none`), or added from it (variants run later with
    `--no_peers`, e.g. ablations). Every other model stays as measured."""
    for key in SAME_DATA:
        if replacement["settings"][key] != run_out["settings"][key]:
            raise ValueError(f"the replacement run differs in {key}: {replacement['settings'][key]!r} vs "
                             f"{run_out['settings'][key]!r}")
    results = dict(run_out["results"])
    settings = dict(run_out["settings"])
    for model in models:
        if model not in replacement["results"]:
            raise ValueError(f"the replacement run has no {model!r}; it has {sorted(replacement['results'])}")
        seeds = replacement["results"][model]["seeds"]
        if seeds != [None] and sorted(seeds) != sorted(run_out["settings"]["seeds"]):
            raise ValueError(f"{model!r} was re-run on seeds {sorted(seeds)}, the report has "
                             f"{sorted(run_out['settings']['seeds'])}")
        results[model] = replacement["results"][model]
        known = {v["name"] for v in settings.get("variants", [])}
        settings["variants"] = list(settings.get("variants", [])) + [
            v for v in replacement["settings"].get("variants", []) if v["name"] == model and model not in known]
        for key in SETTINGS_OF.get(model, ()):
            if key in replacement["settings"]:
                settings[key] = replacement["settings"][key]
    examples = []
    for mine, theirs in zip(run_out["examples"], replacement["examples"]):
        if (mine["user"], mine["item"]) != (theirs["user"], theirs["item"]):
            raise ValueError(f"example rows differ: {mine['user']}/{mine['item']} vs {theirs['user']}/{theirs['item']}")
        examples.append({**mine, **{m: theirs[m] for m in models if m in theirs}})
    meta = dict(run_out["meta"])
    for key in ("command", "commit", "date"):
        meta[key] = f"{meta[key]} + {', '.join(models)} from {replacement['meta'][key]}"
    meta["seconds"] = round(meta["seconds"] + replacement["meta"]["seconds"], 1)
    return {**run_out, "meta": meta, "settings": settings, "results": results, "examples": examples}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", help="the folder of Musical_instruments_reviews.csv")
    parser.add_argument("--description", default=DESCRIPTION)
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                        help="an override for every family that has the hyperparameter (e.g. max_epochs=2)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--work_dir", default=WORK_DIR)
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--from_run", default="",
                        help="report runs saved before (<work_dir>/<name>_run.pkl; comma-separated: runs of other "
                             "seeds merged) instead of running")
    parser.add_argument("--replace", action="append", default=[], metavar="MODEL[,MODEL]=RUN_PKL",
                        help="with --from_run: these models' rows and settings from another saved run of the same "
                             "data and seeds (e.g. a peer re-run with --variants none after its search changed, "
                             "or variants added with --no_peers); repeatable")
    parser.add_argument("--no_peers", action="store_true",
                        help="train the variants alone (e.g. ablations added to a report with --from_run ... "
                             "--replace NAME[,NAME]=RUN_PKL)")
    parser.add_argument("--eval_only", action="store_true",
                        help="train the variants and write their eval-split values only (choosing alternatives)")
    parser.add_argument("--sweep", action="append", default=[], metavar="VARIANT:KNOB=V1,V2",
                        help="that variant once per value of the knob, each named VARIANT KNOB=V (repeatable)")
    parser.add_argument("--note", default="", help="a sentence the report carries (e.g. why a run stopped early)")
    args = parser.parse_args(argv)
    if args.eval_only:
        if not args.data_dir:
            parser.error("--data_dir is needed to run")
        eval_only(args)
        return 0
    if args.from_run:
        saved = []
        for path in args.from_run.split(","):
            with open(path, "rb") as f:
                saved.append(pickle.load(f))
        run_out = merge_runs(saved)
        for replacement in args.replace:
            models, path = replacement.split("=", 1)
            with open(path, "rb") as f:
                run_out = replace_models(run_out, pickle.load(f), models.split(","))
    elif not args.data_dir:
        parser.error("--data_dir is needed to run")
    else:
        run_out = run(args)
    if args.note:
        run_out["meta"]["note"] = args.note
    summary = summarize(run_out)
    results = {m: {k: v for k, v in e.items() if k not in ("draws", "hypotheses")}
               for m, e in run_out["results"].items()}
    payload = {"meta": run_out["meta"], "settings": run_out["settings"], "results": results, **summary,
               "examples": run_out["examples"]}
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, f"{args.name}.json"), json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write(os.path.join(args.out, f"{args.name}.md"), markdown(run_out, summary))
    print(os.path.join(args.out, f"{args.name}.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Similar items: how much of the item-feature-set cosine each family's `similar_items` blends in.

`similar_items` scores (cos(learned item vectors) + w * cos(feature sets)) / (1 + w)
(`models.base.RecModel.similarity_vectors`, w = the family's `similar_category_weight`), the
sets being the values of the description's multi-valued item feature (MovieLens: the
genres; `--feature` names another categorical item feature). For each family, trained once
on the hash split, and for the ItemKNN peer (cosine of item columns of the training user x
item matrix), every w of the grid is measured:

- item-to-item HR@10: for each user with a training item of the strongest behavior
  (MovieLens: liked) and a target of the split, the query is the user's most recent such
  training item; a hit when one of its 10 most similar items is a target. w is chosen on
  the eval split; the test split is only reported.
- set Jaccard@10: mean Jaccard of the feature sets of each item with at least
  `--min_count` training interactions and of its 10 most similar items (training data
  only: what the list looks like, not whether it is right).
- focus share: over the items carrying every `--focus` value (default Children and
  Animation) with at least `--min_count` training interactions, the share of their 10 most
  similar items carrying one of them.

The chosen w is exported with the family (`export_model`) and the served
`similar_items` answers `--title` (an item whose `--title_column` in the description's item
table is that text), so the quoted list is the signature's own. Writes `similar.json` and
`similar.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench.retrieval_peers import item_knn_weights  # noqa: E402
from contract import description as desc  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from export.signatures import export_model  # noqa: E402
from training.inputs import load_examples  # noqa: E402
from training.trainer import train  # noqa: E402
from training.views import ItemRows, UserView, load_user_view  # noqa: E402
from contract.datasets import HASH_SPLIT  # noqa: E402

K = 10
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
FOCUS = "Children,Animation"  # the default --focus values (MovieLens genres)
TITLE, TITLE_COLUMN = "Toy Story (1995)", "title"  # the default --title and --title_column


def set_feature(d: desc.Description, name: str = "") -> desc.Feature:
    """The item feature whose value sets are blended in: `name`, or the description's first
    multi-valued (else categorical) item feature; ValueError when it has none."""
    kinds = (desc.MULTI_CATEGORICAL, desc.CATEGORICAL)
    candidates = sorted((f for f in d.item_features if f.type in kinds), key=lambda f: kinds.index(f.type))
    if name:
        candidates = [f for f in candidates if f.name == name]
    if not candidates:
        wanted = f"categorical item feature {name!r}" if name else "categorical item feature"
        raise ValueError(f"dataset {d.name!r} has no {wanted}; its categorical item features: "
                         f"{[f.name for f in d.item_features if f.type in kinds]}")
    return candidates[0]


def feature_sets(parts: Sequence[Dict[str, np.ndarray]], feature: desc.Feature, num_rows: int,
                 width: int) -> np.ndarray:
    """Multi-hot [num_rows, width] of each item row's values of `feature` (its transformed
    `<raw>_idx`, 0 = padding), from transformed rows that carry the item."""
    out = np.zeros((num_rows, width), np.float32)
    name = feature.transformed_names()[0]
    for data in parts:
        items = np.asarray(data[F.ITEM_IDX]).reshape(-1)
        values = np.asarray(data[name]).reshape(len(items), -1)
        keep = items < num_rows
        rows, cols = np.nonzero((values[keep] > 0) & (values[keep] < width))
        out[items[keep][rows], values[keep][rows, cols]] = 1.0
    return out


def item_to_item_queries(train: UserView, split: UserView, liked: int):
    """(query rows, target sets): per user, the most recent liked training item and the
    split's targets (users of both views are aligned by id)."""
    by_user = {u: (items, behaviors) for u, items, behaviors in zip(train.users, train.items, train.behaviors)}
    queries, targets = [], []
    for user, wanted in zip(split.users, split.targets):
        items, behaviors = by_user.get(user, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        liked_items = items[behaviors == liked]
        wanted = set(int(t) for t in wanted if t > 0)
        if len(liked_items) and wanted:
            queries.append(int(liked_items[-1]))
            targets.append(wanted)
    return np.asarray(queries, np.int64), targets


def dot_scores(vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Similarity of rows to every row as dot products of `vectors` (unit: cosine)."""
    return lambda rows: vectors[rows] @ vectors.T


def top_similar(scores_of: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, valid: np.ndarray,
                k: int = K) -> np.ndarray:
    """[len(rows), k] most similar valid rows of each row, the row itself excluded."""
    scores = np.array(scores_of(rows), dtype=np.float64)
    scores[:, ~valid] = -np.inf
    scores[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def hit_rate(neighbours: np.ndarray, targets: Sequence[set]) -> float:
    return float(np.mean([bool(set(n.tolist()) & t) for n, t in zip(neighbours, targets)])) if targets else 0.0


def set_measures(neighbours: np.ndarray, rows: np.ndarray, multi_hot: np.ndarray, focus: np.ndarray) -> Dict[str, float]:
    """Set Jaccard@10 of each row and its neighbours; the focus share over the rows carrying
    every `focus` column, and how many rows that is."""
    g = multi_hot > 0
    inter = (g[rows][:, None, :] & g[neighbours]).sum(-1)
    union = (g[rows][:, None, :] | g[neighbours]).sum(-1)
    jaccard = float(np.mean(inter / np.maximum(union, 1)))
    in_focus = g[:, focus].any(-1) if len(focus) else np.zeros(len(g), bool)
    query_focus = g[rows][:, focus].all(-1) if len(focus) else np.zeros(len(rows), bool)
    share = float(np.mean(in_focus[neighbours[query_focus]])) if query_focus.any() else float("nan")
    return {"set_jaccard_at_10": jaccard, "focus_share": share, "focus_items": int(query_focus.sum())}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mf,mf_history,mf_dnn")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--feature", default="", help="the categorical item feature whose sets are blended in "
                                                      "(default: the description's first multi-valued one)")
    parser.add_argument("--focus", default=FOCUS, help="values of the feature whose items' lists are measured")
    parser.add_argument("--title", default=TITLE, help="the item whose served list is quoted")
    parser.add_argument("--title_column", default=TITLE_COLUMN,
                        help="the column of the description's item table that --title is a value of")
    parser.add_argument("--min_count", type=int, default=20)
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--max_epochs", type=int, default=0, help="cap each family's epochs (0: its own)")
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    stages = common.stages_of_args(args, split=HASH_SPLIT)
    spec = stages.config.spec
    description = stages.config.load_description()
    feature = set_feature(description, args.feature)
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    vocab = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    rows = ItemRows(vocab, spec.behaviors)
    num_rows = len(rows.ids) + 1
    views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), rows) for s in ("train", "eval", "test")}
    strongest = len(spec.behaviors)  # behavior ids 1..n, weakest first
    queries = {s: item_to_item_queries(views["train"], views[s], strongest) for s in ("eval", "test")}
    counts = np.zeros(num_rows)
    for items in views["train"].items:
        np.add.at(counts, items, 1)
    valid = counts > 0
    valid[0] = False
    frequent = np.nonzero(counts >= args.min_count)[0]
    values = [v.decode() if isinstance(v, bytes) else str(v)
              for v in tft_output.vocabulary_by_name(feature.vocabulary_name)]
    parts = [load_examples(stages.files(F.INTERACTION_VIEW, split), tft_output, stages.config.max_history)
             for split in ("train", "eval", "test")]
    multi_hot = feature_sets(parts, feature, num_rows, len(values) + 2)  # 0 padding, 1..V, V+1 OOV
    focus = np.asarray([values.index(v) + 1 for v in args.focus.split(",") if v in values], np.int64)

    results: List[Dict[str, Any]] = []
    lists: Dict[str, List[str]] = {}
    title_row = _title_row(args.title, args.title_column, description, stages.config.data_dir, rows)

    def measure(model: str, scores_for, trained_seconds: float, served=None) -> None:
        per_w = []
        for w in weights:
            scores_of = scores_for(w)
            per_w.append({
                "w": w,
                "eval_hr_at_10": hit_rate(top_similar(scores_of, queries["eval"][0], valid), queries["eval"][1]),
                "scores_of": scores_of,
            })
        chosen = max(per_w, key=lambda r: r["eval_hr_at_10"])
        for r in per_w:
            scores_of = r.pop("scores_of")
            neighbours = top_similar(scores_of, frequent, valid)
            results.append({
                "model": model, "similar_category_weight": r["w"], "chosen": r is chosen,
                "eval_hr_at_10": round(r["eval_hr_at_10"], 4),
                "test_hr_at_10": round(hit_rate(top_similar(scores_of, queries["test"][0], valid),
                                                queries["test"][1]), 4),
                **{k: (round(v, 4) if isinstance(v, float) else v)
                   for k, v in set_measures(neighbours, frequent, multi_hot, focus).items()},
                "eval_queries": len(queries["eval"][0]), "test_queries": len(queries["test"][0]),
                "train_seconds": round(trained_seconds, 1),
            })
            if r is chosen and title_row:
                lists[model] = (served(r["w"]) if served else
                                [_title(rows.ids[t - 1]) for t in top_similar(scores_of, np.asarray([title_row]), valid)[0]])

    for family in [f for f in args.families.split(",") if f]:
        view = F.INTERACTION_VIEW
        hparams = {"max_epochs": args.max_epochs} if args.max_epochs else {}
        config = common.train_config(stages, family, hparams=hparams, tasks=common.task_names(stages.config, family),
                                     seed=args.seed, top_k=K)
        started = time.monotonic()
        model, _, model_valid = train(config, stages.files(view, "train"), stages.files(view, "eval"),
                                      stages.transform_graph)
        seconds = time.monotonic() - started
        base = model.hparams

        def scores_for(w, model=model, base=base):
            model.hparams = dataclasses.replace(base, similar_category_weight=w)
            return dot_scores(model.similarity_vectors().numpy()[:num_rows])

        def served(w, model=model, base=base, model_valid=model_valid):
            model.hparams = dataclasses.replace(base, similar_category_weight=w)
            with tempfile.TemporaryDirectory() as tmp:
                export_model(model, tft_output, model_valid, tmp, top_k=K)
                loaded = tf.saved_model.load(tmp)
                out = loaded.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([rows.ids[title_row - 1]]))
                return [_title(i) for i in out[protocol.RECOMMEND_ITEM_IDS].numpy()[0]]

        measure(family, scores_for, seconds, served)

    started = time.monotonic()
    knn = item_knn_weights(views["train"], num_rows)
    knn = np.asarray(knn.todense() if hasattr(knn, "todense") else knn, np.float32)
    sets_unit = unit_rows(multi_hot)
    seconds = time.monotonic() - started
    # ItemKNN's item-item cosine, blended with the set cosine as the families' vectors are.
    measure("item_knn", lambda w: (lambda r: (knn[r] + w * (sets_unit[r] @ sets_unit.T)) / (1.0 + w)), seconds)

    meta = {"command": "python -m bench.similar " + " ".join(argv if argv is not None else sys.argv[1:]),
            "data": common.data_label(stages.config), "feature": feature.name, "focus": args.focus,
            "seed": args.seed, "title": args.title, "min_count": args.min_count, "machine": common.machine()}
    columns = ["model", "similar_category_weight", "chosen", "eval_hr_at_10", "test_hr_at_10",
               "set_jaccard_at_10", "focus_share", "eval_queries", "train_seconds"]
    markdown = "\n".join([
        f"# Similar items: learned vectors blended with {feature.name} sets ({meta['data']})",
        "",
        common.md_table(results, columns),
        "",
        f"`similar_category_weight` w: scores (cos(vectors) + w cos({feature.name})) / (1 + w). `chosen`: the best",
        f"eval item-to-item HR@10 (query: the user's most recent {spec.behaviors[-1]} training item; hit: a",
        "target among its 10 most similar); the test split is only reported. Set Jaccard@10 over",
        f"the {len(frequent)} items with at least {args.min_count} training interactions; focus share over the",
        f"items among them whose {feature.name} include every one of {args.focus}.",
        "",
        f"`similar_items` for {args.title!r} at the chosen w:",
        "",
        *[f"- {model}: " + "; ".join(titles) for model, titles in lists.items()],
        "",
        f"Produced by: `{meta['command']}`",
        f"Machine: {json.dumps(meta['machine'])}",
        "",
    ])
    common.write_results("similar", results, markdown, {**meta, "lists": lists}, args.out)
    print(markdown)
    return 0


_TITLES: Dict[bytes, str] = {}


def _title_row(title: str, column: str, d: desc.Description, data_dir: str, rows: ItemRows) -> int:
    """The item row whose `column` in the description's item table is `title` (0: not a
    training item); reads the item labels `_title` shows."""
    if d.items is None:
        raise SystemExit(f"--title: dataset {d.name!r} has no item table to look {title!r} up in")
    frame = common.read_table(d.items, data_dir)
    if column not in frame.columns:
        raise SystemExit(f"--title_column {column!r}: not a column of {d.items.files}; columns: {list(frame.columns)}")
    for key, label in zip(frame[d.item_key].astype(str), frame[column].astype(str)):
        _TITLES[key.encode()] = label
    wanted = [i for i, t in _TITLES.items() if t == title]
    if not wanted:
        raise SystemExit(f"--title {title!r}: no item of {d.items.files} has it in column {column!r}")
    row = int(rows.rows([wanted[0]])[0])
    return row if 0 < row <= len(rows.ids) else 0


def _title(item_id) -> str:
    item_id = item_id if isinstance(item_id, bytes) else str(item_id).encode()
    return _TITLES.get(item_id, item_id.decode())


if __name__ == "__main__":
    sys.exit(main())

"""Similar items: how much of the genre-set cosine each family's `similar_items` blends in.

`similar_items` scores (cos(learned item vectors) + w * cos(genre sets)) / (1 + w)
(`models.base.RecModel.similarity_vectors`, w = the family's `similar_genre_weight`).
For each family, trained once on the hash split, and for the ItemKNN peer (cosine of
item columns of the training user x item matrix), every w of the grid is measured:

- item-to-item HR@10: for each user with a liked training item and a liked target of
  the split, the query is the user's most recent liked training item; a hit when one
  of its 10 most similar items is a liked target. w is chosen on the eval split; the
  test split is only reported.
- genre Jaccard@10: mean Jaccard of the genre sets of each item with at least
  `--min_count` training interactions and of its 10 most similar items (training data
  only: what the list looks like, not whether it is right).
- children/animation share: over Children-and-Animation films with at least
  `--min_count` training interactions, the share of their 10 most similar items that
  are Children or Animation films.

The chosen w is exported with the family (`export_model`) and the served
`similar_items` answers `--title`, so the quoted list is the signature's own.
Writes `similar.json` and `similar.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench.retrieval_peers import item_knn_weights  # noqa: E402
from contract import datasets as D  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from export.signatures import export_model  # noqa: E402
from models.base import genre_sets  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402
from training.views import ItemRows, UserView, load_user_view  # noqa: E402

K = 10
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
KIDS = (b"Children", b"Animation")


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


def genre_measures(neighbours: np.ndarray, rows: np.ndarray, multi_hot: np.ndarray, kids: np.ndarray) -> Dict[str, float]:
    g = multi_hot > 0
    inter = (g[rows][:, None, :] & g[neighbours]).sum(-1)
    union = (g[rows][:, None, :] | g[neighbours]).sum(-1)
    jaccard = float(np.mean(inter / np.maximum(union, 1)))
    is_kid = g[:, kids].any(-1) if len(kids) else np.zeros(len(g), bool)
    query_kids = g[rows][:, kids].all(-1) if len(kids) else np.zeros(len(rows), bool)
    share = float(np.mean(is_kid[neighbours[query_kids]])) if query_kids.any() else float("nan")
    return {"genre_jaccard_at_10": jaccard, "children_animation_share": share,
            "children_animation_films": int(query_kids.sum())}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mf,mf_history,mf_dnn")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--title", default="Toy Story (1995)")
    parser.add_argument("--min_count", type=int, default=20)
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--max_epochs", type=int, default=0, help="cap each family's epochs (0: its own)")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    spec = D.MOVIELENS
    stages = common.data_stages(args.work_dir)
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    vocab = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    rows = ItemRows(vocab, spec.behaviors)
    num_rows = len(rows.ids) + 1
    views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), rows) for s in ("train", "eval", "test")}
    liked = spec.behaviors.index("liked") + 1
    queries = {s: item_to_item_queries(views["train"], views[s], liked) for s in ("eval", "test")}
    counts = np.zeros(num_rows)
    for items in views["train"].items:
        np.add.at(counts, items, 1)
    valid = counts > 0
    valid[0] = False
    frequent = np.nonzero(counts >= args.min_count)[0]

    results: List[Dict[str, Any]] = []
    lists: Dict[str, List[str]] = {}
    title_row = _title_row(args.title, rows)
    multi_hot = kids = None

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
                "model": model, "similar_genre_weight": r["w"], "chosen": r is chosen,
                "eval_hr_at_10": round(r["eval_hr_at_10"], 4),
                "test_hr_at_10": round(hit_rate(top_similar(scores_of, queries["test"][0], valid),
                                                queries["test"][1]), 4),
                **{k: (round(v, 4) if isinstance(v, float) else v)
                   for k, v in genre_measures(neighbours, frequent, multi_hot, kids).items()},
                "eval_queries": len(queries["eval"][0]), "test_queries": len(queries["test"][0]),
                "train_seconds": round(trained_seconds, 1),
            })
            if r is chosen and title_row:
                lists[model] = (served(r["w"]) if served else
                                [_title(rows.ids[t - 1]) for t in top_similar(scores_of, np.asarray([title_row]), valid)[0]])

    for family in [f for f in args.families.split(",") if f]:
        view = F.INTERACTION_VIEW
        hparams = {"max_epochs": args.max_epochs} if args.max_epochs else {}
        config = TrainConfig(family=family, dataset=spec.name, hparams=hparams,
                             tasks=common.task_names(stages.config, family),
                             max_history=stages.config.max_history, seed=args.seed, top_k=K)
        started = time.monotonic()
        model, _, model_valid = train(config, stages.files(view, "train"), stages.files(view, "eval"),
                                      stages.transform_graph)
        seconds = time.monotonic() - started
        if multi_hot is None:
            multi_hot = genre_sets(model.context.item_table[F.ITEM_GENRE_IDX], model.context.num_genres)[:num_rows]
            genre_vocab = list(tft_output.vocabulary_by_name(F.GENRE_VOCAB))
            kids = np.asarray([genre_vocab.index(g) + 1 for g in KIDS if g in genre_vocab], np.int64)
        base = model.hparams

        def scores_for(w, model=model, base=base):
            model.hparams = dataclasses.replace(base, similar_genre_weight=w)
            return dot_scores(model.similarity_vectors().numpy()[:num_rows])

        def served(w, model=model, base=base, model_valid=model_valid):
            model.hparams = dataclasses.replace(base, similar_genre_weight=w)
            with tempfile.TemporaryDirectory() as tmp:
                export_model(model, tft_output, model_valid, tmp, top_k=K)
                loaded = tf.saved_model.load(tmp)
                out = loaded.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([rows.ids[title_row - 1]]))
                return [_title(i) for i in out[protocol.RECOMMEND_ITEM_IDS].numpy()[0]]

        measure(family, scores_for, seconds, served)

    started = time.monotonic()
    knn = item_knn_weights(views["train"], num_rows)
    knn = np.asarray(knn.todense() if hasattr(knn, "todense") else knn, np.float32)
    genres_unit = unit_rows(multi_hot)
    seconds = time.monotonic() - started
    # ItemKNN's item-item cosine, blended with the genre cosine as the families' vectors are.
    measure("item_knn", lambda w: (lambda r: (knn[r] + w * (genres_unit[r] @ genres_unit.T)) / (1.0 + w)), seconds)

    meta = {"command": "python -m bench.similar " + " ".join(argv if argv is not None else sys.argv[1:]),
            "data": "MovieLens ml-latest-small, hash split", "seed": args.seed, "title": args.title,
            "min_count": args.min_count, "machine": common.machine()}
    columns = ["model", "similar_genre_weight", "chosen", "eval_hr_at_10", "test_hr_at_10",
               "genre_jaccard_at_10", "children_animation_share", "eval_queries", "train_seconds"]
    markdown = "\n".join([
        "# Similar items: learned vectors blended with genre sets (MovieLens ml-latest-small, hash split)",
        "",
        common.md_table(results, columns),
        "",
        "`similar_genre_weight` w: scores (cos(vectors) + w cos(genres)) / (1 + w). `chosen`: the best",
        "eval item-to-item HR@10 (query: the user's most recent liked training item; hit: a liked",
        "target among its 10 most similar); the test split is only reported. Genre Jaccard@10 over",
        f"the {len(frequent)} items with at least {args.min_count} training interactions; children/animation",
        "share over the Children-and-Animation films among them.",
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


def _title_row(title: str, rows: ItemRows) -> int:
    import csv

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "movielens-small",
                        "movies.csv")
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            _TITLES[r["movieId"].encode()] = r["title"]
    wanted = [i for i, t in _TITLES.items() if t == title]
    if not wanted:
        raise SystemExit(f"--title {title!r}: no such title in {path}")
    row = int(rows.rows([wanted[0]])[0])
    return row if 0 < row <= len(rows.ids) else 0


def _title(item_id) -> str:
    item_id = item_id if isinstance(item_id, bytes) else str(item_id).encode()
    return _TITLES.get(item_id, item_id.decode())


if __name__ == "__main__":
    sys.exit(main())

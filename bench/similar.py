"""Similar items: how much of the item-feature-set cosine each family's `similar_items` blends in.

`similar_items` scores (cos(learned item vectors) + w * cos(feature sets)) / (1 + w)
(`models.base.RecModel.similarity_vectors`, w = the family's `similar_category_weight`), the
sets being the values of the description's multi-valued item feature (MovieLens: the
genres; `--feature` names another categorical item feature). Each family is trained on the
hash split once per seed of `--seeds`; the ItemKNN peer (cosine of item columns of the
training user x item matrix, blended with the set cosine the same way) is deterministic and
runs once. Per model:

- item-to-item HR@10: for each user with a training item of the strongest behavior
  (MovieLens: liked) and a target of the split, the query is the user's most recent such
  training item; a hit when one of its 10 most similar items is a target.
- w is chosen on the eval split by the mean over seeds of eval HR@10, with
  `bench.common.widening_search` over an additive knob (`weight_knob`): the first grid, then
  past its top edge by `WEIGHT_STEP` while the choice sits there, up to `WEIGHT_HIGH` (w = 0,
  the learned cosine alone, is the lower bound). A w costs no training, so the search is
  wide. The test split is only reported: each evaluated w's test HR@10 (seed mean and std),
  and each test query's hit per (model, w, seed) in `<out>/similar_runs.json`.
- set Jaccard@10: mean Jaccard of the feature sets of each item with at least
  `--min_count` training interactions and of its 10 most similar items (training data
  only: what the list looks like, not whether it is right).
- focus share: over the items carrying every `--focus` value (default Children and
  Animation) with at least `--min_count` training interactions, the share of their 10 most
  similar items carrying one of them.
- paired comparisons on test HR@10 (`bench.common.compare` over the test queries, each
  side's seed mean ± std and the paired bootstrap interval): each family at its chosen w
  against ItemKNN at its chosen w, and each model at its chosen w against its own w = 0.

The chosen w is exported with the first seed's family (`export_model`) and the served
`similar_items` answers `--title` (an item whose `--title_column` in the description's item
table is that text), so the quoted list is the signature's own. Writes `similar.json`,
`similar_runs.json` and `similar.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

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
SEEDS = (42, 43, 44)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)  # the first grid of w
# Past the first grid's top, w grows by WEIGHT_STEP up to WEIGHT_HIGH; w = 0 is the low bound.
WEIGHT_STEP, WEIGHT_HIGH = 0.5, 20.0
WEIGHT_WHY = ("w = 0 is the learned cosine alone; at w = 20 the learned cosine carries 1/21 of the score, "
              "the feature-set cosine all but alone")
EVALUATIONS = 60  # the most w one model's search evaluates: past the bound's 44, so the bound stops it first
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


def query_hits(neighbours: np.ndarray, targets: Sequence[set]) -> np.ndarray:
    """[queries] 1 where a query's neighbours hold one of its targets, else 0."""
    return np.asarray([int(bool(set(n.tolist()) & t)) for n, t in zip(neighbours, targets)], np.int64)


def hit_rate(neighbours: np.ndarray, targets: Sequence[set]) -> float:
    return float(np.mean(query_hits(neighbours, targets))) if targets else 0.0


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


# A model's blended similarity: w -> (rows -> [len(rows), items] scores), one per seed.
Scorer = Callable[[float], Callable[[np.ndarray], np.ndarray]]


def weight_knob(values: Sequence[float] = WEIGHTS) -> common.Knob:
    """The searched `similar_category_weight`: additive (w = 0 is a value, which a geometric
    knob cannot hold), widened past the top by `WEIGHT_STEP` up to `WEIGHT_HIGH`."""
    return common.Knob("similar_category_weight", tuple(values), common.ADDITIVE, WEIGHT_STEP, low=0.0,
                       high=WEIGHT_HIGH, why=WEIGHT_WHY)


def weight_key(w: float) -> str:
    """A w as a runs-file key ("0", "0.2", "1.5")."""
    return f"{w:g}"


def measure_model(model: str, scorers: Sequence[Scorer], seeds: Sequence[Optional[int]], queries: Dict[str, Any],
                  valid: np.ndarray, frequent: np.ndarray, multi_hot: np.ndarray, focus: np.ndarray,
                  train_seconds: Sequence[float], knob: common.Knob,
                  log: Callable[[str], None] = lambda line: None):
    """Chooses a model's w on eval (mean over seeds of eval HR@10, `common.widening_search`)
    and measures every evaluated w on test: (result rows, the model's runs entry with each
    test query's hit per w and seed, the search).

    Args:
      model: its name.
      scorers: one per seed (ItemKNN: one).
      seeds: the seed of each scorer (None: a deterministic model's one run).
      queries: split -> (query rows, target sets), for "eval" and "test".
      valid: which item rows may be neighbours.
      frequent, multi_hot, focus: the set measures' items, feature sets and focus columns.
      train_seconds: the training time of each seed.
      knob: the searched w (`weight_knob`).
      log: called with one line per evaluated w.
    """
    if len(scorers) != len(seeds):
        raise ValueError(f"{model}: {len(scorers)} scorers for seeds {list(seeds)}")

    def eval_hr(setting: Dict[str, Any]) -> float:
        w = setting[knob.name]
        return float(np.mean([hit_rate(top_similar(s(w), queries["eval"][0], valid), queries["eval"][1])
                              for s in scorers]))

    tuned = common.widening_search(eval_hr, [knob], max_evaluations=EVALUATIONS,
                                   log=lambda line: log(f"{model}: {line}"))
    chosen = tuned.chosen[knob.name]
    rows, hits = [], {}
    for point in sorted(tuned.points, key=lambda p: p[knob.name]):
        w = point[knob.name]
        per_seed, measures = [], []
        for s in scorers:
            scores_of = s(w)
            per_seed.append(query_hits(top_similar(scores_of, queries["test"][0], valid), queries["test"][1]))
            measures.append(set_measures(top_similar(scores_of, frequent, valid), frequent, multi_hot, focus))
        hits[weight_key(w)] = [h.tolist() for h in per_seed]
        test = common.mean_std([float(h.mean()) for h in per_seed])
        rows.append({
            "model": model, "similar_category_weight": w, "chosen": w == chosen,
            "eval_hr_at_10": round(point["score"], 4),
            "test_hr_at_10": round(test["mean"], 4),
            "test_hr_at_10_std": None if test["std"] is None else round(test["std"], 4),
            "test_hr_at_10_per_seed": [round(float(h.mean()), 4) for h in per_seed],
            "set_jaccard_at_10": round(float(np.mean([m["set_jaccard_at_10"] for m in measures])), 4),
            "focus_share": round(float(np.mean([m["focus_share"] for m in measures])), 4),
            "focus_items": measures[0]["focus_items"],
            "seeds": len(seeds), "eval_queries": len(queries["eval"][0]), "test_queries": len(queries["test"][0]),
            "train_seconds": round(float(np.mean(train_seconds)), 1),
            **({"tuning_status": tuned.status_text()} if w == chosen else {}),
        })
    entry = {"seeds": list(seeds), "chosen": chosen, "status": tuned.status_text(), "tuning": tuned.to_dict(),
             "train_seconds": [round(float(t), 1) for t in train_seconds], "test_hits": hits}
    return rows, entry, tuned


def write_runs(out_dir: str, runs: Dict[str, Any]) -> str:
    """`<out>/similar_runs.json` (through a temporary file and a rename); returns its path."""
    import os

    path = os.path.join(out_dir, "similar_runs.json")
    common.atomic_write(path, json.dumps(runs) + "\n")
    return path


def paired_lines(runs: Dict[str, Any], peer: str = "item_knn") -> List[str]:
    """The paired comparisons on test HR@10 (`common.compare` over the test queries): each
    family at its chosen w against `peer` at its chosen w, and each model at its chosen w
    against its own w = 0.

    Args:
      runs: the runs file's content (`measure_model`'s entries under "models").
      peer: the one-run peer's name (absent: no family-vs-peer lines).
    """
    models = runs["models"]

    def measured(model: str, w: float) -> common.Measured:
        per_seed = models[model]["test_hits"][weight_key(w)]
        return common.Measured.of(f"{model} (w={weight_key(w)})", [common.mean_statistic(h) for h in per_seed],
                                  len(per_seed[0]))

    lines = []
    if peer in models:
        at_peer = measured(peer, models[peer]["chosen"])
        for model in [m for m in models if m != peer]:
            lines.append("- " + common.compare(measured(model, models[model]["chosen"]), at_peer,
                                               "test queries").text())
    for model, entry in models.items():
        if entry["chosen"] == 0:
            lines.append(f"- {model}: its chosen w is 0, which is the w = 0 it would be compared with")
            continue
        lines.append("- " + common.compare(measured(model, entry["chosen"]), measured(model, 0.0),
                                           "test queries").text())
    return lines


def chosen_table(results: Sequence[Dict[str, Any]]) -> str:
    """One row per model at its chosen w: eval and test HR@10 (seed mean ± std) and the knob's status."""
    lines = ["| model | chosen w | eval HR@10 (seed mean) | test HR@10 mean ± std | seeds | w's status |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if r["chosen"]:
            lines.append(f"| {r['model']} | {weight_key(r['similar_category_weight'])} | {r['eval_hr_at_10']:.4f} | "
                         f"{_mean_std(r)} | {r['seeds']} | {r['tuning_status']} |")
    return "\n".join(lines)


def _mean_std(row: Dict[str, Any]) -> str:
    std = row.get("test_hr_at_10_std")
    return f"{row['test_hr_at_10']:.4f}" + ("" if std is None else f" ± {std:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mf,mf_history,mf_dnn")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)), help="the first grid of w")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="each family is trained once per seed")
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
    knob = weight_knob([float(w) for w in args.weights.split(",")])
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not seeds:
        raise SystemExit("--seeds: give at least one seed")
    run_started = time.monotonic()
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
    runs: Dict[str, Any] = {"k": K, "seeds": seeds, "eval_choice": "mean over seeds of eval HR@10",
                            "test_query_items": [rows.ids[q - 1].decode() if isinstance(rows.ids[q - 1], bytes)
                                                 else str(rows.ids[q - 1]) for q in queries["test"][0]],
                            "models": {}}
    lists: Dict[str, List[str]] = {}
    title_row = _title_row(args.title, args.title_column, description, stages.config.data_dir, rows)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    def measure(model: str, scorers: Sequence[Scorer], model_seeds: Sequence[Optional[int]], seconds: Sequence[float],
                served=None) -> None:
        model_rows, entry, tuned = measure_model(model, scorers, model_seeds, queries, valid, frequent, multi_hot,
                                                 focus, seconds, knob, log)
        results.extend(model_rows)
        runs["models"][model] = entry
        w = tuned.chosen[knob.name]
        if title_row:
            lists[model] = (served(w) if served else
                            [_title(rows.ids[t - 1]) for t in top_similar(scorers[0](w), np.asarray([title_row]),
                                                                            valid)[0]])

    for family in [f for f in args.families.split(",") if f]:
        view = F.INTERACTION_VIEW
        hparams = {"max_epochs": args.max_epochs} if args.max_epochs else {}
        scorers, seconds, first = [], [], None
        for seed in seeds:
            config = common.train_config(stages, family, hparams=hparams,
                                         tasks=common.task_names(stages.config, family), seed=seed, top_k=K)
            started = time.monotonic()
            model, _, model_valid = train(config, stages.files(view, "train"), stages.files(view, "eval"),
                                          stages.transform_graph)
            seconds.append(time.monotonic() - started)
            log(f"{family} seed {seed}: trained in {seconds[-1]:.0f} s")
            base = model.hparams

            def scores_for(w, model=model, base=base):
                model.hparams = dataclasses.replace(base, similar_category_weight=w)
                return dot_scores(model.similarity_vectors().numpy()[:num_rows])

            scorers.append(scores_for)
            if first is None:
                first = (model, base, model_valid)

        def served(w, model=first[0], base=first[1], model_valid=first[2]):
            model.hparams = dataclasses.replace(base, similar_category_weight=w)
            with tempfile.TemporaryDirectory() as tmp:
                export_model(model, tft_output, model_valid, tmp, top_k=K)
                loaded = tf.saved_model.load(tmp)
                out = loaded.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([rows.ids[title_row - 1]]))
                return [_title(i) for i in out[protocol.RECOMMEND_ITEM_IDS].numpy()[0]]

        measure(family, scorers, seeds, seconds, served)
        del scorers, first

    started = time.monotonic()
    knn = item_knn_weights(views["train"], num_rows)
    knn = np.asarray(knn.todense() if hasattr(knn, "todense") else knn, np.float32)
    sets_unit = unit_rows(multi_hot)
    seconds = time.monotonic() - started
    # ItemKNN's item-item cosine, blended with the set cosine as the families' vectors are;
    # deterministic: one run.
    measure("item_knn", [lambda w: (lambda r: (knn[r] + w * (sets_unit[r] @ sets_unit.T)) / (1.0 + w))],
            [None], [seconds])

    meta = {"command": common.command_line("bench.similar", argv),
            "data": common.data_label(stages.config), "feature": feature.name, "focus": args.focus,
            "seeds": seeds, "title": args.title, "min_count": args.min_count, "machine": common.machine()}
    runs["meta"] = {k: v for k, v in meta.items() if k != "machine"}
    write_runs(args.out, runs)
    columns = ["model", "similar_category_weight", "chosen", "eval_hr_at_10", "test HR@10 mean ± std",
               "set_jaccard_at_10", "focus_share", "seeds", "train_seconds"]
    table = [{**r, "test HR@10 mean ± std": _mean_std(r)} for r in results]
    knob_text = (f"first grid {', '.join(weight_key(w) for w in knob.values)}; past its top edge w grows by "
                 f"{weight_key(WEIGHT_STEP)} while the choice sits there, up to {weight_key(WEIGHT_HIGH)} "
                 f"({WEIGHT_WHY}); at most {EVALUATIONS} w per model")
    markdown = "\n".join([
        f"# Similar items: learned vectors blended with {feature.name} sets ({meta['data']})",
        "",
        "## Paired comparisons",
        "",
        "Test item-to-item HR@10, each model at its eval-chosen w; each side's seed mean ± std and the paired "
        f"{common.LEVEL:.0%} bootstrap interval of the difference over the test queries "
        f"({common.BOOTSTRAP_RESAMPLES} resamples, the same for every model; `bench.common.compare`). ItemKNN is "
        "deterministic and ran once (no seed std).",
        "",
        *paired_lines(runs),
        "",
        "## Chosen w per model",
        "",
        chosen_table(results),
        "",
        "## Every evaluated w",
        "",
        common.md_table(table, columns),
        "",
        f"`similar_category_weight` w: scores (cos(vectors) + w cos({feature.name})) / (1 + w). Each family is "
        f"trained once per seed ({', '.join(map(str, seeds))}); ItemKNN once. `chosen`: the best mean over seeds of "
        f"eval item-to-item HR@10 (query: the user's most recent {spec.behaviors[-1]} training item; hit: a",
        "target among its 10 most similar), searched by `bench.common.widening_search` over an additive w: "
        f"{knob_text}. The test split is only reported; each test query's hit per (model, w, seed) is in "
        "`similar_runs.json`. Set Jaccard@10 and focus share are seed means: Jaccard over",
        f"the {len(frequent)} items with at least {args.min_count} training interactions; focus share over the",
        f"items among them whose {feature.name} include every one of {args.focus}. `train_seconds`: mean per seed.",
        "",
        f"`similar_items` for {args.title!r} at the chosen w (families: the seed-{seeds[0]} model's served signature):",
        "",
        *[f"- {model}: " + "; ".join(titles) for model, titles in lists.items()],
        "",
        f"Wall time of the whole run: {time.monotonic() - run_started:.0f} s.",
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

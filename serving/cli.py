"""In-process commands on a pushed model: similar items, top-K for a history, an explanation.

    python -m serving.cli --model two_tower similar --title "PART OF A TITLE"
    python -m serving.cli --model two_tower recommend --items 1,260,1196 [--behaviors B1,B2,B3]
    python -m serving.cli --model two_tower recommend --items 1,260 --exclude 1196,2571   # never these either
    python -m serving.cli --model review_mt explain --user U --item I \
        [--text user_review_docs="an earlier review"]... [--items 1,50]

The model is the newest version of `--model` under `--serving_base` (what `make run`
pushed). Item ids are shown with their titles from the items table of the dataset the
model was trained on (the description in its model record; `--dataset` names another,
`--title_column` the column; see serving.client.item_titles). Behaviors are the
dataset's; an item without one gets the description's default behavior.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

from contract import protocol
from pipeline.configs import PipelineConfig
from serving.client import add_explain_arguments, explain_example, item_titles, print_explanation


def model_titles(path: str, dataset: Optional[str] = None, column: str = "") -> Dict[str, str]:
    """Item titles of a pushed model: from `dataset` when given, else from the description in
    the model's record (empty when neither gives an items table)."""
    if dataset:
        return item_titles(dataset, column)
    from export.signatures import read_model_record

    try:
        description = read_model_record(path).get("description")
    except FileNotFoundError:
        return {}
    return item_titles(description, column) if description else {}


def newest_version(serving_base: str, model: str) -> str:
    model_dir = os.path.join(serving_base, model)
    versions = [d for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(model_dir) else []
    if not versions:
        raise SystemExit(f"no pushed version of model {model!r} under {model_dir}; run `make run` first")
    return os.path.join(model_dir, max(versions, key=int))


def find_item(titles: Dict[str, str], title: str) -> str:
    exact = [i for i, t in titles.items() if t.lower() == title.lower()]
    if exact:
        return exact[0]
    partial = [i for i, t in titles.items() if title.lower() in t.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise SystemExit(f"no item title matches {title!r}" + ("" if titles else " (no titles: pass --dataset)"))
    shown = ", ".join(titles[i] for i in partial[:5])
    raise SystemExit(f"{len(partial)} titles match {title!r} ({shown}, ...): be more specific")


def _print_ranked(ids, scores, titles: Dict[str, str]) -> None:
    for rank, (item, score) in enumerate(zip(ids, scores), start=1):
        item = item.decode()
        print(f"  {rank:>2}. {score:8.4f}  {item:>7}  {titles.get(item, '')}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving_base", default=PipelineConfig().serving_model_dir)
    parser.add_argument("--model", default="two_tower")
    parser.add_argument("--dataset", default=None, help="item titles from this dataset's items table (a shipped "
                                                        "description's name or a file; default: the model's)")
    parser.add_argument("--title_column", default="", help="the items table's title column (default: its first "
                                                           "column that is not the key)")
    commands = parser.add_subparsers(dest="command", required=True)
    similar = commands.add_parser("similar", help="items closest to one item by learned vector")
    similar.add_argument("--title", help="item title (exact or a unique part)")
    similar.add_argument("--item", help="item id")
    recommend = commands.add_parser("recommend", help="top-K items for a history")
    recommend.add_argument("--items", required=True, help="comma-separated item ids, oldest first")
    recommend.add_argument("--behaviors", default="", help="comma-separated behaviors (default: the dataset's "
                                                           "default behavior)")
    recommend.add_argument("--exclude", default="",
                           help="comma-separated item ids never to return besides --items (e.g. everything the "
                                "user rated when --items holds only the most recent); uses recommend_excluding")
    explain = commands.add_parser("explain", help="the generated explanation and the rating of one (user, item)")
    add_explain_arguments(explain)
    args = parser.parse_args(argv)
    example = explain_example(parser, args) if args.command == "explain" else None

    import tensorflow as tf  # after argument errors, which need no TensorFlow

    path = newest_version(args.serving_base, args.model)
    titles = model_titles(path, args.dataset, args.title_column)
    model = tf.saved_model.load(path)
    print(f"model {args.model} from {path}")
    if args.command == "explain":
        if protocol.EXPLAIN not in model.signatures:
            raise SystemExit(f"model {args.model!r} does not serve {protocol.EXPLAIN} (its family generates no "
                             f"text); try --model review_mt or nor_reviews")
        print(f"user {args.user}, item {args.item} {titles.get(args.item, '')}".rstrip())
        outputs = model.signatures[protocol.EXPLAIN](examples=tf.constant([example]))
        for row in protocol.explanations({k: v.numpy() for k, v in outputs.items()}):
            print_explanation(args.model, row)
        return 0
    if args.command == "similar":
        item = args.item or (find_item(titles, args.title) if args.title else None)
        if item is None:
            parser.error("similar needs --title or --item")
        print(f"items most similar to {item} {titles.get(item, '')}:")
        if protocol.SIMILAR_ITEMS not in model.signatures:
            raise SystemExit(f"model {args.model!r} does not serve {protocol.SIMILAR_ITEMS}")
        out = model.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([item.encode()]))
    else:
        items = [i.strip() for i in args.items.split(",") if i.strip()]
        behaviors = [b.strip() for b in args.behaviors.split(",")] if args.behaviors else []
        if behaviors and len(behaviors) != len(items):
            parser.error(f"--behaviors has {len(behaviors)} values for {len(items)} items")
        behaviors = behaviors or [""] * len(items)
        for i, b in zip(items, behaviors):
            print(f"  history: {i:>7} {b or '(default)':<9} {titles.get(i, '')}")
        if protocol.RECOMMEND not in model.signatures:
            raise SystemExit(f"model {args.model!r} does not serve {protocol.RECOMMEND} (its family cannot "
                             f"retrieve); try --model two_tower")
        inputs = {"history_item_ids": tf.constant([[i.encode() for i in items]]),
                  "history_behaviors": tf.constant([[b.encode() for b in behaviors]])}
        exclude = [i.strip() for i in args.exclude.split(",") if i.strip()]
        signature = protocol.RECOMMEND
        if exclude:
            signature = protocol.RECOMMEND_EXCLUDING
            if signature not in model.signatures:
                raise SystemExit(f"model {args.model!r} at {path} has no {signature} (exported before it existed); "
                                 "re-export it, or put every item to exclude in --items")
            inputs[protocol.EXCLUDE_ITEM_IDS] = tf.constant([[i.encode() for i in exclude]])
            print(f"  excluded too: {', '.join(exclude)}")
        out = model.signatures[signature](**inputs)
        print("recommended:")
    _print_ranked(out["item_ids"].numpy()[0], out["scores"].numpy()[0], titles)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""In-process commands on a pushed model: similar items, and top-K for a history.

    python -m serving.cli --model two_tower similar --title "Toy Story (1995)"
    python -m serving.cli --model two_tower recommend --items 1,260,1196 --behaviors liked,liked,disliked
    python -m serving.cli --model two_tower recommend --items 1,260 --exclude 1196,2571   # never these either

The model is the newest version of `--model` under `--serving_base` (what `make run`
pushed). Item ids are shown with their MovieLens titles.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Dict, List, Optional

from contract import protocol
from pipeline.configs import REPO_ROOT, PipelineConfig

MOVIES = REPO_ROOT / "data" / "movielens-small" / "movies.csv"


def load_titles(path=MOVIES) -> Dict[str, str]:
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["movieId"]: row["title"] for row in csv.DictReader(f)}


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
        raise SystemExit(f"no movie title matches {title!r}")
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
    commands = parser.add_subparsers(dest="command", required=True)
    similar = commands.add_parser("similar", help="items closest to one item by learned vector")
    similar.add_argument("--title", help="movie title (exact or a unique part)")
    similar.add_argument("--item", help="item id")
    recommend = commands.add_parser("recommend", help="top-K items for a history")
    recommend.add_argument("--items", required=True, help="comma-separated item ids, oldest first")
    recommend.add_argument("--behaviors", default="", help="comma-separated behaviors (default: liked)")
    recommend.add_argument("--exclude", default="",
                           help="comma-separated item ids never to return besides --items (e.g. everything the "
                                "user rated when --items holds only the most recent); uses recommend_excluding")
    args = parser.parse_args(argv)

    import tensorflow as tf  # after argument errors, which need no TensorFlow

    titles = load_titles()
    path = newest_version(args.serving_base, args.model)
    model = tf.saved_model.load(path)
    print(f"model {args.model} from {path}")
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

"""Checks that the data can feed a description, before any Beam work, and after the examples are built.

`preflight(description, data_dir)` (run by `run_ingest` before its pipeline, and
callable by a runner before it builds one) checks that every declared file exists,
that each file has the declared columns (a missing one names the file, its columns and
the closest name), that no table is empty, and that every behavior a label, a task or
the anchor asks for occurs in the data (only the behavior column, or the rating column
when behaviors come from the rating, is read, and only until every such behavior is
seen). `check_training_positives` is the check after the examples are built: a declared
task whose label has no positive in the training split stops the ingest before anything
is published.
"""

from __future__ import annotations

import collections
import os
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

from components.example_gen import parsing, readers
from contract import datasets
from contract import description as desc

INTERACTIONS = "interactions"
ITEMS = parsing.ITEMS
USERS = parsing.USERS


class UnfedTaskError(ValueError):
    """A task (or label) the data cannot feed: names it and why."""


class Inputs(NamedTuple):
    """What preflight found: the data directory and the files of each table by kind."""

    data_dir: str
    files: Dict[str, List[str]]


def _description(ref: datasets.DatasetRef) -> desc.Description:
    return ref if isinstance(ref, desc.Description) else datasets.dataset_spec(ref).description


def _tables(d: desc.Description) -> List[Tuple[str, desc.Source, Sequence[str], Sequence[str]]]:
    """(kind, source, columns, description keys of the columns) of each declared table."""
    inter = parsing.InteractionParser(d)
    out = [(INTERACTIONS, d.interactions, inter.columns, inter.where)]
    for kind in (ITEMS, USERS):
        if (d.items if kind == ITEMS else d.users) is not None:
            table = parsing.TableParser(d, kind)
            out.append((kind, table.source, table.columns, table.where))
    return out


def preflight(description: datasets.DatasetRef, data_dir: str) -> Inputs:
    """Checks the files under `data_dir` against the description; returns the files by kind.

    Raises FileNotFoundError (a missing directory or file, a glob without match),
    ValueError (an unreadable or unknown encoding, a missing column, an empty table) or
    UnfedTaskError (a behavior a label / task / the anchor asks for never occurs).

    Args:
      description: the dataset (a description, its mapping, a shipped name or a file).
      data_dir: the directory the description's paths are relative to.
    """
    d = _description(description)
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory of dataset {d.name!r} not found: {data_dir!r}")
    files: Dict[str, List[str]] = {}
    for kind, source, columns, where in _tables(d):
        readers.check_encoding(source, f"{kind}.csv.encoding")
        paths = readers.expand_files(source, data_dir, kind)
        for path in paths:
            readers.check_columns(path, source, columns, where)
        if not any(readers.has_records(path, source) for path in paths):
            raise ValueError(f"the {kind} table of dataset {d.name!r} is empty: {', '.join(paths)} "
                             f"{'holds' if len(paths) == 1 else 'hold'} no data rows")
        files[kind] = paths
    check_behaviors(d, files[INTERACTIONS])
    return Inputs(data_dir, files)


def needed_behaviors(d: desc.Description) -> Dict[str, List[str]]:
    """behavior -> what asks for it (the anchor, behavior labels with the tasks on them,
    retrieval target behaviors, next-behavior tasks)."""
    needs: Dict[str, List[str]] = collections.defaultdict(list)
    if d.anchor:
        needs[d.anchor].append(f"the example anchor (interactions.examples.anchor: {d.anchor})")
    for label in d.labels:
        if label.source == desc.BEHAVIOR:
            tasks = [t.name for t in d.tasks if label.name in (t.label, t.condition)]
            who = f"task {tasks[0]!r} (label {label.name!r})" if len(tasks) == 1 else (
                f"tasks {tasks} (label {label.name!r})" if tasks else f"label {label.name!r}")
            needs[label.behavior].append(who)
    for task in d.tasks:
        for behavior in task.target_behaviors:
            needs[behavior].append(f"task {task.name!r} (target_behaviors)")
        if task.kind == "next_behavior" and task.behavior:
            needs[task.behavior].append(f"task {task.name!r} (next behavior)")
    return dict(needs)


def check_behaviors(d: desc.Description, paths: Sequence[str]) -> None:
    """UnfedTaskError when a behavior that `needed_behaviors` lists never occurs in the log.

    Reads only the behavior column (or the rating column when behaviors come from the
    rating), and stops as soon as every needed behavior has been seen.
    """
    needs = needed_behaviors(d)
    if not needs or not (d.behavior_column or d.behavior_bins):
        return  # one behavior: it occurs on every row (an empty log is its own error)
    column = d.behavior_column or d.rating
    counts: Dict[str, int] = collections.Counter()
    missing = set(needs)
    memo: Dict[object, str] = {}
    for path in paths:
        for _, values in readers.read_records(path, d.interactions, [column]):
            if values.__class__ is readers.RowError:
                continue
            raw = values[0]
            if raw not in memo:
                memo[raw] = _behavior_of(d, raw)
            behavior = memo[raw]
            counts[behavior] += 1
            missing.discard(behavior)
            if not missing:
                return
    seen = ", ".join(f"{b}: {n}" for b, n in counts.most_common() if b) or "none"
    source = f"column {column!r}" if d.behavior_column else f"the ratings (column {column!r}) by behavior_bins"
    lines = [f"{who} cannot be fed: behavior {b!r} never occurs in {source} of {', '.join(paths)}"
             for b in sorted(missing) for who in needs[b]]
    raise UnfedTaskError(f"dataset {d.name!r}: " + "; ".join(lines) + f" (behaviors seen: {seen}); "
                         f"fix the data or remove what asks for it from the description")


def _behavior_of(d: desc.Description, raw) -> str:
    if d.behavior_column:
        return parsing.as_text(raw)
    try:
        rating = parsing.as_number(raw)
    except (TypeError, ValueError):
        return ""
    return d.rating_behavior(float(rating)) if rating is not None else ""


def check_training_positives(spec: datasets.DatasetSpec, ingest_report: Mapping[str, object]) -> None:
    """UnfedTaskError when a declared task cannot be trained on the examples built: a binary
    task whose label has no positive in the training split, or any task without training
    examples.

    Args:
      spec: the dataset.
      ingest_report: the report of the ingest (`positives_written`, `label_positives`).
    """
    train = int(ingest_report["positives_written"]["train"])
    positives = ingest_report["label_positives"]["train"]
    problems = []
    for task in spec.tasks:
        if not train:
            problems.append(f"task {task.name!r}: the training split has no example")
        elif task.kind == desc.BINARY and not positives.get(task.label, 0):
            problems.append(f"task {task.name!r}: its label {task.label!r} has no positive example among the "
                            f"{train} training examples")
    if problems:
        raise UnfedTaskError(f"dataset {spec.name!r}: the data cannot feed " + "; ".join(problems)
                             + f" (training positives per label: {dict(positives) or 'none'}); nothing was "
                             f"published")

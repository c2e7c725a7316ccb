"""What every benchmark shares: the pipeline's data stages, trained families, result files.

`data_stages` runs ExampleGen .. Transform (no families) once into an output directory
and reuses it when it is already there with the same configuration, so a benchmark and
the tuning command read exactly the rows the pipeline writes. The data is a dataset
description (a shipped name or a file) and its data directory, as the pipeline takes
them: `add_dataset_arguments` gives a benchmark the runners' options.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.machine import cpu_model  # noqa: E402
from common.io_utils import atomic_write  # noqa: E402
from contract import features as F  # noqa: E402
from pipeline.configs import REPO_ROOT, PipelineConfig, add_dataset_arguments, dataset_overrides  # noqa: E402,F401

RESULTS_DIR = os.path.join(str(REPO_ROOT), "bench", "results")
DEFAULT_WORK_DIR = os.path.join(str(REPO_ROOT), "outputs", "bench")


@dataclasses.dataclass
class DataStages:
    """Where the data stages of one configuration wrote their outputs."""

    config: PipelineConfig
    raw_examples: str
    user_examples: str
    transformed_examples: str
    transform_graph: str
    seconds: float

    def files(self, view: str, split: str) -> List[str]:
        """File pattern list of one split of a view, as the Trainer receives it."""
        base = self.user_examples if view == F.USER_VIEW else self.transformed_examples
        return [os.path.join(base, f"Split-{split}", "*")]

    def raw_files(self, view: str, split: str) -> List[str]:
        base = self.user_examples if view == F.USER_VIEW else self.raw_examples
        return sorted(glob.glob(os.path.join(base, f"Split-{split}", "*")))


def task_names(config: PipelineConfig, family: str) -> Tuple[str, ...]:
    """The tasks the pipeline's Trainer gives this family on this data (without sampled
    negatives, no task on the implicit label, whose labels would all be 1)."""
    from pipeline.model_stages import family_tasks

    return tuple(t.name for t in family_tasks(config, family))


def train_config(stages: DataStages, family: str, **overrides: Any):
    """The Trainer's configuration of a family on the data stages' rows (the description, the
    split and max_history of `stages.config`), with TrainConfig fields `overrides` (hparams,
    seed, tasks, top_k)."""
    from pipeline.model_stages import train_config as pipeline_train_config

    return pipeline_train_config(stages.config, family, **overrides)


def data_stages(work_dir: str = DEFAULT_WORK_DIR, **config_overrides: Any) -> DataStages:
    """Runs (or reuses) the data stages of a PipelineConfig with these overrides (dataset,
    data_dir, split, ...; unset: the description's), resolved."""
    from pipeline import local_runner, report

    config = dataclasses.replace(PipelineConfig(), families=(), **config_overrides).resolved()
    key = json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k not in ("output_dir",)},
                     sort_keys=True, default=str)
    name = f"{config.dataset_name}-{config.split}-{hashlib.md5(key.encode()).hexdigest()[:8]}"
    config = dataclasses.replace(config, output_dir=os.path.join(work_dir, name))
    stamp = os.path.join(config.output_dir, "data_stages.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            saved = json.load(f)
        return DataStages(config=config, seconds=saved["seconds"], **saved["paths"])
    started = time.monotonic()
    local_runner.run(config, progress_out=sys.stderr)
    seconds = time.monotonic() - started
    found = report.output_dirs(config.pipeline_root)
    paths = {
        "raw_examples": found["InteractionExampleGen"]["examples"],
        "user_examples": found["InteractionExampleGen"]["user_examples"],
        "transformed_examples": found["Transform"]["transformed_examples"],
        "transform_graph": found["Transform"]["transform_graph"],
    }
    atomic_write(stamp, json.dumps({"seconds": seconds, "paths": paths, "config": key}, indent=2))
    return DataStages(config=config, seconds=seconds, **paths)


def stages_of_args(args, **overrides: Any) -> DataStages:
    """The data stages of a benchmark's dataset options (add_dataset_arguments) and
    `args.work_dir`; `overrides` win over the options (e.g. the split a protocol needs)."""
    return data_stages(args.work_dir, **{**dataset_overrides(args), **overrides})


def data_label(config: PipelineConfig) -> str:
    """`name (file), split S`: which data a result file's numbers come from."""
    config = config.resolved()
    return f"{config.describe_dataset()}, {config.split} split"


def read_table(source, data_dir: str):
    """A description's table (`contract.description.Source`: its files under `data_dir`) as a
    pandas DataFrame of strings, read as its format says (csv / tsv with delimiter, header,
    quoting and encoding; JSON lines; Parquet)."""
    import pandas as pd

    from contract import description as desc

    paths = sorted(p for pattern in source.files for p in glob.glob(os.path.join(data_dir, pattern)))
    if not paths:
        raise FileNotFoundError(f"no file matches {list(source.files)} in {data_dir}")
    frames = []
    for path in paths:
        if source.format in (desc.CSV, desc.TSV):
            frames.append(pd.read_csv(path, sep=source.delimiter, header=0 if source.header else None,
                                      names=list(source.columns) or None, quotechar=source.quotechar,
                                      encoding=source.encoding, dtype=str, keep_default_na=False))
        elif source.format == desc.JSONL:
            frames.append(pd.read_json(path, lines=True, dtype=False, encoding=source.encoding).astype(str))
        else:
            frames.append(pd.read_parquet(path).astype(str))
    return pd.concat(frames, ignore_index=True)


def commit() -> str:
    """The repository's commit (`git rev-parse --short HEAD`), `+ changes` when the work tree
    differs from it; 'unknown' outside a git work tree."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + changes" if dirty else "")


def machine() -> Dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(load[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_results(name: str, rows: Sequence[Dict[str, Any]], markdown: str, meta: Dict[str, Any],
                  out_dir: str = RESULTS_DIR) -> None:
    """`<out>/<name>.json` (the rows) and `<out>/<name>.md` (table + method)."""
    atomic_write(os.path.join(out_dir, f"{name}.json"), json.dumps(list(rows), indent=2) + "\n")
    header = ["", "Produced by: `" + meta["command"] + "`"] + (
        [f"Commit: {meta['commit']}"] if meta.get("commit") else []) + [f"Machine: {meta['machine']}", ""]
    atomic_write(os.path.join(out_dir, f"{name}.md"), markdown.rstrip() + "\n" + "\n".join(header))


def extend_results(into: Dict[str, Any], results: Dict[str, Any]) -> None:
    """Adds a run's per-seed values, {dataset: {model: {field: [values] or value}}}, to
    `into`: lists are concatenated (seeds of several processes), other values replaced."""
    for dataset, per in results.items():
        for model, entry in per.items():
            mine = into.setdefault(dataset, {}).setdefault(model, {})
            for field, values in entry.items():
                if isinstance(values, list):
                    mine.setdefault(field, []).extend(values)
                else:
                    mine[field] = values


def merged_runs_path(paths: Sequence[str], out_dir: str, name: str) -> str:
    """`<out>/<name>_runs.json`, where a --merge of the runs files `paths` writes; an error if
    that is one of them (the merge would overwrite its own input)."""
    target = os.path.abspath(os.path.join(out_dir, f"{name}_runs.json"))
    if target in {os.path.abspath(p) for p in paths}:
        raise ValueError(f"--merge would overwrite its input {target} with the merged runs: choose another --name")
    return target


def join_results(name: str, parts: Sequence[str], out_dir: str = RESULTS_DIR) -> Optional[str]:
    """`<out>/<name>.json` and `.md` joining the result files `parts` (their rows, then their
    tables one after the other), when every part exists; returns the JSON path or None."""
    paths = [os.path.join(out_dir, f"{part}.json") for part in parts]
    if not all(os.path.exists(p) for p in paths):
        return None
    rows: List[Dict[str, Any]] = []
    sections = [f"# {name}: {', '.join(parts)}", "",
                f"The rows of {', '.join(f'`{p}.json`' for p in parts)} in one file; each part below as its "
                "benchmark wrote it (with its command).", ""]
    for part, path in zip(parts, paths):
        with open(path) as f:
            rows += json.load(f)
        with open(os.path.join(out_dir, f"{part}.md")) as f:
            sections += ["#" + line if line.startswith("#") else line for line in f.read().splitlines()] + [""]
    atomic_write(os.path.join(out_dir, f"{name}.json"), json.dumps(rows, indent=2) + "\n")
    atomic_write(os.path.join(out_dir, f"{name}.md"), "\n".join(sections).rstrip() + "\n")
    return os.path.join(out_dir, f"{name}.json")


def md_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str], digits: int = 4) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return "n/a" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> Dict[str, Optional[float]]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    # One value has no spread to report: None (written "n/a"), never 0.
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else None}

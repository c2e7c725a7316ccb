"""What every benchmark shares: the pipeline's data stages, trained families, result files,
and comparisons of two models with both their seed spread and a paired bootstrap interval.

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
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.machine import command_line, commit, cpu_model  # noqa: E402,F401
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
    key = json.dumps(data_key(config), sort_keys=True, default=str)
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


def data_key(config: PipelineConfig) -> Dict[str, Any]:
    """What the data stages' outputs depend on: the resolved config without its output
    directory and without hyperparameters (the config's and the description's), which only
    the families read."""
    key = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("output_dir",)}
    key["hparams"] = {}
    if isinstance(key.get("description"), dict):
        key["description"] = {k: v for k, v in key["description"].items() if k != "hparams"}
    return key


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
    """`<out>/<name>.json` (the rows) and `<out>/<name>.md` (table + method), the markdown ending
    with the command, the commit (this work tree's unless `meta` names one) and the machine with
    its date, which bench/render_docs.py puts at the top of the rendered page."""
    produced_at = meta.get("commit") or commit()  # before the results change the tree
    atomic_write(os.path.join(out_dir, f"{name}.json"), json.dumps(list(rows), indent=2) + "\n")
    header = ["", "Produced by: `" + meta["command"] + "`", f"Commit: {produced_at}",
              f"Machine: {meta['machine']}", ""]
    atomic_write(os.path.join(out_dir, f"{name}.md"), markdown.rstrip() + "\n" + "\n".join(header))


def written_provenance(markdown: str, source: str) -> Dict[str, str]:
    """The `command`, `commit` and `machine` that `write_results` put at the end of a page (the
    last of each), as `meta` for writing the page again; ValueError naming `source` when the
    page has no command."""
    def last(prefix: str) -> Optional[str]:
        found = [line[len(prefix):].strip() for line in markdown.splitlines() if line.startswith(prefix)]
        return found[-1] if found else None

    command = last("Produced by: ")
    if command is None:
        raise ValueError(f"{source} has no 'Produced by:' line: nothing to keep the run's command from")
    return {"command": command.strip("`"), "commit": last("Commit: "), "machine": last("Machine: ")}


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


# --------------------------------------------------------------------------
# Comparisons: seed mean ± std of each model and a paired bootstrap over test units (or, where
# only per-seed values exist, a paired t interval over seeds: seed_paired).
# --------------------------------------------------------------------------
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 7  # one set of resamples for every model scored on the same test units
LEVEL = 0.95
_MAX_CELLS = 4_000_000  # resamples x units held at once (32 MB of float64 weights)

# A statistic of one model output (one seed) under resampling: weights [r, n], each row the
# multiplicity of every test unit in one resample, -> [r] values.
Statistic = Callable[[Any], Any]


def resample_weights(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     max_cells: int = _MAX_CELLS) -> Iterator[Any]:
    """The bootstrap resamples of `n` test units (users or rows) as multiplicities, [r, n]
    chunks in order; the same (n, resamples, seed) give the same resamples, so two models
    scored on the same units are resampled together (a paired bootstrap).

    Args:
      n: test units.
      resamples: how many resamples.
      seed: the resampling seed.
      max_cells: largest chunk, in resamples x units.
    """
    import numpy as np

    if n < 1:
        raise ValueError(f"a bootstrap needs at least one test unit, got n={n}")
    rng = np.random.default_rng(seed)
    step = max(1, min(resamples, max_cells // n))
    for start in range(0, resamples, step):
        r = min(step, resamples - start)
        # One resample at a time: the draws do not depend on the chunk size.
        rows = np.stack([rng.integers(0, n, size=n) for _ in range(r)])
        flat = (rows + n * np.arange(r)[:, None]).reshape(-1)
        yield np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)


def seed_draws(statistic: Statistic, n: int, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> Any:
    """[resamples] values of `statistic` (one seed's output) on the bootstrap resamples of
    its `n` test units (`resample_weights`)."""
    import numpy as np

    return np.concatenate([np.asarray(statistic(w), dtype=np.float64).reshape(-1)
                           for w in resample_weights(n, resamples, seed)])


def point_value(statistic: Statistic, n: int) -> float:
    """The statistic on the test units themselves (every weight 1)."""
    import numpy as np

    return float(np.asarray(statistic(np.ones((1, n)))).reshape(-1)[0])


def mean_statistic(values) -> Statistic:
    """The mean of per-unit values (e.g. each test user's NDCG@10)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return lambda w: (w @ v) / w.sum(axis=1)


def percentile_statistic(values, q: float) -> Statistic:
    """The q-th percentile of per-unit values (e.g. each request's latency), interpolated
    linearly as numpy's default: under integer weights, that of the resample holding unit
    i w_i times.

    Args:
      values: one value per unit.
      q: the percentile, 0..100 (50: the median).
    """
    import numpy as np

    if not 0.0 <= q <= 100.0:
        raise ValueError(f"a percentile is in [0, 100], got {q}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(v, kind="stable")
    ranked = v[order]

    def statistic(w):
        counts = np.cumsum(np.atleast_2d(np.asarray(w, dtype=np.float64))[:, order], axis=1)  # [r, n]
        total = counts[:, -1]
        position = (total - 1.0) * q / 100.0  # in the resample's sorted values, counted from 0
        low = np.floor(position)
        high = np.minimum(low + 1.0, total - 1.0)
        # The k-th sorted value of a resample is that of the first unit whose cumulative count exceeds k.
        at_low = (counts <= low[:, None]).sum(axis=1)
        at_high = (counts <= high[:, None]).sum(axis=1)
        frac = position - low
        return ranked[at_low] * (1.0 - frac) + ranked[at_high] * frac

    return statistic


def rmse_statistic(predictions, labels) -> Statistic:
    """RMSE of predictions against labels (per-row squared errors, weighted)."""
    import numpy as np

    e = (np.asarray(predictions, np.float64).reshape(-1) - np.asarray(labels, np.float64).reshape(-1)) ** 2
    return lambda w: np.sqrt((w @ e) / w.sum(axis=1))


def weighted_aucs(scores, positives, weights) -> Any:
    """AUC of `scores` under each row of `weights` ([R, n] multiplicities), ties counted 1/2:
    with integer weights, the AUC of the resample holding row i w_i times."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives, dtype=bool).reshape(-1)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positives[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positives[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def auc_statistic(scores, positives) -> Statistic:
    """AUC (evaluation.definitions.binary_auc) of one output's scores on the test rows."""
    return lambda w: weighted_aucs(scores, positives, w)


def multi_auc_statistic(scores, classes, num_classes: int = 4) -> Statistic:
    """Multi-AUC (evaluation.definitions.multi_auc) of scores over ordered classes: each
    pair's AUC weighted by the (resampled) share of rows in either class."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.asarray(classes).reshape(-1)
    present = [k for k in range(num_classes) if np.any(c == k)]
    pairs = [(j, k) for i, j in enumerate(present) for k in present[i + 1:]]

    def statistic(w):
        w = np.atleast_2d(w)
        total, weight = np.zeros(w.shape[0]), np.zeros(w.shape[0])
        for j, k in pairs:
            rows = (c == j) | (c == k)
            share = w[:, rows].sum(axis=1) / w.sum(axis=1)
            auc = weighted_aucs(s[rows], c[rows] == k, w[:, rows])
            ok = np.isfinite(auc)  # a resample without one of the two classes drops the pair
            total += np.where(ok, share * np.nan_to_num(auc), 0.0)
            weight += np.where(ok, share, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / weight

    return statistic


def percentile_interval(values, level: float = LEVEL) -> Tuple[float, float]:
    """The central `level` percentile interval of bootstrap values (NaNs left out)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


@dataclasses.dataclass(frozen=True)
class Measured:
    """One model's statistic on the test units: per seed its value and its bootstrap draws.

    Attributes:
      name: the model.
      values: the statistic per seed.
      draws: per seed, its [resamples] values on the shared bootstrap resamples.
      units: how many test units (users or rows) were resampled.
    """

    name: str
    values: Tuple[float, ...]
    draws: Tuple[Any, ...]
    units: int

    @classmethod
    def of(cls, name: str, statistics: Sequence[Statistic], units: int, resamples: int = BOOTSTRAP_RESAMPLES,
           seed: int = BOOTSTRAP_SEED) -> "Measured":
        """Measures one statistic per seed (e.g. `auc_statistic` of each seed's scores)."""
        return cls(name, tuple(point_value(s, units) for s in statistics),
                   tuple(seed_draws(s, units, resamples, seed) for s in statistics), units)

    def to_dict(self, digits: int = 6) -> Dict[str, Any]:
        """JSON-ready (the draws rounded), for a runs file that a later merge reads back."""
        return {"name": self.name, "values": list(self.values), "units": self.units,
                "draws": [[round(float(x), digits) for x in d] for d in self.draws]}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Measured":
        import numpy as np

        return cls(data["name"], tuple(data["values"]), tuple(np.asarray(d, np.float64) for d in data["draws"]),
                   int(data["units"]))

    def extend(self, other: "Measured") -> "Measured":
        """The seeds of both (e.g. seeds run in two processes)."""
        if other.units != self.units:
            raise ValueError(f"{self.name}: cannot join seeds measured on {self.units} and {other.units} test units")
        return Measured(self.name, self.values + other.values, self.draws + other.draws, self.units)

    def seed_mean(self) -> Any:
        """[resamples] the seed mean on each resample."""
        import numpy as np

        return np.mean(np.stack(self.draws), axis=0)

    def summary(self) -> Dict[str, Optional[float]]:
        """Seed mean and std (None for one seed) and the bootstrap interval of the seed mean."""
        out = mean_std(self.values)
        out["low"], out["high"] = percentile_interval(self.seed_mean())
        out["seeds"] = len(self.values)
        return out


class PairedVerdict:
    """The project's rule for a paired comparison (diff A - B, its interval low..high, each
    side's seed std): one model is ahead only when the interval excludes 0 and the difference
    is larger than the larger of the two seed stds."""

    @property
    def resolved(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    @property
    def larger_seed_std(self) -> float:
        """The larger of the two seed stds (a model with one seed: its std counts 0)."""
        return max(self.a_std or 0.0, self.b_std or 0.0)

    @property
    def beyond_seed_std(self) -> bool:
        """|difference| larger than the larger seed std."""
        return abs(self.diff) > self.larger_seed_std

    @property
    def ahead(self) -> Optional[bool]:
        """True: A is ahead; False: B is; None: no difference."""
        if not (self.resolved and self.beyond_seed_std):
            return None
        return self.diff > 0 if self.higher_is_better else self.diff < 0

    def why_no_difference(self) -> str:
        why = [w for w, holds in (("the interval includes 0", not self.resolved),
                                  ("within one seed std", not self.beyond_seed_std)) if holds]
        return "no difference (" + " and ".join(why) + ")"


@dataclasses.dataclass(frozen=True)
class IntervalVerdict(PairedVerdict):
    """A paired interval of A - B with each side's seed std (from a results file, or a
    benchmark's own bootstrap), judged by the project's rule."""

    diff: float
    low: float
    high: float
    a_std: Optional[float]
    b_std: Optional[float]
    higher_is_better: bool


@dataclasses.dataclass(frozen=True)
class Comparison(PairedVerdict):
    """A against B on the same test units: each one's seed mean ± std, and the paired
    bootstrap interval of the difference of seed means (A - B; the same resamples for both).

    A verdict needs both: "better" (or "worse") when the interval excludes 0 and the
    difference is larger than the larger of the two seed stds; "no difference" otherwise.
    """

    a: str
    b: str
    a_mean: float
    a_std: Optional[float]
    a_seeds: int
    b_mean: float
    b_std: Optional[float]
    b_seeds: int
    diff: float
    low: float
    high: float
    p_not_better: float  # share of resamples where A is not better than B
    units: int
    unit: str
    higher_is_better: bool = True
    level: float = LEVEL

    def verdict(self) -> str:
        if self.ahead is None:
            return self.why_no_difference()
        return "better" if self.ahead else "worse"

    def text(self, digits: int = 4) -> str:
        """`A 0.1234 ± 0.0012 (5 seeds) vs B ...: diff +0.0034, paired 95% bootstrap [..., ...] over N
        test users; better|worse|no difference (...)`."""
        def side(name, mean, std, seeds):
            spread = f" ± {std:.{digits}f}" if std is not None else ""
            return f"{name} {mean:.{digits}f}{spread} ({seeds} seed{'s' if seeds != 1 else ''})"

        return (f"{side(self.a, self.a_mean, self.a_std, self.a_seeds)} vs "
                f"{side(self.b, self.b_mean, self.b_std, self.b_seeds)}: diff {self.diff:+.{digits}f}, paired "
                f"{self.level:.0%} bootstrap [{self.low:+.{digits}f}, {self.high:+.{digits}f}] over {self.units} "
                f"{self.unit}; {self.verdict()}")

    def to_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict()}


def compare(a: Measured, b: Measured, unit: str = "test rows", higher_is_better: bool = True,
            level: float = LEVEL) -> Comparison:
    """A against B (`Measured` on the same test units and resamples): see `Comparison`.

    Args:
      a, b: the two models' measurements.
      unit: what the units are, for the text ("test users", "test rows").
      higher_is_better: False for errors (RMSE).
      level: the interval's coverage.
    """
    import numpy as np

    if a.units != b.units:
        raise ValueError(f"{a.name} was measured on {a.units} test units and {b.name} on {b.units}: a paired "
                         "comparison needs the same test users or rows")
    resamples = {len(d) for d in a.draws + b.draws}
    if len(resamples) != 1:
        raise ValueError(f"{a.name} and {b.name} have bootstrap draws of different lengths {sorted(resamples)}")
    sa, sb = mean_std(a.values), mean_std(b.values)
    diff = a.seed_mean() - b.seed_mean()
    low, high = percentile_interval(diff, level)
    finite = diff[np.isfinite(diff)]
    not_better = finite <= 0 if higher_is_better else finite >= 0
    return Comparison(a=a.name, b=b.name, a_mean=sa["mean"], a_std=sa["std"], a_seeds=len(a.values),
                      b_mean=sb["mean"], b_std=sb["std"], b_seeds=len(b.values), diff=sa["mean"] - sb["mean"],
                      low=low, high=high, p_not_better=float(np.mean(not_better)) if finite.size else float("nan"),
                      units=a.units, unit=unit, higher_is_better=higher_is_better, level=level)


@dataclasses.dataclass(frozen=True)
class SeedPaired(PairedVerdict):
    """A against B trained with the same seeds (on the same data): each one's mean ± std over
    those seeds, and the t interval of the mean per-seed difference A - B. For results that
    store a value per seed but no per-row scores (so no paired bootstrap over test rows).

    The verdict is "beats" by `PairedVerdict`'s rule, "no difference" otherwise.
    """

    a: str
    b: str
    seeds: Tuple[int, ...]
    a_mean: float
    a_std: float
    b_mean: float
    b_std: float
    diff: float
    low: float
    high: float
    higher_is_better: bool = True
    level: float = LEVEL

    def winner(self) -> Optional[str]:
        """The model that beats the other, or None (no difference)."""
        return None if self.ahead is None else (self.a if self.ahead else self.b)

    def verdict(self) -> str:
        winner = self.winner()
        if winner is None:
            return self.why_no_difference()
        return f"{winner} beats {self.b if winner == self.a else self.a}"


def seed_paired(a: str, a_values: Dict[int, float], b: str, b_values: Dict[int, float],
                higher_is_better: bool = True, level: float = LEVEL) -> SeedPaired:
    """A against B over the seeds both ran (see `SeedPaired`); ValueError with fewer than two.

    Args:
      a, b: the two models' names.
      a_values, b_values: seed -> the model's test value with that seed.
      higher_is_better: False for errors (RMSE).
      level: the interval's coverage.
    """
    import numpy as np

    seeds = tuple(s for s in a_values if s in b_values)
    if len(seeds) < 2:
        raise ValueError(f"{a} (seeds {sorted(a_values)}) and {b} (seeds {sorted(b_values)}) share "
                         f"{len(seeds)} seed(s): a paired interval over seeds needs at least two")
    x = np.array([a_values[s] for s in seeds], dtype=np.float64)
    y = np.array([b_values[s] for s in seeds], dtype=np.float64)
    diff, low, high = t_interval(x - y, level)
    sa, sb = mean_std(x), mean_std(y)
    return SeedPaired(a=a, b=b, seeds=seeds, a_mean=sa["mean"], a_std=sa["std"], b_mean=sb["mean"],
                      b_std=sb["std"], diff=diff, low=low, high=high, higher_is_better=higher_is_better, level=level)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of `values` (at least two; e.g. per-seed
    differences, or repeated measurements of a cell)."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"a t interval needs at least two values, got {x.size}")
    half = float(stats.t.ppf(0.5 + level / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return float(x.mean()), float(x.mean()) - half, float(x.mean()) + half


def best_by_eval(eval_values: Dict[str, Optional[float]], higher_is_better: bool = True) -> str:
    """The model with the best eval-split value (the first of equals, in the given order):
    the choice a goal line makes before it looks at the test split. ValueError when a
    candidate has no eval value.

    Args:
      eval_values: model -> its eval-split value of the compared metric.
      higher_is_better: False for errors (RMSE).
    """
    import math

    if not eval_values:
        raise ValueError("no candidates to choose from")
    missing = [m for m, v in eval_values.items() if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(f"no eval-split value for {missing}: the best model is chosen on the eval split, "
                         "never on test")
    sign = 1.0 if higher_is_better else -1.0
    best = None
    for model, value in eval_values.items():
        if best is None or sign * value > sign * eval_values[best]:
            best = model
    return best


# --------------------------------------------------------------------------
# Tuning on the eval split: a grid that widens past its edges until its choice is interior.
# --------------------------------------------------------------------------
GEOMETRIC, ADDITIVE, CATEGORICAL = "geometric", "additive", "categorical"
INTERIOR = "interior"


@dataclasses.dataclass(frozen=True)
class Knob:
    """One knob of a widening grid search: its first values and how it goes past an edge.

    Attributes:
      name: the setting's name (a keyword of the objective's setting).
      values: the first grid's values.
      widen: GEOMETRIC (multiply / divide by `step`: rates, regularization, sizes that
        double), ADDITIVE (add / subtract `step`: epochs, windows) or CATEGORICAL (never
        widened; every value is tried at the chosen point).
      step: the factor (GEOMETRIC, > 1) or the increment (ADDITIVE, > 0).
      low / high: the widest the knob may go (None: unbounded on that side).
      why: why the bounds are where they are (written into the results with a choice
        that stops at one).
      integer: values are rounded to integers (sizes, epochs).
    """

    name: str
    values: Tuple[Any, ...]
    widen: str = GEOMETRIC
    step: float = 2.0
    low: Optional[float] = None
    high: Optional[float] = None
    why: str = ""
    integer: bool = False

    def __post_init__(self):
        if not self.values:
            raise ValueError(f"knob {self.name!r} has no values")
        if self.widen not in (GEOMETRIC, ADDITIVE, CATEGORICAL):
            raise ValueError(f"knob {self.name!r}: widen {self.widen!r} is not one of "
                             f"{GEOMETRIC}, {ADDITIVE}, {CATEGORICAL}")
        if self.widen == GEOMETRIC and not self.step > 1:
            raise ValueError(f"knob {self.name!r}: a geometric step is a factor > 1, got {self.step}")
        if self.widen == ADDITIVE and not self.step > 0:
            raise ValueError(f"knob {self.name!r}: an additive step is > 0, got {self.step}")
        if self.widen == GEOMETRIC and any(v <= 0 for v in self.values):
            raise ValueError(f"knob {self.name!r}: a geometric knob's values are > 0, got {list(self.values)}")
        if self.widen != CATEGORICAL and (self.low is not None or self.high is not None) and not self.why:
            raise ValueError(f"knob {self.name!r}: say why its bounds are [{self.low}, {self.high}]")

    def past(self, value: float, up: bool) -> Optional[float]:
        """The next value past `value` (up or down), or None when it would cross a bound
        (or stop changing, e.g. an integer halved at 1)."""
        if self.widen == GEOMETRIC:
            nxt = value * self.step if up else value / self.step
        else:
            nxt = value + self.step if up else value - self.step
        if self.integer:
            nxt = int(round(nxt))
        if nxt == value or (self.widen == GEOMETRIC and nxt <= 0):
            return None
        if (self.high is not None and nxt > self.high) or (self.low is not None and nxt < self.low):
            return None
        return nxt


@dataclasses.dataclass
class Tuned:
    """What `widening_search` chose and everything it evaluated.

    Attributes:
      chosen: the setting with the best eval score.
      score: its eval score.
      points: every evaluated setting with its eval score (`score`), in evaluation order.
      status: per knob, INTERIOR (both neighbours on that knob evaluated and no better) or
        why not ("at the lower bound 0.001: ...", "categorical", "evaluation budget ...").
      higher_is_better: the score's direction.
    """

    chosen: Dict[str, Any]
    score: float
    points: List[Dict[str, Any]]
    status: Dict[str, str]
    higher_is_better: bool

    @property
    def interior(self) -> bool:
        """Every numeric knob's choice is interior."""
        return all(s in (INTERIOR, CATEGORICAL) for s in self.status.values())

    def to_dict(self) -> Dict[str, Any]:
        return {"split": "eval", "chosen": self.chosen, "score": self.score, "status": self.status,
                "higher_is_better": self.higher_is_better, "points": self.points}

    def status_text(self) -> str:
        """`knob: status; ...` for a results table."""
        return "; ".join(f"{k}: {v}" for k, v in self.status.items())


def widening_search(objective: Callable[[Dict[str, Any]], float], knobs: Sequence[Knob],
                    higher_is_better: bool = True, max_evaluations: int = 200,
                    fixed: Optional[Dict[str, Any]] = None, log: Optional[Callable[[str], None]] = None,
                    tolerance: float = 0.0) -> Tuned:
    """Chooses a setting on the eval split: every point of the knobs' first grid, then, as
    long as the best point has an unevaluated neighbour on some knob, that neighbour; a
    knob whose best value is the largest (smallest) it has is widened past it by its step,
    up to its bounds. Stops when the best point beats its two neighbours on every numeric
    knob (each choice interior) and every other value of each categorical knob, when
    every edge it sits on is a bound, or after `max_evaluations`.

    Args:
      objective: setting -> its eval score (fixed settings included).
      knobs: the knobs searched.
      higher_is_better: False for errors (RMSE).
      max_evaluations: the most objective calls (a stated cost bound).
      fixed: settings passed to the objective but not searched.
      log: called with one line per evaluation (e.g. progress on stderr).
      tolerance: a point is better than the best so far only by more than this (e.g. an
        RMSE change below the reported digits is a tie, and the earlier point stays).
    """
    names = [k.name for k in knobs]
    if len(set(names)) != len(names):
        raise ValueError(f"knob names repeat: {names}")
    fixed = dict(fixed or {})
    # Numeric values in increasing order; categorical ones in their given order.
    values = {k.name: list(dict.fromkeys(k.values)) if k.widen == CATEGORICAL else sorted(set(k.values))
              for k in knobs}
    scores: Dict[Tuple, float] = {}
    order: List[Tuple] = []
    sign = 1.0 if higher_is_better else -1.0
    budget_hit = False

    def evaluate(point: Tuple) -> None:
        nonlocal budget_hit
        if point in scores:
            return
        if len(scores) >= max_evaluations:
            budget_hit = True
            return
        setting = {**fixed, **dict(zip(names, point))}
        value = float(objective(setting))
        if value != value:  # NaN: the worst possible score
            value = -sign * float("inf")
        scores[point] = value
        order.append(point)
        if log is not None:
            log(f"{json.dumps(dict(zip(names, point)), default=str)}: eval {value:.5f}")

    def best() -> Tuple:
        top = order[0]
        for p in order[1:]:
            if sign * scores[p] > sign * scores[top] + tolerance:
                top = p
        return top

    import itertools

    for point in itertools.product(*(values[n] for n in names)):
        evaluate(point)
    if not order:
        raise ValueError("max_evaluations is 0: nothing evaluated")
    while not budget_hit:
        chosen = best()
        before = len(scores)
        for i, knob in enumerate(knobs):
            if knob.widen == CATEGORICAL:
                neighbours = [v for v in values[knob.name] if v != chosen[i]]
            else:
                neighbours = []
                for up in (False, True):
                    vs = values[knob.name]
                    at = vs.index(chosen[i])
                    j = at + (1 if up else -1)
                    if 0 <= j < len(vs):
                        neighbours.append(vs[j])
                        continue
                    nxt = knob.past(chosen[i], up)
                    if nxt is not None:
                        vs.insert(len(vs) if up else 0, nxt)
                        neighbours.append(nxt)
            for v in neighbours:
                evaluate(chosen[:i] + (v,) + chosen[i + 1:])
        if len(scores) == before:
            break
    chosen = best()
    status: Dict[str, str] = {}
    for i, knob in enumerate(knobs):
        if knob.widen == CATEGORICAL:
            status[knob.name] = CATEGORICAL
            continue
        vs = values[knob.name]
        at = vs.index(chosen[i])
        sides = []
        for up, j in ((False, at - 1), (True, at + 1)):
            if 0 <= j < len(vs) and chosen[:i] + (vs[j],) + chosen[i + 1:] in scores:
                continue
            bound = knob.high if up else knob.low
            if not (0 <= j < len(vs)) and knob.past(chosen[i], up) is None:
                side = "upper" if up else "lower"
                limit = f" {bound:g}" if bound is not None else ""
                sides.append(f"at the {side} bound{limit}" + (f" ({knob.why})" if knob.why else ""))
            else:
                sides.append(f"{'above' if up else 'below'} not evaluated: evaluation budget of "
                             f"{max_evaluations} reached")
        status[knob.name] = "; ".join(sides) if sides else INTERIOR
    points = [{**dict(zip(names, p)), "score": scores[p]} for p in order]
    return Tuned(chosen={**fixed, **dict(zip(names, chosen))}, score=scores[chosen], points=points,
                 status=status, higher_is_better=higher_is_better)


def goal_verdict(low: float, high: float, goal: float, at_least: bool, unit: str = "") -> str:
    """`met` only when the whole interval is on the goal's side of `goal` (at or above it with
    `at_least`, else at or below); otherwise `not met` and why."""
    side = "below" if at_least else "above"
    if (low >= goal) if at_least else (high <= goal):
        return "met"
    if (high < goal) if at_least else (low > goal):
        return f"not met: the whole interval is {side} {goal:g}{unit}"
    return f"not met: not shown, the interval reaches {side} {goal:g}{unit}"

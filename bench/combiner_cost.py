"""What the project's TFMA combiners cost per example, with and without cProfile.

    python -m bench.combiner_cost [--examples 60000]

`bench.profile_evaluator` measures an Evaluator under cProfile, which adds a fixed cost
to every Python call: the per-example `add_input` of the project's combiners
(`evaluation/tfma_metrics.py`) is many small calls, so the profile overstates their
share. This feeds the same synthetic per-example inputs (one example per element, as
TFMA's StandardMetricInputs give them: a prediction, label and example weight per task
output) to the combiners an Evaluator runs for a one-task binary model and for every
pointwise task of a dataset description (`--dataset`, MovieLens by default: rating, liked,
loved, watched, as `mmoe` trains them with negatives; `mean_auc` is derived from their
results and reads no example), and times `add_input` over every element plus
`extract_output`, in process CPU seconds, plainly and under cProfile.

Writes `bench/results/combiner_cost.{md,json}`.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from typing import Dict, List, Optional, Sequence

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402

from contract import tasks as T  # noqa: E402
from evaluation.tfma_metrics import TaskMetrics  # noqa: E402

NAME = "combiner_cost"


def setups(spec) -> Dict[str, Dict[str, str]]:
    """{setup: {output name: task kind}}: the description's first binary task alone, and every
    pointwise task of it (what a multi-task family's Evaluator measures)."""
    pointwise = {t.name: t.kind for t in spec.tasks if t.kind in (T.BINARY, T.REGRESSION)}
    binary = [name for name, kind in pointwise.items() if kind == T.BINARY][:1]
    return {"one binary task": {name: T.BINARY for name in binary}, f"mmoe ({spec.name})": pointwise}


def elements(outputs: Dict[str, str], n: int, seed: int = 0) -> List[tfma.metrics.StandardMetricInputs]:
    rng = np.random.default_rng(seed)
    one = lambda value: np.array([value], np.float32)
    out = []
    for _ in range(n):
        out.append(tfma.metrics.StandardMetricInputs({
            tfma.PREDICTIONS_KEY: {o: one(rng.random() * (5 if k == T.REGRESSION else 1)) for o, k in outputs.items()},
            tfma.LABELS_KEY: {o: one(rng.integers(1, 6) if k == T.REGRESSION else rng.random() > 0.5)
                              for o, k in outputs.items()},
            tfma.EXAMPLE_WEIGHTS_KEY: {o: one(rng.random() > 0.2) for o in outputs},
        }))
    return out


def run_combiners(outputs: Dict[str, str], data: Sequence[tfma.metrics.StandardMetricInputs],
                  rating: Optional[Dict[str, object]] = None) -> Dict[str, Dict]:
    """Each output's TaskMetrics combiner over `data`: {output: {metric name: value}}.

    Args:
      outputs: output name -> task kind.
      data: the elements (`elements`).
      rating: a regression output's TaskMetrics settings, as the Evaluator gives the
        description's rating task (`evaluation.eval_config.rating_settings`); None: none.
    """
    results = {}
    for output, kind in outputs.items():
        metric = TaskMetrics(kind=kind, **(dict(rating or {}) if kind == T.REGRESSION else {}))
        (computation,) = metric.computations(model_names=[""], output_names=[output])  # as the Evaluator builds it
        combiner = computation.combiner
        accumulator = combiner.create_accumulator()
        for element in data:
            accumulator = combiner.add_input(accumulator, element)
        values = combiner.extract_output(combiner.compact(accumulator))
        results[output] = {key.name: value for key, value in values.items()}
    return results


def cpu_seconds(outputs: Dict[str, str], data: Sequence[tfma.metrics.StandardMetricInputs], profiled: bool,
                repeats: int, rating: Optional[Dict[str, object]] = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        profiler = cProfile.Profile() if profiled else None
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        run_combiners(outputs, data, rating)
        if profiler is not None:
            profiler.disable()
        best = min(best, time.process_time() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60000,
                        help="elements per combiner (an Evaluator of /tmp/makerun10: ~59,000 per slice set)")
    parser.add_argument("--repeats", type=int, default=3, help="the fastest of this many runs is kept")
    parser.add_argument("--dataset", default=common.PipelineConfig.dataset,
                        help="a shipped description name or a description file (its tasks)")
    args = parser.parse_args(argv)
    from contract import datasets as D
    from evaluation.eval_config import rating_settings

    spec = D.dataset_spec(args.dataset)
    rating = rating_settings(spec)
    rows = []
    for setup, outputs in setups(spec).items():
        data = elements(outputs, args.examples)
        plain = cpu_seconds(outputs, data, False, args.repeats, rating)
        profiled = cpu_seconds(outputs, data, True, args.repeats, rating)
        rows.append({"setup": setup, "outputs": len(outputs), "examples": args.examples,
                     "cpu_seconds": round(plain, 3), "cpu_seconds_profiled": round(profiled, 3),
                     "us_per_example_and_output": round(1e6 * plain / (args.examples * len(outputs)), 2),
                     "profiler_factor": round(profiled / plain, 2)})
    lines = ["# The project's TFMA combiners: CPU per example, plain and under cProfile", "",
             __doc__.split("\n\n")[2].replace("\n", " "), "",
             common.md_table(rows, list(rows[0]), digits=3)]
    command = common.command_line("bench.combiner_cost", argv)
    common.write_results(NAME, rows, "\n".join(lines), {"command": command, "machine": json.dumps(common.machine())})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where an Evaluator's time goes: each family's Evaluator of a finished pipeline run,
executed again under cProfile with the inputs and settings ML Metadata recorded for it.

    python -m bench.profile_evaluator --output_dir /tmp/makerun10

For every Evaluator execution in the run's ML Metadata (the newest per family), the TFX
Evaluator executor runs again on the same examples, model, baseline model and exec
properties (eval config, example splits), with the pipeline's Beam arguments, writing
into a temporary directory (the run's own outputs are not touched). The profile is of the
calling thread; `--direct_running_mode=in_memory` runs the Beam bundles in it, and the
`profiled` column says how much of the wall time the profile saw.

Writes `bench/results/evaluator_profile.{md,json}`: per family, the wall time, then the
profile's time in disjoint parts by whose code ran (own time of each function, summed by
top-level package: TensorFlow, TFMA, Beam, TFX, pyarrow / tfx_bsl, numpy, the project's
code, the rest), and cumulative times of three entry points that cut across packages: loading
the SavedModels, calling their signatures, and the project's metric combiners.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

from pipeline.configs import REPO_ROOT, PipelineConfig  # noqa: E402

NAME = "evaluator_profile"
EVALUATOR_TYPE = "tfx.components.evaluator.component.Evaluator"

# Own time by package: the first matching path fragment names the part.
PACKAGES: Tuple[Tuple[str, str], ...] = (
    ("tensorflow_model_analysis", "/tensorflow_model_analysis/"),
    ("tensorflow", "/tensorflow/"),
    ("tensorflow", "/tf_keras/"),
    ("beam", "/apache_beam/"),
    ("tfx", "/tfx/"),
    ("arrow / tfx_bsl", "/pyarrow/"),
    ("arrow / tfx_bsl", "/tfx_bsl/"),
    ("numpy", "/numpy/"),
    ("project", str(REPO_ROOT) + os.sep),
)
STDLIB = os.path.dirname(os.__file__)
PARTS = ("tensorflow", "tensorflow_model_analysis", "beam", "tfx", "arrow / tfx_bsl", "numpy", "project", "other")

# Cumulative time of entry points, summed over their functions (which do not call each
# other); they nest inside the parts above.
ENTRY_POINTS = {
    # tf.saved_model.load of the candidate (and baseline) model
    "load_models": (("/tensorflow/python/saved_model/load.py", "load"),),
    # every call of a signature's concrete function
    "signature_calls": (("/tensorflow/python/eager/polymorphic_function/concrete_function.py", "__call__"),),
    # the project's TFMA combiners (evaluation/tfma_metrics.py)
    "project_combiners": tuple((os.path.join("evaluation", "tfma_metrics.py"), name)
                               for name in ("add_input", "merge_accumulators", "compact", "extract_output")),
}


def _store(output_dir: str):
    from pipeline.recovery import open_store

    path = PipelineConfig(output_dir=output_dir).metadata_path
    if not os.path.exists(path):
        raise FileNotFoundError(f"no ML Metadata at {path}: pass the --output_dir of a finished pipeline run")
    return open_store(path)


def _value(value) -> Any:
    for field in ("string_value", "int_value", "double_value"):
        if value.HasField(field):
            return getattr(value, field)
    return None


def evaluator_runs(output_dir: str) -> Dict[str, Dict[str, Any]]:
    """{family: {"inputs": {key: [Artifact]}, "exec_properties": {...}}} of the newest
    successful Evaluator execution of each family in the run's ML Metadata."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    store = _store(output_dir)
    (etype,) = [t for t in store.get_execution_types() if t.name == EVALUATOR_TYPE] or [None]
    if etype is None:
        raise ValueError(f"the run in {output_dir} has no Evaluator execution")
    runs: Dict[str, Dict[str, Any]] = {}
    complete = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    for execution in sorted(store.get_executions_by_type(etype.name), key=lambda e: e.id):
        if execution.last_known_state not in complete:
            continue
        events = store.get_events_by_execution_ids([execution.id])
        inputs: Dict[str, List] = {}
        family = None
        for event in events:
            (artifact,) = store.get_artifacts_by_id([event.artifact_id])
            (atype,) = store.get_artifact_types_by_id([artifact.type_id])
            key = event.path.steps[0].key
            if event.type == metadata_store_pb2.Event.INPUT:
                inputs.setdefault(key, []).append(artifact_utils.deserialize_artifact(atype, artifact))
            elif key == "evaluation":
                family = os.path.basename(os.path.dirname(os.path.dirname(artifact.uri))).removeprefix("Evaluator_")
        if family:
            properties = {k: _value(v) for k, v in execution.custom_properties.items()}
            runs[family] = {"inputs": inputs, "exec_properties": {k: v for k, v in properties.items()
                                                                  if v is not None}}
    return runs


def run_evaluator(run: Dict[str, Any], beam_args: List[str], out_dir: str,
                  tfx_sdist: bool = False) -> Tuple[float, pstats.Stats]:
    """The Evaluator executor on the recorded inputs, under cProfile: (wall seconds, stats).
    `tfx_sdist`: let TFX package itself for the Beam workers, as it does unless the
    local runner stops it (pipeline.local_runner.without_tfx_sdist)."""
    from pipeline.local_runner import without_tfx_sdist
    from tfx.components.evaluator import executor
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = os.path.join(out_dir, "evaluation"), os.path.join(out_dir, "blessing")
    for a in (evaluation, blessing):
        os.makedirs(a.uri, exist_ok=True)
    # (a copy: the executor appends its labels to the list it gets)
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(beam_args), tmp_dir=out_dir,
                                                          unique_id="profile")
    profile = cProfile.Profile()
    with contextlib.nullcontext() if tfx_sdist else without_tfx_sdist():
        started = time.perf_counter()
        profile.enable()
        executor.Executor(context).Do(run["inputs"], {"evaluation": [evaluation], "blessing": [blessing]},
                                      dict(run["exec_properties"]))
        profile.disable()
    return time.perf_counter() - started, pstats.Stats(profile)


def _package(path: str) -> str:
    """The part a function's file belongs to; "" for the standard library and built-ins,
    whose time goes to their callers."""
    if path == "~" or (path.startswith(STDLIB) and "site-packages" not in path) or path.startswith("<"):
        return ""
    return next((name for name, fragment in PACKAGES if fragment in path), "other")


def _shares(stats: pstats.Stats) -> Dict[Any, Dict[str, float]]:
    """Per function, how its own time divides over PARTS: its own part, or for the standard
    library and built-ins the mix of their callers' (weighted by the time each caller's calls
    took), found by iterating to a fixed point over the call graph's cycles."""
    share: Dict[Any, Dict[str, float]] = {}
    pending = []
    for func in stats.stats:
        part = _package(func[0])
        if part:
            share[func] = {part: 1.0}
        else:
            pending.append(func)
    for _ in range(40):
        changed = False
        for func in pending:
            mix: Dict[str, float] = {}
            for caller, (_, calls, own, cumulative, *_) in stats.stats[func][4].items():
                weight = own or cumulative or calls
                for part, w in share.get(caller, {}).items():
                    mix[part] = mix.get(part, 0.0) + weight * w
            total = sum(mix.values())
            if total > 0:
                new = {part: w / total for part, w in mix.items()}
                if new != share.get(func):
                    share[func], changed = new, True
        if not changed:
            break
    return share


def breakdown(stats: pstats.Stats) -> Dict[str, float]:
    """Own time per part (PARTS; the standard library's and built-ins' own time goes to the
    part that called them) and cumulative time per entry point (ENTRY_POINTS), seconds."""
    out = {part: 0.0 for part in PARTS}
    entry = {name: 0.0 for name in ENTRY_POINTS}
    shares = _shares(stats)
    for func, (_, _, own, cumulative, _) in stats.stats.items():
        path, _, function = func
        for part, w in shares.get(func, {"other": 1.0}).items():
            out[part] += own * w
        for name, functions in ENTRY_POINTS.items():
            if any(path.endswith(suffix) and function == fn for suffix, fn in functions):
                # cProfile's cumulative time already counts a recursive call once.
                entry[name] += cumulative
    out.update(entry)
    return out


def top_functions(stats: pstats.Stats, top: int) -> List[str]:
    """The `top` functions by own time, one line each (paths relative to the project or
    site-packages)."""
    lines = []
    for (path, line, function), (_, calls, own, cumulative, _) in sorted(stats.stats.items(),
                                                                       key=lambda kv: -kv[1][2])[:top]:
        where = (os.path.relpath(path, str(REPO_ROOT)) if path.startswith(str(REPO_ROOT))
                 else path.split("site-packages/")[-1])
        lines.append(f"{own:.2f} s own, {cumulative:.2f} s cumulative, {calls} calls: {where}:{line} {function}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, help="a finished pipeline run's --output_dir")
    parser.add_argument("--families", default="", help="comma-separated (default: every Evaluator of the run)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--top", type=int, default=15, help="functions listed per family, by own time")
    parser.add_argument("--tfx_sdist", default="no,yes",
                        help="with TFX packaging itself for the Beam workers (yes), as the local runner stops "
                             "it (no), or both in turn (no,yes)")
    parser.add_argument("--beam_arg", action="append", default=[], metavar="ARG",
                        help="one more Beam argument after the pipeline's defaults; repeatable")
    args = parser.parse_args(argv)

    runs = evaluator_runs(args.output_dir)
    families = [f for f in args.families.split(",") if f] or sorted(runs)
    missing = sorted(set(families) - set(runs))
    if missing:
        raise ValueError(f"no Evaluator of {missing} in {args.output_dir}; it has {sorted(runs)}")
    beam_args = list(PipelineConfig().beam_pipeline_args) + list(args.beam_arg)
    rows, tops = [], {}
    variants = [v for v in args.tfx_sdist.split(",") if v]
    if not variants or set(variants) - {"no", "yes"}:
        raise ValueError(f"--tfx_sdist takes no, yes or both (no,yes), got {args.tfx_sdist!r}")
    for family, variant in [(f, v) for f in families for v in variants]:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, stats = run_evaluator(runs[family], beam_args, tmp, tfx_sdist=variant == "yes")
        parts = breakdown(stats)
        profiled = sum(parts[p] for p in PARTS)
        row = {"family": family, "tfx_sdist": variant, "wall_seconds": round(seconds, 2),
               "profiled_share": round(profiled / seconds, 3), **{k: round(v, 2) for k, v in parts.items()}}
        rows.append(row)
        tops[f"{family}, tfx_sdist {variant}"] = top_functions(stats, args.top)
        print(json.dumps(row), file=sys.stderr, flush=True)

    command = common.command_line("bench.profile_evaluator", argv)
    meta = {"command": command, "machine": json.dumps(common.machine())}
    sections = [
        "# Where the Evaluator's time goes", "",
        f"Each family's Evaluator of the pipeline run in `{args.output_dir}`, executed again under cProfile on "
        "the inputs and exec properties ML Metadata recorded (Beam arguments: "
        f"`{' '.join(beam_args)}`). Seconds. `profiled_share`: the profile's own time over the wall time. "
        "Parts by whose code ran (own time, disjoint; the standard library's and built-ins' own time counts "
        "for the part that called them): " + ", ".join(f"`{p}`" for p in PARTS) + ". Entry points "
        "(cumulative, inside those parts): `load_models` (tf.saved_model.load), `signature_calls` (the "
        "signatures' concrete functions), `project_combiners` (evaluation/tfma_metrics.py).", "",
        common.md_table(rows, ["family", "tfx_sdist", "wall_seconds", "profiled_share", *PARTS, *ENTRY_POINTS],
                        digits=2), "",
        "`tfx_sdist` yes: TFX packs itself into an sdist for the Beam workers (a `setup.py sdist` subprocess, "
        "its wait counted in `tfx`, which started it), as every Beam component of a TFX run does by default; no: as the local "
        "runner runs it (`pipeline.local_runner.without_tfx_sdist`).", "",
    ]
    for family, lines in tops.items():
        sections += [f"## {family}: functions by own time", ""] + [f"- {line}" for line in lines] + [""]
    markdown = "\n".join(sections)
    common.write_results(NAME, rows, markdown, meta, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

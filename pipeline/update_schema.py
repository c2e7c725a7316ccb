"""Writes a dataset's curated schema: generated from its description, or updated from a run's data.

Generate (a new dataset, or a changed description): the schema of every raw feature the
description implies (pipeline/schema_generation.py), the string domains of its small
categorical features filled from the data's training split, written atomically to
`schemas/<name>/schema.pbtxt` for review and then checked in:

    make update-schema ARGS="--generate --dataset_file my_shop.yaml [--data_dir DIR]"
    make update-schema ARGS="--generate --dataset movielens"
    # the training split is read from a fresh ingest of the data, or, with
    # --from_run OUTPUT_DIR, from the newest ExampleGen output of that run

Update from statistics (a new release of the data):

When the anomaly gate stops a run (a genre, behavior or range the curated schema does
not know), this reads that run's StatisticsGen output and the schema it validated
against, lets TFDV update the schema so that every split conforms
(`tfdv.update_schema`: new domain values added, ranges and counts relaxed), and writes
the result beside the curated file (`schemas/<dataset>/schema.inferred.pbtxt` by
default) with a diff on the terminal. Review it, then either copy it over the curated
schema or point a run at it with `--schema_file`.

    make update-schema ARGS="--output_dir outputs"
    # = python -m pipeline.update_schema --output_dir outputs [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import os
import sys
from typing import List, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from common.io_utils import atomic_write  # noqa: E402
from pipeline import report, schema_generation  # noqa: E402
from pipeline.configs import REPO_ROOT, SCHEMA_FILE, PipelineConfig, add_dataset_arguments, dataset_overrides  # noqa: E402

INFERRED_NAME = "schema.inferred.pbtxt"
STATS_FILE = "FeatureStats.pb"


def _newest(pipeline_root: str, component: str, output: str) -> str:
    found = report.output_dirs(pipeline_root).get(component, {}).get(output)
    if not found:
        raise FileNotFoundError(
            f"no {component} output under {pipeline_root}: run the pipeline on the new data first "
            "(it stops at AnomalyGate after StatisticsGen)"
        )
    return found


def curated_schema_file(metadata_path: str) -> Optional[str]:
    """The schema file the newest ImportSchemaGen execution imported (from ML Metadata)."""
    if not os.path.exists(metadata_path):
        return None
    from pipeline.recovery import open_store

    store = open_store(metadata_path)
    found = None
    for execution in store.get_executions():
        if "schema_file" in execution.custom_properties:
            if found is None or execution.id > found[0]:
                found = (execution.id, execution.custom_properties["schema_file"].string_value)
    return found[1] if found else None


def summarize_changes(old, new) -> List[str]:
    """One line per changed schema entry: domain values added, features added or changed."""
    from google.protobuf import text_format

    lines = []
    old_domains = {d.name: list(d.value) for d in old.string_domain}
    for domain in new.string_domain:
        if domain.name not in old_domains:
            lines.append(f"new string_domain {domain.name!r}: {list(domain.value)}")
            continue
        added = [v for v in domain.value if v not in old_domains[domain.name]]
        removed = [v for v in old_domains[domain.name] if v not in domain.value]
        if added:
            lines.append(f"string_domain {domain.name!r}: add {added}")
        if removed:
            lines.append(f"string_domain {domain.name!r}: remove {removed}")
    old_features = {f.name: f for f in old.feature}
    for feature in new.feature:
        before = old_features.get(feature.name)
        if before is None:
            lines.append(f"new feature {feature.name!r}")
        elif before != feature:
            lines.append(
                f"feature {feature.name!r}: {text_format.MessageToString(before, as_one_line=True)} -> "
                f"{text_format.MessageToString(feature, as_one_line=True)}"
            )
    return lines


def infer(output_dir: str, schema_file: Optional[str] = None) -> Tuple[str, object, object, List[Tuple[str, object]]]:
    """(schema file, curated schema, updated schema, [(split, statistics)]) for a run's output dir."""
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    pipeline_root = os.path.join(output_dir, "pipeline_root")
    statistics_dir = _newest(pipeline_root, "StatisticsGen", "statistics")
    if schema_file is None:
        schema_file = curated_schema_file(os.path.join(output_dir, "metadata.sqlite"))
    if schema_file is None:
        schema_dir = _newest(pipeline_root, "ImportSchemaGen", "schema")
        schema_file = os.path.join(schema_dir, "schema.pbtxt")
    with open(schema_file, encoding="utf-8") as f:
        curated = text_format.Parse(f.read(), schema_pb2.Schema())
    splits = []
    for path in sorted(glob.glob(os.path.join(statistics_dir, "Split-*", STATS_FILE))):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        splits.append((split, tfdv.load_stats_binary(path)))
    if not splits:
        raise FileNotFoundError(f"{statistics_dir} holds no Split-*/{STATS_FILE}")
    updated = schema_pb2.Schema()
    updated.CopyFrom(curated)
    for _, stats in splits:  # every split must conform, as ExampleValidator checks each
        updated = tfdv.update_schema(updated, stats)
    return schema_file, curated, updated, splits


def training_split_files(config: PipelineConfig, from_run: Optional[str], work_dir: str) -> List[str]:
    """The training split's example files: the newest ExampleGen output of the run in
    `from_run`, or an ingest of `config`'s data written under `work_dir`."""
    if from_run:
        examples = _newest(os.path.join(from_run, "pipeline_root"), "InteractionExampleGen", "examples")
    else:
        from components.example_gen import run_ingest

        examples = os.path.join(work_dir, "examples")
        run_ingest(config.data_dir, config.ingest_config(), examples)
    files = schema_generation.split_files(examples)
    if not files:
        raise FileNotFoundError(f"{examples} holds no Split-{schema_generation.TRAIN_SPLIT} files")
    return files


def generate(config: PipelineConfig, from_run: Optional[str] = None) -> Tuple[str, List[str]]:
    """(the schema text of the config's description, notes on features left without a domain).

    The data is read only when the description has a categorical feature (its domain).

    Args:
      config: names the description, its data and split.
      from_run: a run's output directory to read the training split from, instead of an ingest.
    """
    import tempfile

    d = config.load_description()
    names = [f.raw_name for f in schema_generation.domain_features(d)]
    values = {}
    if names:
        config = config.resolved()  # the data directory and the split
        with tempfile.TemporaryDirectory(prefix="schema-") as work_dir:
            values = schema_generation.training_values(training_split_files(config, from_run, work_dir), names)
    domains, notes = schema_generation.small_domains(d, values)
    source = config.description_source
    return schema_generation.render(d, domains, source, schema_generation.regenerate_option(d, source)), notes


def _generate_main(args) -> int:
    config = dataclasses.replace(PipelineConfig(), **dataset_overrides(args))
    try:
        out = args.out or os.path.join(config.schema_dir, config.dataset_name, SCHEMA_FILE)
        text, notes = generate(config, args.from_run)
    except (OSError, ValueError) as e:  # DescriptionError, no data_dir, a file missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    old = open(out, encoding="utf-8").read() if os.path.exists(out) else ""
    atomic_write(out, text)
    print(f"Wrote the schema of {config.describe_dataset()}: {out}")
    for note in notes:
        print(f"  {note}")
    diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(), fromfile=f"{out} (before)", tofile=out,
                                     lineterm="", n=2))
    if old and not diff:
        print("It is the same as the file it replaced.")
    elif old:
        print("Changes:\n" + "\n".join(diff))
    print("Review it, then check it in: runs validate every split against it.")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate", action="store_true",
                        help="generate the schema from the dataset description (see the options below)")
    parser.add_argument("--output_dir", default=str(REPO_ROOT / "outputs"), help="the run that stopped at the gate")
    parser.add_argument("--schema_file", default=None, help="schema to start from (default: the one the run used)")
    parser.add_argument("--out", default=None, help=f"where to write (default: {INFERRED_NAME} beside the schema; "
                                                     f"--generate: schemas/<name>/{SCHEMA_FILE})")
    parser.add_argument("--from_run", default=None, metavar="OUTPUT_DIR",
                        help="--generate: read the training split from this run's ExampleGen output "
                             "(default: ingest the data)")
    add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    if args.generate:
        return _generate_main(args)
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    try:
        schema_file, curated, updated, splits = infer(os.path.abspath(args.output_dir), args.schema_file)
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(os.path.dirname(schema_file), INFERRED_NAME)
    old_text = text_format.MessageToString(curated)
    new_text = text_format.MessageToString(updated)
    atomic_write(out, new_text)
    diff = list(difflib.unified_diff(
        old_text.splitlines(), new_text.splitlines(), fromfile=schema_file, tofile=out, lineterm="", n=2
    ))
    print(f"Wrote the schema the data in {args.output_dir} implies: {out}")
    remaining = []
    for split, stats in splits:
        anomalies = tfdv.validate_statistics(stats, updated)
        remaining += [f"split {split}: feature {k!r}: {v.description}" for k, v in sorted(anomalies.anomaly_info.items())]
    if not diff:
        print("It is the same as the curated schema: the data conforms.")
    else:
        print(f"Changes against {schema_file}:")
        print("  " + "\n  ".join(summarize_changes(curated, updated)))
        print("Diff (of the normalized text; curated comments are not kept in the written file):")
        print("\n".join(diff))
        print(
            "\nReview them. To accept: copy the changed entries into the curated schema "
            f"({schema_file}), or run the pipeline with --schema_file {out}."
        )
    if remaining:
        print("Still anomalous against the written schema:\n  " + "\n  ".join(remaining))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tunes a warm-started Trainer's learning rate on the days of a `bench.daily` run.

Replays every warm-started Trainer execution of the run's warm arm, read from its ML
Metadata (the execution's configuration, the Transform output it read and its base model,
the family's last blessed model), once from scratch and once warm at each
`warm_learning_rate_scale` of the grid, all in this process on the same rows. Writes
`bench/results/tuning/<name>.{json,md}`: per setting, each day's best eval value of the
family's early-stopping metric, its epochs and CPU seconds in Model.fit, their means, and
the scale with the best mean eval value (the choice reads the eval split only; the test
split is not read).

    python -m bench.daily --days 3 --rows 20000 --families mf --work_dir W --name daily_probe
    python -m bench.warm_replay --work_dir W --family mf --scales 1,2,4,7,10,15,30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from bench.common import command_line, RESULTS_DIR, commit, machine, md_table, mean_std, write_results
from pipeline.recovery import open_store

COLD = "cold"


def warm_executions(metadata_path: str, family: str) -> List[Dict[str, Any]]:
    """The family's Trainer executions that had a base model, in run order: their custom
    config (a mapping), Transform graph, transformed examples and base model (URIs)."""
    from ml_metadata.proto import metadata_store_pb2

    store = open_store(metadata_path)
    out = []
    for execution in sorted(store.get_executions(), key=lambda e: e.id):
        if not store.get_execution_types_by_id([execution.type_id])[0].name.endswith("Trainer"):
            continue
        inputs: Dict[str, str] = {}
        for event in store.get_events_by_execution_ids([execution.id]):
            if event.type == metadata_store_pb2.Event.INPUT and event.path.steps:
                inputs[event.path.steps[0].key] = store.get_artifacts_by_id([event.artifact_id])[0].uri
        config = json.loads(execution.custom_properties["custom_config"].string_value)
        if config.get("family") == family and "base_model" in inputs:
            out.append({"execution": execution.id, "config": config, **inputs})
    return out


def replay(execution: Dict[str, Any], scale: Optional[float]) -> Dict[str, Any]:
    """Trains the execution's family again on its rows: warm at `scale`, or from scratch (None)."""
    import tf_keras as keras

    from training import trainer
    from training.config import TrainConfig

    config = dict(execution["config"])
    if scale is not None:
        config["hparams"] = {**config.get("hparams", {}), "warm_learning_rate_scale": scale}
    config = TrainConfig.from_custom_config(config)
    keras.utils.set_random_seed(config.seed)
    examples = execution["examples"]
    _, summary, _ = trainer.train(
        config, [os.path.join(examples, "Split-train", "*")], [os.path.join(examples, "Split-eval", "*")],
        execution["transform_graph"],
        warm_from=None if scale is None else os.path.join(execution["base_model"], "Format-Serving"))
    return {k: summary[k] for k in ("monitor", "best_value", "epochs_run", "best_epoch", "train_cpu_seconds")}


def choose(rows: Sequence[Dict[str, Any]], mode: str) -> Dict[str, Any]:
    """Per setting: the mean and std of the days' best eval values, epochs and CPU seconds;
    `chosen`, the warm scale with the best mean eval value (`mode` min or max)."""
    settings: Dict[str, Dict[str, Any]] = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        settings[setting] = {key: mean_std([r[key] for r in mine]) for key in ("best_value", "epochs_run",
                                                                            "train_cpu_seconds")}
    warm = [s for s in settings if s != COLD]
    pick = (min if mode == "min" else max)(warm, key=lambda s: settings[s]["best_value"]["mean"])
    return {"settings": settings, "chosen": pick}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True, help="a bench.daily --work_dir")
    parser.add_argument("--family", default="mf")
    parser.add_argument("--scales", default="1,2,4,7,10,15,30")
    parser.add_argument("--name", default=None, help="results name (default <family>_warm_start)")
    args = parser.parse_args(argv)
    metadata = os.path.join(args.work_dir, "warm", "metadata.sqlite")
    if not os.path.exists(metadata):
        raise SystemExit(f"{metadata}: not found; --work_dir must be a bench.daily --work_dir with a warm arm")
    executions = warm_executions(metadata, args.family)
    if not executions:
        raise SystemExit(f"{metadata}: no warm-started Trainer execution of {args.family!r}")
    scales = [float(s) for s in args.scales.split(",")]
    rows = []
    for day, execution in enumerate(executions):
        for scale in [None] + scales:
            row = {"day": day, "execution": execution["execution"],
                   "setting": COLD if scale is None else f"warm x{scale:g}", **replay(execution, scale)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    mode = "max" if "auc" in rows[0]["monitor"] else "min"
    summary = choose(rows, mode)
    command = command_line("bench.warm_replay", argv)
    meta = {"command": command, "commit": commit(), "machine": machine()}
    table = [{"setting": s, "days": len(executions), f"{rows[0]['monitor']} ({mode}) mean": v["best_value"]["mean"],
              "std": v["best_value"]["std"], "epochs mean": v["epochs_run"]["mean"],
              "CPU s mean": v["train_cpu_seconds"]["mean"]} for s, v in summary["settings"].items()]
    markdown = "\n".join([
        f"# Warm-start learning rate of {args.family} (replayed days of {args.work_dir})", "",
        f"Chosen on the eval split: **{summary['chosen']}** (the best mean of the days' best "
        f"{rows[0]['monitor']}; `cold` is the same rows trained from scratch at the family's learning rate).", "",
        md_table(table, list(table[0])), "", "Per day:", "",
        md_table(rows, ["day", "execution", "setting", "best_value", "epochs_run", "best_epoch", "train_cpu_seconds"])])
    write_results(args.name or f"{args.family}_warm_start", [{"summary": summary, "meta": meta}] + rows, markdown,
                  meta, os.path.join(RESULTS_DIR, "tuning"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

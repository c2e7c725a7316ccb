"""One Trainer worker outside TFX: what each process of a multi-worker job runs.

Kubeflow's TFJob (or Vertex AI custom training) starts this in every worker container
with that worker's `TF_CONFIG`; the Trainer component's `run_fn` does the same inside TFX.

    TF_CONFIG='{"cluster": {"worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 0}}' \\
    python -m training.worker --config '{"family": "mf", "description": {...}, "strategy": "multi_worker"}' \\
        --train_files 'Transform/transformed_examples/7/Split-train/*' \\
        --eval_files 'Transform/transformed_examples/7/Split-eval/*' \\
        --transform_output Transform/transform_graph/7 --serving_model_dir /models/mf/1

`--config` is the Trainer's custom config (TrainConfig fields), the dataset's description
mapping (`contract.datasets.DatasetSpec.to_dict()`) included. Writes the training summary
(JSON) to `--summary_out` when given: the chief's, or every worker's when the path holds
`{worker}` (replaced by the worker's index).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Dict, List, Optional, Sequence

import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from common.io_utils import atomic_write
from training import distribute
from training.trainer import TrainConfig, train_and_export


def command(config: Dict, train_files: Sequence[str], eval_files: Sequence[str], transform_output: str,
            serving_model_dir: str, train_steps: int = 0, summary_out: str = "") -> List[str]:
    """The command line of one worker (this module), as a launcher on this machine runs it."""
    return [sys.executable, "-m", "training.worker", "--config", json.dumps(config),
            "--train_files", *train_files, "--eval_files", *eval_files, "--transform_output", transform_output,
            "--serving_model_dir", serving_model_dir, "--train_steps", str(train_steps),
            "--summary_out", summary_out]


def local_cluster(workers: int, host: str = "localhost") -> List[str]:
    """TF_CONFIG (JSON) of each of `workers` processes on this machine, one free loopback port each."""
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind((host, 0))
        cluster = [f"{host}:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the Trainer's custom config as JSON (TrainConfig fields)")
    parser.add_argument("--train_files", required=True, nargs="+")
    parser.add_argument("--eval_files", required=True, nargs="+")
    parser.add_argument("--transform_output", required=True)
    parser.add_argument("--serving_model_dir", required=True)
    parser.add_argument("--train_steps", type=int, default=0, help="cap on total steps (0: none)")
    parser.add_argument("--base_model", default="", help="the teacher's exported model (a distilled family)")
    parser.add_argument("--summary_out", default="")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_custom_config(json.loads(args.config))
    except (ValueError, TypeError) as e:
        print(f"--config: {e}", file=sys.stderr)
        return 2
    summary = train_and_export(config, args.train_files, args.eval_files, args.transform_output,
                               args.serving_model_dir, train_steps=args.train_steps or None,
                               base_model=args.base_model or None)
    spec = distribute.cluster_spec()
    index = 0 if spec is None else int(spec["task"]["index"])
    if args.summary_out and (index == 0 or "{worker}" in args.summary_out):
        atomic_write(args.summary_out.replace("{worker}", str(index)), json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

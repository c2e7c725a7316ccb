"""Serving latency benchmark: gRPC (local server or TF Serving) against the SavedModel in-process.

For Predict with 1 and 100 candidate examples and for `recommend`, at concurrency 1
and 8, measures p50/p95/p99 latency and requests/s through gRPC and by calling the
same SavedModel in this process (the limit), each cell bounded by a request count
and a time budget, and the CPU time per request: of this process (the client, or the
in-process model) and, for a local server, of the server process (from /proc). Each cell
is measured `--repeats` times, in-process and gRPC back to back in each repeat; a row gives
the mean over repeats and their std, and each goal is decided by a 95% t interval over the
repeats (the gRPC - in-process p50 gap paired by repeat; the requests/s), never by one
measurement. Writes `<out>/serving.json` and `<out>/serving.md` atomically.

    python -m bench.serving --model_base DIR --model mf [--examples FILE] --out bench/results
    python -m bench.serving --stand_in --out /tmp/bench   # dry run on a stand-in model
    python -m bench.serving --model_base DIR --model mf --server_batch_rows 512,0   # merging on / off

Inputs: `--examples`, else the model's warmup requests; without them (and for the stand-in
model, whose catalogue they are) the raw test examples ExampleGen writes for the dataset
description (`--dataset` / `--dataset_file`, `--data_dir`; MovieLens by default), as the
data stages of `bench.common` write them.

Without --target a local server (`serving.local_server`) is started in a child
process on a free loopback port, once per `--server_batch_rows` value (its
`--max_batch_rows`: 0 turns request merging off); with --target an already running
server (e.g. tensorflow_model_server serving the same base) is measured instead (its CPU
is not). CPU time is less sensitive to other work on the machine than latency, but not
immune to it (shared caches and cores): say which machine and load a figure comes from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from contract import features  # noqa: E402
from serving import client as serving_client  # noqa: E402
from contract import protocol
from export import warmup  # noqa: E402
from common.io_utils import atomic_write
from bench.machine import command_line, commit, cpu_model
from serving.local_server import DEFAULT_MAX_BATCH_ROWS as DEFAULT_BATCH_ROWS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = 100
GOAL_P50_GAP_MS = 1.0
GOAL_QPS = 1000.0
REPEATS = 5  # measurements per cell: a goal's interval is over them


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def newest_version_dir(model_base: str, model: str) -> Tuple[int, str]:
    model_dir = os.path.join(model_base, model)
    if not os.path.isdir(model_dir):
        raise SystemExit(f"error: model directory {model_dir} does not exist")
    versions = [
        int(n)
        for n in os.listdir(model_dir)
        if n.isdigit() and os.path.exists(os.path.join(model_dir, n, "saved_model.pb"))
    ]
    if not versions:
        raise SystemExit(f"error: {model_dir} has no version directory with a saved_model.pb")
    version = max(versions)
    return version, os.path.join(model_dir, str(version))


def read_examples_file(path: str, limit: int = CANDIDATES) -> List[bytes]:
    """Serialized tf.Examples from a TFRecord file (GZIP when the name ends in .gz)."""
    if not os.path.exists(path):
        raise SystemExit(f"error: examples file {path} does not exist")
    compression = "GZIP" if path.endswith(".gz") else ""
    out = []
    for i, record in enumerate(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator()):
        try:
            tf.train.Example.FromString(record)
        except Exception:
            raise SystemExit(f"error: {path} record {i} is not a serialized tf.Example") from None
        out.append(record)
        if len(out) >= limit:
            break
    if not out:
        raise SystemExit(f"error: {path} holds no records")
    return out


def warmup_inputs(version_dir: str) -> Tuple[List[bytes], List[Tuple[list, list]]]:
    """Examples and histories found in the version's warmup requests (the pushed model's own)."""
    examples, histories = [], []
    for record in warmup.read_warmup_requests(version_dir):
        request = record.predict_log.request
        sig = request.model_spec.signature_name or protocol.SERVING_DEFAULT
        if sig == protocol.SERVING_DEFAULT and protocol.EXAMPLES in request.inputs:
            examples.extend(protocol.tensor_proto_to_ndarray(request.inputs[protocol.EXAMPLES]).tolist())
        elif sig == protocol.RECOMMEND and features.HISTORY_ITEM_IDS in request.inputs:
            items = protocol.tensor_proto_to_ndarray(request.inputs[features.HISTORY_ITEM_IDS])
            behaviors = protocol.tensor_proto_to_ndarray(request.inputs[features.HISTORY_BEHAVIORS])
            for irow, brow in zip(items, behaviors):
                keep = [i for i, v in enumerate(irow) if v != protocol.HISTORY_PAD]
                histories.append(([irow[i] for i in keep], [brow[i] for i in keep]))
    return examples, histories


# Raw features the served model takes (serving_default reads these; labels, the split and
# interaction outcomes are dropped from the examples it is sent).
def data_inputs(args, n: int = CANDIDATES) -> Tuple[List[bytes], List[Tuple[list, list]]]:
    """Raw-feature examples of the dataset's test split and the first non-empty history among
    them, from the data stages ExampleGen wrote for the description of `args`."""
    from bench import common
    from contract import description as desc

    stages = common.stages_of_args(args)
    served = {f.name for f in desc.raw_features(stages.config.load_description()) if f.serving}
    examples, histories = [], []
    files = stages.raw_files(features.INTERACTION_VIEW, "test")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        kept = tf.train.Example()
        for name, feature in example.features.feature.items():
            if name in served:
                kept.features.feature[name].CopyFrom(feature)
        examples.append(kept.SerializeToString())
        items = [v.decode() for v in example.features.feature[features.HISTORY_ITEM_IDS].bytes_list.value]
        if items and not histories:
            behaviors = [v.decode() for v in example.features.feature[features.HISTORY_BEHAVIORS].bytes_list.value]
            histories.append((items, behaviors))
        if len(examples) >= n and histories:
            break
    if not examples:
        raise SystemExit(f"error: no test examples in {files}")
    return examples[:n], histories


def make_stand_in(base: str, model: str, examples: Sequence[bytes], histories, behaviors: Sequence[str] = ()) -> None:
    """A stand-in model (test fixture) over the items of `examples` and `histories`, for dry runs;
    `behaviors`: the description's behavior vocabulary, weakest first (the stand-in's recommend
    favours histories of the strongest)."""
    from serving import stand_in

    ids = sorted({tf.train.Example.FromString(e).features.feature[features.ITEM_ID].bytes_list.value[0].decode()
                  for e in examples} | {i for items, _ in histories for i in items})
    rng = np.random.default_rng(0)
    scores = dict(zip(ids, rng.uniform(0.5, 5.0, len(ids)).tolist()))
    stand_in.push_stand_in_version(
        base, model, int(time.time()), scores, warmup_examples=list(examples[:CANDIDATES]),
        warmup_histories=histories, behaviors=behaviors,
    )


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------
def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(call: Callable[[], object], concurrency: int, max_requests: int, max_seconds: float, warm: int = 20,
             server_pid: Optional[int] = None, keep_latencies: bool = False) -> dict:
    """Latency percentiles, throughput and CPU milliseconds per request of `call` from
    `concurrency` threads: of this process (`client_cpu_ms`) and of `server_pid` when given
    (`server_cpu_ms`, else None), over the timed requests (failed ones included); with
    `keep_latencies`, also every successful request's latency (`latencies_ms`, in ms, thread
    by thread in request order), for a bootstrap over requests."""
    for _ in range(warm):
        call()
    per_thread = max(1, max_requests // concurrency)
    latencies: List[List[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: List[str] = []
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        out = latencies[i]
        start_gate.wait()
        end = deadline[0]
        clock = time.perf_counter
        for _ in range(per_thread):
            t0 = clock()
            try:
                call()
            except Exception as exc:  # counted, and the first one reported
                errors[i] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            t1 = clock()
            out.append(t1 - t0)
            if t1 > end:
                break

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    cpu_start = time.process_time()
    server_start = process_cpu_seconds(server_pid) if server_pid else None
    t_start = time.perf_counter()
    deadline[0] = t_start + max_seconds
    start_gate.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    client_cpu = time.process_time() - cpu_start
    server_cpu = process_cpu_seconds(server_pid) - server_start if server_pid else None
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1000.0
    n = int(lat.size)
    if n == 0:
        raise RuntimeError(f"no request succeeded: {first_error[0] if first_error else 'unknown error'}")
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    sent = n + int(sum(errors))
    return {
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "qps": round(n / wall, 1),
        "requests": n,
        "errors": int(sum(errors)),
        "client_cpu_ms": round(1000.0 * client_cpu / sent, 3),
        "server_cpu_ms": round(1000.0 * server_cpu / sent, 3) if server_cpu is not None else None,
        "first_error": first_error[0] if first_error else None,
        **({"latencies_ms": [float(x) for x in lat]} if keep_latencies else {}),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_server(model_base: str, model: str, log_path: str,
                       max_batch_rows: Optional[int] = None) -> Tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "serving.local_server", "--model_base", model_base, "--port", str(port),
        "--models", model, "--poll_seconds", "0",
    ]
    if max_batch_rows is not None:
        cmd += ["--max_batch_rows", str(max_batch_rows)]
    log_file = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{port}"


def wait_ready(target: str, model: str, proc: Optional[subprocess.Popen], log_path: Optional[str], timeout_s: float = 180.0) -> None:
    end = time.time() + timeout_s
    probe = serving_client.ServingClient(target, timeout_s=5.0, retries=0)
    try:
        while time.time() < end:
            if proc is not None and proc.poll() is not None:
                with open(log_path) as f:
                    raise SystemExit(f"error: local server exited with {proc.returncode}:\n{f.read()[-3000:]}")
            try:
                if any(s["state"] == "AVAILABLE" for s in probe.model_status(model)):
                    return
            except serving_client.ServingError:
                pass
            time.sleep(0.5)
    finally:
        probe.close()
    raise SystemExit(f"error: model {model!r} not AVAILABLE at {target} after {timeout_s:.0f}s")


def pooled(repeats: Sequence[dict]) -> dict:
    """One row's values from the measurements of a cell: the mean over repeats of each
    latency percentile, the requests/s and the CPU per request, their stds (p50, requests/s),
    the summed requests and errors, and each repeat's p50 and requests/s (`repeats`)."""
    def mean(key):
        values = [r[key] for r in repeats if r.get(key) is not None]
        return round(float(np.mean(values)), 3) if values else None

    def std(key):
        return round(float(np.std([r[key] for r in repeats], ddof=1)), 3) if len(repeats) > 1 else None

    errors = [r["first_error"] for r in repeats if r.get("first_error")]
    return {"p50_ms": mean("p50_ms"), "p95_ms": mean("p95_ms"), "p99_ms": mean("p99_ms"), "qps": mean("qps"),
            "p50_std_ms": std("p50_ms"), "qps_std": std("qps"),
            "requests": int(sum(r["requests"] for r in repeats)), "errors": int(sum(r["errors"] for r in repeats)),
            "client_cpu_ms": mean("client_cpu_ms"), "server_cpu_ms": mean("server_cpu_ms"),
            "first_error": errors[0] if errors else None,
            "repeats": [{"p50_ms": r["p50_ms"], "qps": r["qps"]} for r in repeats]}


def render_markdown(rows: List[dict], meta: dict) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: {meta.get('commit') or 'not recorded'}",
        f"- model: `{meta['model']}` version {meta['version']} ({meta['model_dir']})",
        f"- server: {meta['server']}",
        f"- machine: {meta['nproc']} CPUs (`nproc`), {meta['cpu_model']}; Python {meta['python']}, "
        f"TensorFlow {meta['tensorflow']}",
        f"- machine load: {meta['load']}",
        f"- inputs: {meta['inputs']}",
        f"- bounds per cell: {meta['max_requests']} requests or {meta['max_seconds']} s, measured "
        f"{meta.get('repeats', 1)} time(s) (a row: the mean over them; in-process and gRPC back to back)",
        f"- date: {meta['date']}",
        "",
        "CPU ms per request: `client` is this process (the gRPC client threads, or the model called "
        "in-process), `server` the local server's process; `server merging` is its `--max_batch_rows` "
        "(0: every request its own call).",
        "",
        "| path | signature | batch | concurrency | server merging | p50 ms | p50 std | p95 ms | p99 ms | "
        "requests/s | requests/s std | CPU ms/request client | CPU ms/request server | requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for r in rows:
        qps_std = r.get("qps_std")
        lines.append(
            f"| {r['path']} | {r['signature']} | {r['batch']} | {r['concurrency']} | "
            f"{'' if r.get('max_batch_rows') is None else r['max_batch_rows']} | {r['p50_ms']:.3f} | "
            f"{ms_or_na(r.get('p50_std_ms'))} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['qps']:.0f} | "
            f"{'n/a' if qps_std is None else f'{qps_std:.0f}'} | {ms_or_na(r.get('client_cpu_ms'))} | "
            f"{ms_or_na(r.get('server_cpu_ms'))} | {r['requests']} | {r['errors']} |"
        )
    lines += ["", "## Goals", ""]
    for line in meta["goals"]:
        lines.append(f"- {line}")
    cpu = cpu_lines(rows)
    if cpu:
        lines += ["", "## CPU per request", ""] + [f"- {line}" for line in cpu]
    return "\n".join(lines) + "\n"


def cpu_lines(rows: List[dict]) -> List[str]:
    """Per signature, batch and concurrency: CPU ms per request through gRPC (client plus
    local server) for each server merging setting, against the model called in-process,
    and what merging saves when both settings were measured."""
    out = []
    cells = sorted({(r["signature"], r["batch"], r["concurrency"]) for r in rows}, key=lambda c: (c[0], c[1], c[2]))
    for sig, batch, conc in cells:
        same = [r for r in rows if (r["signature"], r["batch"], r["concurrency"]) == (sig, batch, conc)]
        local = next((r for r in same if r["path"] == "in_process"), None)
        grpc_rows = [r for r in same if r["path"] == "grpc" and r.get("server_cpu_ms") is not None]
        if not grpc_rows:
            continue
        totals = {r["max_batch_rows"]: r["client_cpu_ms"] + r["server_cpu_ms"] for r in grpc_rows}
        parts = [f"merging {m}: {t:.3f} ms" for m, t in totals.items()]
        line = f"{sig}, batch {batch}, concurrency {conc}: gRPC client + server " + ", ".join(parts)
        if local is not None:
            line += (f"; in-process {local['client_cpu_ms']:.3f} ms, so gRPC adds "
                     + ", ".join(f"{t - local['client_cpu_ms']:.3f} ms (merging {m})" for m, t in totals.items()))
        on = [m for m in totals if m]
        if on and 0 in totals and totals[0] > 0:
            line += f"; merging changes it by {totals[on[0]] / totals[0] - 1:+.0%}"
        out.append(line)
    return out


def goals(rows: List[dict]) -> List[str]:
    from bench.common import LEVEL, t_interval

    def find(path, sig, batch, conc):
        for r in rows:  # the first server setting (the default unless --server_batch_rows says otherwise)
            if (r["path"], r["signature"], r["batch"], r["concurrency"]) == (path, sig, batch, conc):
                return r
        return None

    def repeats(row, key):
        return [r[key] for r in row.get("repeats", [])]

    def decide(values: List[float], bound: float, at_most: bool):
        """((mean, low, high) or None, verdict): the goal against `bound` by the t interval of
        `values` (at most the bound: a gap; at least: a rate)."""
        if len(values) < 2:
            return None, "not decided (one measurement; an interval needs --repeats 2 or more)"
        mean, low, high = t_interval(values)
        inside, outside = (high <= bound, low > bound) if at_most else (low >= bound, high < bound)
        return (mean, low, high), "met" if inside else "NOT met" if outside else \
            "not decided (the interval holds the bound)"

    def how(values) -> str:
        return f"({len(values)} repeats, {LEVEL:.0%} t interval)"

    out = []
    g, i = find("grpc", protocol.SERVING_DEFAULT, 1, 1), find("in_process", protocol.SERVING_DEFAULT, 1, 1)
    if g and i:
        gaps = [a - b for a, b in zip(repeats(g, "p50_ms"), repeats(i, "p50_ms"))]  # paired by repeat
        interval, verdict = decide(gaps, GOAL_P50_GAP_MS, at_most=True)
        detail = "" if interval is None else \
            ", gap {:.3f} ms [{:.3f}, {:.3f}] ".format(*interval) + how(gaps)
        out.append(f"gRPC p50 within {GOAL_P50_GAP_MS:g} ms of in-process at batch 1 (concurrency 1): "
                   f"{g['p50_ms']:.3f} ± {ms_or_na(g.get('p50_std_ms'))} vs {i['p50_ms']:.3f} ± "
                   f"{ms_or_na(i.get('p50_std_ms'))} ms{detail}: {verdict}")
    g8 = find("grpc", protocol.SERVING_DEFAULT, 1, 8)
    if g8:
        values = repeats(g8, "qps")
        interval, verdict = decide(values, GOAL_QPS, at_most=False)
        detail = "" if interval is None else " [{1:.0f}, {2:.0f}] ".format(*interval) + how(values)
        out.append(f">= {GOAL_QPS:.0f} requests/s at concurrency 8, batch 1: {g8['qps']:.0f}{detail}: {verdict}")
    return out


def ms_or_na(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base", help="serving base holding <model>/<version>/")
    parser.add_argument("--model", default="mf")
    parser.add_argument("--examples", default=None, help="TFRecord of serialized tf.Examples (.gz = GZIP)")
    parser.add_argument("--out", default=os.path.join("bench", "results"))
    parser.add_argument("--name", default="serving", help="result files <out>/<name>.json and .md")
    parser.add_argument("--target", default=None, help="measure this running server instead of a local one")
    parser.add_argument("--requests", type=int, default=3000, help="request bound per cell")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per cell")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="measurements per cell (in-process and gRPC back to back in each); the goals' "
                             "intervals are over them")
    parser.add_argument("--stand_in", action="store_true", help="benchmark a stand-in model (dry run)")
    parser.add_argument("--work_dir", default=None, help="where the data stages of the fallback inputs are written "
                                                         "(default: bench.common's)")
    parser.add_argument("--server_batch_rows", default="",
                        help="comma-separated --max_batch_rows of the local server, one server per value "
                             "(default: the server's own default); 0 turns request merging off")
    from bench import common

    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or common.DEFAULT_WORK_DIR
    ran_at = commit()  # before the measurement: the code it ran
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    batch_rows: List[Optional[int]] = [int(v) for v in args.server_batch_rows.split(",") if v] or [None]
    if args.target and args.server_batch_rows:
        parser.error("--server_batch_rows sets the local server's merging; with --target the server is yours")

    tmp_base = None
    if args.stand_in:
        tmp_base = tempfile.mkdtemp(prefix="bench-serving-")
        behaviors = common.stages_of_args(args).config.spec.behaviors
        make_stand_in(tmp_base, args.model, *data_inputs(args), behaviors=behaviors)
        args.model_base = tmp_base
    if not args.model_base:
        parser.error("--model_base is required (or --stand_in)")
    version, version_dir = newest_version_dir(args.model_base, args.model)

    if args.examples:
        examples, histories = read_examples_file(args.examples), []
        source = f"examples from {args.examples}"
    else:
        examples, histories = warmup_inputs(version_dir)
        source = "examples from the model's warmup requests"
        if not examples:
            examples, _ = data_inputs(args)
            source = "the raw test examples of the dataset's data stages"
    if not histories:
        _, histories = data_inputs(args, n=1)
    batch100 = [examples[i % len(examples)] for i in range(CANDIDATES)]
    hist_items, hist_behaviors = protocol.history_arrays([histories[0][0]], [histories[0][1]])
    source += f"; recommend history of {len(histories[0][0])} item(s)"

    loaded = tf.saved_model.load(version_dir)
    signatures = set(loaded.signatures.keys())
    cases: List[Tuple[str, int, Dict[str, np.ndarray]]] = []
    # Scoring cases where the model scores examples (a retrieval-only family's serving_default
    # is its `recommend`, measured below).
    default_inputs = loaded.signatures[protocol.SERVING_DEFAULT].structured_input_signature[1]
    if protocol.EXAMPLES in default_inputs:
        cases += [
            (protocol.SERVING_DEFAULT, 1, {protocol.EXAMPLES: np.array(batch100[:1], dtype=object)}),
            (protocol.SERVING_DEFAULT, CANDIDATES, {protocol.EXAMPLES: np.array(batch100, dtype=object)}),
        ]
    if protocol.RECOMMEND in signatures:
        cases.append(
            (protocol.RECOMMEND, 1, {features.HISTORY_ITEM_IDS: hist_items, features.HISTORY_BEHAVIORS: hist_behaviors})
        )

    load_before = os.getloadavg()
    log_path = os.path.join(tempfile.gettempdir(), f"bench-serving-server-{os.getpid()}.log")
    servers = []
    rows = []
    for setting_index, max_batch_rows in enumerate(batch_rows):
        proc = None
        target = args.target
        if target is None:
            proc, target = start_local_server(args.model_base, args.model, log_path, max_batch_rows)
            servers.append(f"serving.local_server (child process, {target}"
                           + (f", --max_batch_rows {max_batch_rows}" if max_batch_rows is not None else "") + ")")
        else:
            servers.append(f"existing server at {target}")
        try:
            wait_ready(target, args.model, proc, log_path)
            client = serving_client.ServingClient(target, timeout_s=30.0, retries=2)
            for sig, batch, inputs in cases:
                fn = loaded.signatures[sig]
                specs = fn.structured_input_signature[1]

                def in_process(fn=fn, inputs=inputs, specs=specs):
                    out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
                    return {k: v.numpy() for k, v in out.items()}

                protos = protocol.as_input_protos(inputs)

                def grpc_call(sig=sig, protos=protos):
                    return client.predict(args.model, protos, sig)

                # Same answers both ways, or the comparison is meaningless.
                a, b = in_process(), grpc_call().outputs
                for key in a:
                    if a[key].dtype.kind == "f":
                        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{sig}/{key}")
                    else:
                        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{sig}/{key}")
                # The in-process limit once; gRPC once per server setting; each cell --repeats
                # times, the paths back to back in each repeat (their gap is paired by repeat).
                paths = (("in_process", in_process),) if setting_index == 0 else ()
                for conc in concurrencies:
                    measured: Dict[str, List[dict]] = {}
                    for _ in range(args.repeats):
                        for path, call in paths + (("grpc", grpc_call),):
                            pid = proc.pid if (path == "grpc" and proc is not None) else None
                            measured.setdefault(path, []).append(
                                run_cell(call, conc, args.requests, args.seconds, server_pid=pid))
                    for path, _ in paths + (("grpc", grpc_call),):
                        pid = proc.pid if (path == "grpc" and proc is not None) else None
                        stats = pooled(measured[path])
                        row = {"path": path, "signature": sig, "batch": batch, "concurrency": conc,
                               "max_batch_rows": (max_batch_rows if max_batch_rows is not None else
                                                  DEFAULT_BATCH_ROWS) if pid else None, **stats}
                        rows.append(row)
                        print(
                            f"{path:10} {sig:16} batch {batch:3d} conc {conc}"
                            + (f" merge {row['max_batch_rows']}" if pid else "")
                            + f": p50 {stats['p50_ms']:.3f} ms p95 {stats['p95_ms']:.3f} p99 {stats['p99_ms']:.3f} "
                            f"qps {stats['qps']:.0f} cpu ms/request client {stats['client_cpu_ms']:.3f} server "
                            f"{stats['server_cpu_ms'] if stats['server_cpu_ms'] is not None else 'n/a'} "
                            f"errors {stats['errors']}",
                            flush=True,
                        )
            client.close()
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    server_desc = "; ".join(servers)
    meta = {
        "command": command_line("bench.serving", argv),
        "commit": ran_at,
        "model": args.model,
        "version": version,
        "model_dir": "stand-in model (test fixture)" if args.stand_in else version_dir,
        "server": server_desc,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "inputs": source,
        "load": f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute load average)",
        "max_requests": args.requests,
        "max_seconds": args.seconds,
        "repeats": args.repeats,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    meta["goals"] = goals(rows)
    for row in rows:
        row.pop("first_error", None) if row.get("errors", 0) == 0 else None
    atomic_write(os.path.join(args.out, f"{args.name}.json"), json.dumps(rows, indent=2) + "\n")
    atomic_write(os.path.join(args.out, f"{args.name}.md"), render_markdown(rows, meta))
    if tmp_base is not None:
        shutil.rmtree(tmp_base, ignore_errors=True)
    for line in meta["goals"]:
        print(line)
    print(f"wrote {os.path.join(args.out, args.name + '.json')} and {args.name}.md")


if __name__ == "__main__":
    main()

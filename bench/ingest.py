"""Scaling benchmark of the data stages: ExampleGen + Transform as a dataset grows, per Beam profile.

`make bench-ingest` (or `python -m bench.ingest --scales 1,4,16 --profiles
in_process,multi_process --out bench/results`) runs the pipeline's data stages
(`pipeline.local_runner.run` with no model families) on a dataset description's data
(`--dataset` / `--dataset_file`, `--data_dir`; the shipped MovieLens data by default)
replicated `scale` times with offset user and item ids, once per Beam profile
(pipeline/configs.py BEAM_PROFILES), each run in a child process so its peak memory is
its own. It writes under `--out`, rewritten after every run so a long run keeps what it
has measured:

- `scale.json`: one row per (stage, profile, scale) with stage ExampleGen, Transform or
  ExampleGen+Transform: rows, seconds, rows_per_second, peak_rss_mb (the process tree's
  resident memory, sampled every second, during that stage), and the load average;
- `scale_runs.json`: one row per (profile, scale) run with every measurement;
- `scale.md`: the table, plus command, data, split, seed, machine and load.

With `--trainer_workers 1,2` (the default) it then trains one family (`--trainer_family`,
mf by default) on the smallest scale's Transform output with each number of worker
processes (`python -m training.worker`; two or more join one MultiWorkerMirroredStrategy
over loopback, as tests/test_distributed_training.py runs them) and adds a row per count
with stage `Trainer (<family>)`: rows = training examples seen (train rows x epochs),
seconds = the chief's fit time, peak RSS = the workers' resident memory together.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from pipeline.configs import (BEAM_PROFILES, REPO_ROOT, PipelineConfig, add_dataset_arguments, dataset_overrides,
                              families_arg, with_beam_profile)
from models.hparams import parse_assignments
from common.io_utils import atomic_path
from contract import description as desc
from bench.machine import command_line, commit, cpu_model

DEFAULT_OUT = str(REPO_ROOT / "bench" / "results")
RESULTS_JSON = "scale.json"
RUNS_JSON = "scale_runs.json"
RESULTS_MD = "scale.md"
PROFILES = ("in_process", "multi_process")  # the Beam profiles that run on one machine

# Component ids in the pipeline (pipeline/pipeline.py).
EXAMPLE_GEN = "InteractionExampleGen"
TRANSFORM = "Transform"
STATISTICS_GEN = "StatisticsGen"


# ----------------------------------------------------------------------------
# Replicated data
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class ReplicaInfo:
    """What `replicate` wrote.

    Attributes:
      copies: replicas written (1 = the original data).
      rows: interaction records in the written interaction files.
      items: records in the written item table (0 without one).
      user_offset: added to integer user ids once per replica (max user id + 1); 0 when the
        ids are not all integers and replicas prefix them instead ("r1-", "r2-", ...).
      item_offset: the same for item ids.
      bytes: size of the written files together.
    """

    copies: int
    rows: int
    items: int
    user_offset: int
    item_offset: int
    bytes: int


class _Table:
    """One file of a description's table: its records (raw bytes and fields) and how to write new ones."""

    def __init__(self, source: desc.Source, path: str):
        self.source, self.path = source, path
        with open(path, "rb") as f:
            self.raw = f.read()
        self.line_end = b"\r\n" if self.raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
        self.header: Optional[List[str]] = None
        self.records: List[tuple] = []  # (line number, fields or JSON object)
        if source.format == desc.JSONL:
            for number, line in enumerate(self.raw.splitlines(), start=1):
                if line.strip():
                    try:
                        self.records.append((number, json.loads(line)))
                    except ValueError:
                        raise ValueError(f"{path}:{number}: not a JSON object: {line[:80]!r}") from None
        elif source.format in (desc.CSV, desc.TSV):
            import csv
            import io

            text = io.StringIO(self.raw.decode(source.encoding), newline="")
            reader = csv.reader(text, delimiter=source.delimiter, quotechar=source.quotechar)
            for fields in reader:
                if source.header and self.header is None:
                    self.header = fields
                elif fields and any(f.strip() for f in fields):
                    self.records.append((reader.line_num, fields))
        else:
            raise ValueError(f"{path}: replicating {source.format} files is not supported (csv, tsv, jsonl)")

    def index(self, column: str) -> Any:
        """Where a column's value is in a record (a field index, or the JSON key)."""
        if self.source.format == desc.JSONL:
            return column
        names = self.header if self.header is not None else list(self.source.columns)
        if column not in names:
            raise ValueError(f"{self.path}: no column {column!r}; columns: {names}")
        return names.index(column)

    def values(self, column: str) -> List[str]:
        at = self.index(column)
        return [str(record[at]) for _, record in self.records]

    def replica(self, changes: Dict[Any, Callable[[str], str]]) -> bytes:
        """Every record with the values of the changed columns replaced."""
        if self.source.format == desc.JSONL:
            out = []
            for _, record in self.records:
                record = dict(record)
                for key, change in changes.items():
                    record[key] = type(record[key])(change(str(record[key]))) if isinstance(record[key], int) \
                        else change(str(record[key]))
                out.append(json.dumps(record).encode(self.source.encoding) + self.line_end)
            return b"".join(out)
        import csv
        import io

        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, delimiter=self.source.delimiter, quotechar=self.source.quotechar,
                            lineterminator=self.line_end.decode())
        for _, fields in self.records:
            fields = list(fields)
            for at, change in changes.items():
                fields[at] = change(fields[at])
            writer.writerow(fields)
        return buffer.getvalue().encode(self.source.encoding)


def _renamer(values: Sequence[str], what: str) -> Tuple[int, Callable[[int], Callable[[str], str]]]:
    """(offset, replica -> id change): integer ids offset by replica * (max + 1) (a leading
    '+' or zeros are not kept), other ids prefixed "r<replica>-"."""
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        return 0, lambda replica: (lambda v: f"r{replica}-{v}")
    if not numbers:
        raise ValueError(f"no {what} to replicate")
    offset = max(numbers) + 1
    return offset, lambda replica: (lambda v: str(int(v) + replica * offset))


def _files(source: desc.Source, src_dir: str) -> List[str]:
    paths = sorted(p for pattern in source.files for p in glob.glob(os.path.join(src_dir, pattern)))
    if not paths:
        raise FileNotFoundError(f"no file matches {list(source.files)} in {src_dir}")
    return paths


def replicate(d: desc.Description, src_dir: str, dst_dir: str, copies: int) -> ReplicaInfo:
    """Writes the description's interaction files and item table, replicated `copies` times, into `dst_dir`.

    Replica r (0-based; replica 0 is the original file, byte for byte) changes the user and
    item ids so that replicas share no user or item: integer ids get r * (max id + 1) added
    (the item offset over the interactions and the item table together), other ids the
    prefix "r<r>-". The rest of each record is kept; csv records are rewritten with the
    file's delimiter, quote character and line end (minimal quoting). Each file is written
    to a temporary name and renamed.

    Args:
      d: the dataset description (files, formats, the user, item and item-key columns).
      src_dir: directory holding the description's files.
      dst_dir: directory to write into (created when missing).
      copies: number of replicas, at least 1.
    """
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    interactions = [_Table(d.interactions, p) for p in _files(d.interactions, src_dir)]
    items = [_Table(d.items, p) for p in _files(d.items, src_dir)] if d.items is not None else []
    user_offset, user_change = _renamer([v for t in interactions for v in t.values(d.user)], "user ids")
    item_offset, item_change = _renamer([v for t in interactions for v in t.values(d.item)]
                                        + [v for t in items for v in t.values(d.item_key)], "item ids")
    os.makedirs(dst_dir, exist_ok=True)
    size = 0
    for table, columns in [(t, {d.user: user_change, d.item: item_change}) for t in interactions] + \
                          [(t, {d.item_key: item_change}) for t in items]:
        def chunks(table=table, columns=columns):
            yield table.raw
            if copies > 1 and table.raw and not table.raw.endswith(b"\n"):
                yield table.line_end
            for replica in range(1, copies):
                yield table.replica({table.index(c): change(replica) for c, change in columns.items()})

        target = os.path.join(dst_dir, os.path.relpath(table.path, src_dir))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        size += _write_atomically(target, chunks())
    return ReplicaInfo(copies, sum(len(t.records) for t in interactions) * copies,
                       sum(len(t.records) for t in items) * copies, user_offset, item_offset, size)


def _write_atomically(path: str, chunks: Iterable[bytes]) -> int:
    """Writes the chunks to `path` through a temporary file and a rename; returns the bytes written."""
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            written += len(chunk)
    return written


# ----------------------------------------------------------------------------
# One scale (child process)
# ----------------------------------------------------------------------------
_COMPONENT_LINE = re.compile(r"^Component (\S+) is (running|finished)\.$")  # LocalDagRunner's log lines


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and its finished children so far.

    The multi-process profile's Beam workers are children that end with each Beam
    pipeline, so their CPU time is counted once the component finishes.
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class _ComponentCpu(logging.Handler):
    """CPU seconds per component, from the runner's 'Component X is running/finished.' records.

    CPU time, unlike wall time, does not grow when other jobs share the cores.
    """

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.seconds: Dict[str, float] = {}
        self.windows: Dict[str, List[float]] = {}  # component -> [start, finish] (epoch seconds)
        self._started: Dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            match = _COMPONENT_LINE.match(record.getMessage())
        except Exception:  # a malformed record is not ours to report
            return
        if not match:
            return
        name, state = match.groups()
        if state == "running":
            self._started[name] = _cpu_seconds()
            self.windows[name] = [time.time()]
        elif name in self._started:
            self.seconds[name] = round(_cpu_seconds() - self._started.pop(name), 2)
            self.windows[name].append(time.time())


def _peak_rss_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024.0, 1)  # ru_maxrss is KiB on Linux


def _run_one_scale(data_dir: str, output_dir: str, result_path: str, profile: str = "in_process",
                   transform_tf2: bool = False, data: Optional[Dict[str, Any]] = None,
                   families: Sequence[str] = ()) -> int:
    """Runs the pipeline once and writes its timings, rows and peak RSS to `result_path`.

    Args:
      data_dir / output_dir: the replicated data and where the run writes.
      result_path: the result file.
      profile: the Beam profile.
      transform_tf2: Transform in tf.Transform's TF2 mode.
      data: the dataset options (PipelineConfig fields: dataset, split, ...).
      families: the model families to train, evaluate and push (none: the data stages only).
    """
    from pipeline import local_runner, report as run_report

    config = with_beam_profile(
        dataclasses.replace(PipelineConfig(), **(data or {}), data_dir=data_dir, output_dir=output_dir,
                            families=tuple(families),
                            transform_tf_compat_v1=not transform_tf2).resolved(), profile)
    result: Dict[str, object] = {"split": config.split, "seed": config.seed,
                                 "transform_tf_compat_v1": config.transform_tf_compat_v1,
                                 "beam_pipeline_args": list(config.beam_pipeline_args),
                                 "log_path": config.log_path}
    started = time.monotonic()
    status = 0
    cpu = _ComponentCpu()
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(cpu)
    try:
        timings = local_runner.run(config, progress_out=sys.stdout)
        result["status"] = "ok"
        result["timings"] = {t.name: round(t.seconds, 2) for t in timings}
        result["cpu_timings"] = dict(cpu.seconds)
        result["windows"] = dict(cpu.windows)
        examples_dir = run_report.output_dirs(config.pipeline_root)[EXAMPLE_GEN]["examples"]
        with open(os.path.join(examples_dir, "ingest_report.json")) as f:
            report = json.load(f)
        result["rows_read"] = report["rows_read"]
        result["rows_written"] = report["rows_written"]
        result["users"] = report["users"]
    except local_runner.PipelineFailed as e:
        status = 1
        result["status"] = "failed"
        result["error"] = f"component {e.component}: {type(e.cause).__name__}: {e.cause}"
        result["log_tail"] = local_runner.tail(e.log_path, 20)
    finally:
        absl_logger.removeHandler(cpu)
    result["pipeline_seconds"] = round(time.monotonic() - started, 2)
    result["process_cpu_seconds"] = round(_cpu_seconds(), 2)
    result["peak_rss_mb"] = _peak_rss_mb(resource.RUSAGE_SELF)
    result["children_peak_rss_mb"] = _peak_rss_mb(resource.RUSAGE_CHILDREN)
    _write_atomically(result_path, [json.dumps(result, indent=2).encode()])
    return status


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------
def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, from /proc (0 once it is gone)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def _load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_fields(result: Dict[str, object], rows: int) -> Dict[str, object]:
    """CPU-time counterparts of the wall times (absent when the child did not measure them)."""
    cpu = result.get("cpu_timings") or {}
    if EXAMPLE_GEN not in cpu or TRANSFORM not in cpu:
        return {}
    seconds = cpu[EXAMPLE_GEN] + cpu[TRANSFORM]
    return {
        "cpu_seconds": round(seconds, 2),
        "rows_per_cpu_second": round(rows / seconds, 1) if seconds > 0 else None,
        "example_gen_cpu_seconds": cpu[EXAMPLE_GEN],
        "transform_cpu_seconds": cpu[TRANSFORM],
        "statistics_gen_cpu_seconds": cpu.get(STATISTICS_GEN),
        "component_cpu_seconds": cpu,
        "process_cpu_seconds": result.get("process_cpu_seconds"),
    }


def measure_scale(scale: int, src_dir: str, work_dir: str, max_rss_gb: float, keep: bool,
                  profile: str = "in_process", transform_tf2: bool = False,
                  data: Optional[Dict[str, Any]] = None, families: Sequence[str] = ()) -> Dict[str, object]:
    """Replicates the data `scale` times, runs the pipeline in a child process, and returns the row.

    Args:
      scale: replicas of the source data.
      src_dir: the description's data directory.
      work_dir: scratch directory for the replicated data and the pipeline outputs.
      max_rss_gb: the child (with its descendants) is stopped when its resident memory
        passes this, and the row says so.
      keep: keep the scratch outputs of this scale.
      profile: the Beam profile the data stages run on.
      transform_tf2: run Transform in tf.Transform's TF2 mode instead of the pipeline's TF1 compat mode.
      data: the dataset options (PipelineConfig fields without data_dir: dataset, split, ...).
      families: model families the run trains, evaluates and pushes after the data stages (none:
        the data stages only).
    """
    data = dict(data or {})
    data_dir = os.path.join(work_dir, f"data-{scale}")  # shared by the profiles
    scale_dir = os.path.join(work_dir, f"scale-{scale}-{profile}")
    replica = replicate(dataclasses.replace(PipelineConfig(), **data).load_description(), src_dir, data_dir, scale)
    row: Dict[str, object] = {"scale": scale, "profile": profile, "families": list(families), "commit": commit(),
                              "rows": replica.rows, "items": replica.items,
                              "input_mb": round(replica.bytes / 2**20, 1),
                              "started": datetime.datetime.now().isoformat(timespec="seconds"),
                              "load_average_at_start": _load_average()}
    result_path = os.path.join(scale_dir, "result.json")
    command = [sys.executable, "-m", "bench.ingest", "--child_data_dir", data_dir,
               "--child_output_dir", os.path.join(scale_dir, "outputs"), "--child_result", result_path,
               "--child_profile", profile, "--child_data", json.dumps(data),
               "--child_families", ",".join(families)] + \
        (["--child_transform_tf2"] if transform_tf2 else [])
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    print(f"scale {scale} ({profile}): {replica.rows} interaction rows, {row['input_mb']} MB of input", flush=True)
    os.makedirs(scale_dir, exist_ok=True)
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=str(REPO_ROOT), env=env, start_new_session=True)
    sampled_peak_kb, stopped = 0, None
    samples: List[tuple] = []  # (epoch seconds, resident KiB of the child's process tree)
    while child.poll() is None:
        rss_kb = _tree_rss_kb(child.pid)
        samples.append((time.time(), rss_kb))
        sampled_peak_kb = max(sampled_peak_kb, rss_kb)
        if rss_kb > max_rss_gb * 2**20:
            stopped = f"stopped by the benchmark: resident memory {rss_kb / 2**20:.1f} GB passed --max_rss_gb={max_rss_gb}"
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            break
        time.sleep(1.0)
    row["wall_seconds"] = round(time.monotonic() - started, 1)
    row["sampled_peak_rss_mb"] = round(sampled_peak_kb / 1024.0, 1)
    row["load_average_at_end"] = _load_average()

    result: Dict[str, object] = {}
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    if result.get("status") == "ok":
        timings = result["timings"]
        rows_read = int(result["rows_read"]["interactions"])
        if rows_read != replica.rows:
            raise RuntimeError(f"scale {scale}: ExampleGen read {rows_read} interaction rows, "
                               f"the replicated interaction files have {replica.rows}")
        seconds = timings[EXAMPLE_GEN] + timings[TRANSFORM]
        row.update(
            status="ok",
            rows=rows_read,
            seconds=round(seconds, 2),
            rows_per_second=round(rows_read / seconds, 1),
            example_gen_seconds=timings[EXAMPLE_GEN],
            transform_seconds=timings[TRANSFORM],
            stage_peak_rss_mb=_stage_peaks(samples, result.get("windows") or {}),
            example_gen_rows_per_second=round(rows_read / timings[EXAMPLE_GEN], 1),
            transform_rows_per_second=round(rows_read / timings[TRANSFORM], 1),
            statistics_gen_seconds=timings.get(STATISTICS_GEN),
            data_stages_seconds=result["pipeline_seconds"],
            component_seconds=timings,
            pipeline_seconds=result["pipeline_seconds"],
            **_cpu_fields(result, rows_read),
            rows_written=result["rows_written"],
            users=result["users"],
            peak_rss_mb=result["peak_rss_mb"],
            children_peak_rss_mb=result["children_peak_rss_mb"],
        )
    else:
        if stopped:
            error = stopped
        elif result.get("error"):
            error = result["error"]
        elif child.returncode is not None and child.returncode < 0:
            sig = signal.Signals(-child.returncode).name
            error = f"child killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
        else:
            error = f"child exited with status {child.returncode} and no result"
        row.update(status="failed", seconds=None, rows_per_second=None, error=error,
                   log_tail=result.get("log_tail"))
        print(f"scale {scale}: FAILED: {error}", flush=True)
    if keep:
        row["pipeline_root"] = PipelineConfig(output_dir=os.path.join(scale_dir, "outputs")).pipeline_root
    else:
        shutil.rmtree(scale_dir, ignore_errors=True)
    return row


def _sample_peak_kb(processes: List[subprocess.Popen]) -> int:
    """Waits for every process; returns the highest sampled resident memory of all their trees together."""
    peak = 0
    while any(p.poll() is None for p in processes):
        peak = max(peak, sum(_tree_rss_kb(p.pid) for p in processes if p.poll() is None))
        time.sleep(1.0)
    return peak


def measure_trainer(workers: int, data_row: Dict[str, object], work_dir: str, family: str,
                    epochs: int, data: Optional[Dict[str, Any]] = None) -> Dict[str, object]:
    """Trains `family` on a kept data run's Transform output with `workers` processes; returns the row.

    One worker trains in one process with the default strategy; more join one
    MultiWorkerMirroredStrategy over loopback (TF_CONFIG per process), each taking its
    share of every global batch. Early stopping cannot end the run before `epochs`.
    `data`: the dataset options of the run (PipelineConfig fields: dataset, split, ...).
    """
    from pipeline import report as run_report
    from pipeline.model_stages import train_config
    from training import distribute, worker

    found = run_report.output_dirs(str(data_row["pipeline_root"]))[TRANSFORM]
    files = {s: [os.path.join(found["transformed_examples"], f"Split-{s}", "*")] for s in ("train", "eval")}
    tf_configs: List[Optional[str]] = [None]
    strategy = distribute.DEFAULT
    if workers > 1:
        strategy = distribute.MULTI_WORKER
        tf_configs = list(worker.local_cluster(workers))
    run_config = dataclasses.replace(PipelineConfig(), **(data or {}))
    config = train_config(run_config, family, hparams={"max_epochs": epochs, "patience": epochs},
                          strategy=strategy).to_custom_config()
    out = os.path.join(work_dir, f"trainer-{family}-{workers}")
    summary_path = os.path.join(out, "summary-{worker}.json")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    env.pop("TF_CONFIG", None)
    row: Dict[str, object] = {"stage": f"Trainer ({family})", "profile": f"{workers} worker" + "s" * (workers > 1),
                              "workers": workers, "scale": data_row["scale"], "family": family, "epochs": epochs,
                              "started": datetime.datetime.now().isoformat(timespec="seconds"),
                              "load_average_at_start": _load_average()}
    print(f"Trainer ({family}) with {workers} worker(s) on the {data_row['scale']}x Transform output", flush=True)
    os.makedirs(out, exist_ok=True)
    started = time.monotonic()
    logs = [open(os.path.join(out, f"worker{i}.log"), "w") for i in range(workers)]
    try:
        processes = [subprocess.Popen(
            worker.command(config, files["train"], files["eval"], found["transform_graph"],
                           os.path.join(out, "model"), summary_out=summary_path),
            cwd=str(REPO_ROOT), env=env if tf_config is None else dict(env, TF_CONFIG=tf_config),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for tf_config, log in zip(tf_configs, logs)]
        peak_kb = _sample_peak_kb(processes)
    finally:
        for log in logs:
            log.close()
    row["wall_seconds"] = round(time.monotonic() - started, 1)
    row["load_average_at_end"] = _load_average()
    chief = summary_path.replace("{worker}", "0")
    if any(p.returncode != 0 for p in processes) or not os.path.exists(chief):
        with open(os.path.join(out, "worker0.log")) as f:
            tail = "".join(f.readlines()[-20:])
        row.update(status="failed", seconds=None, rows_per_second=None, log_tail=tail,
                   error=f"worker exit statuses {[p.returncode for p in processes]}")
        print(f"Trainer with {workers} worker(s): FAILED", flush=True)
        return row
    with open(chief) as f:
        summary = json.load(f)
    train_rows = int(data_row["rows_written"]["train"])
    seen = train_rows * int(summary["epochs_run"])
    row.update(status="ok", rows=seen, train_rows=train_rows, epochs_run=summary["epochs_run"],
               replicas=summary["replicas"], seconds=summary["train_seconds"],
               rows_per_second=round(seen / summary["train_seconds"], 1),
               peak_rss_mb=round(peak_kb / 1024.0, 1), hparams=summary["hparams"],
               monitor=summary["monitor"], best_value=summary["best_value"])
    return row


def _stage_peaks(samples: List[tuple], windows: Dict[str, List[float]]) -> Dict[str, Optional[float]]:
    """Highest sampled process-tree RSS (MB) while each component ran, and over ExampleGen and Transform ("both").

    A component with no sample inside its window (it took under the one-second sampling period)
    gets the sample nearest to its start.
    """
    def peak(ranges):
        values = [kb for t, kb in samples if any(a <= t <= b for a, b in ranges)]
        if not values and samples and ranges:
            values = [min(samples, key=lambda sample: abs(sample[0] - ranges[0][0]))[1]]
        return round(max(values) / 1024.0, 1) if values else None

    ranges = {name: tuple(w) for name, w in windows.items() if len(w) == 2}
    out = {stage: peak([ranges[stage]]) if stage in ranges else None for stage in (EXAMPLE_GEN, TRANSFORM)}
    out.update({name: peak([window]) for name, window in ranges.items()})
    both = [ranges[s] for s in (EXAMPLE_GEN, TRANSFORM) if s in ranges]
    out["both"] = peak(both) if both else None
    return out


STAGES = ((EXAMPLE_GEN, "ExampleGen"), (TRANSFORM, "Transform"), (None, "ExampleGen+Transform"))


def stage_rows(runs: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """scale.json: one row per (stage, profile, scale) of every finished run."""
    out = []
    for r in runs:
        if r.get("status") != "ok":
            continue
        if str(r.get("stage", "")).startswith("Trainer"):
            out.append({k: r[k] for k in ("stage", "profile", "scale", "rows", "seconds", "rows_per_second",
                                          "peak_rss_mb")})
            out[-1]["load_average"] = [r["load_average_at_start"][0], r["load_average_at_end"][0]]
            continue
        peaks = r.get("stage_peak_rss_mb") or {}
        for component, stage in STAGES:
            seconds = r["seconds"] if component is None else r["component_seconds"][component]
            peak = peaks.get("both" if component is None else component) or r.get("sampled_peak_rss_mb")
            out.append({
                "stage": stage, "profile": r.get("profile", "in_process"), "scale": r["scale"], "rows": r["rows"],
                "seconds": round(seconds, 1), "rows_per_second": round(r["rows"] / seconds, 1),
                "peak_rss_mb": peak,
                "load_average": [r["load_average_at_start"][0], r["load_average_at_end"][0]],
            })
    return out + [row for row in pipeline_stage_rows(runs) if row["stage"] not in ("ExampleGen", TRANSFORM)]


PIPELINE = "whole pipeline"
MIN_STAGE_SECONDS = 1.0  # components shorter than this at every scale (resolvers, gates) get no row of their own


def _component_stage(component: str) -> str:
    return "ExampleGen" if component == EXAMPLE_GEN else component


def pipeline_stage_rows(runs: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """One row per (component, profile, scale) of the finished runs that trained families, plus the whole
    pipeline's, each with its growth against the same profile's smallest scale.

    seconds = the runner's wall time of the component; cpu_seconds = CPU seconds of the pipeline's
    process and its finished children while it ran; peak_rss_mb = the highest resident memory of
    the process tree sampled while it ran (what earlier components still hold counts too).
    x_rows, x_seconds, x_cpu and x_peak_rss divide by the smallest scale's values; a component
    grows no faster than the data where x_seconds, x_cpu and x_peak_rss are at most x_rows.
    """
    done = [r for r in runs if r.get("status") == "ok" and r.get("families")]
    ran: List[str] = []  # in the order the runner ran them (component_seconds keeps it)
    for r in done:
        ran += [c for c in r["component_seconds"] if c not in ran]
    components = [c for c in ran if max(r["component_seconds"].get(c) or 0.0 for r in done) >= MIN_STAGE_SECONDS]
    out: List[Dict[str, object]] = []
    for r in done:
        peaks = r.get("stage_peak_rss_mb") or {}
        cpu = r.get("component_cpu_seconds") or {}
        for component in components + [PIPELINE]:
            whole = component == PIPELINE
            out.append({
                "stage": component if whole else _component_stage(component),
                "profile": r["profile"], "scale": r["scale"], "rows": r["rows"],
                "families": r["families"],
                "seconds": r["pipeline_seconds"] if whole else r["component_seconds"].get(component),
                "cpu_seconds": r.get("process_cpu_seconds") if whole else cpu.get(component),
                "peak_rss_mb": r.get("sampled_peak_rss_mb") if whole else peaks.get(component),
                "load_average": [r["load_average_at_start"][0], r["load_average_at_end"][0]],
            })
    for row in out:
        base = min((b for b in out if (b["stage"], b["profile"]) == (row["stage"], row["profile"])),
                   key=lambda b: b["scale"])
        row["x_rows"] = round(row["rows"] / base["rows"], 2)
        row["rows_per_second"] = round(row["rows"] / row["seconds"], 1) if row.get("seconds") else None
        for key, name in (("seconds", "x_seconds"), ("cpu_seconds", "x_cpu"), ("peak_rss_mb", "x_peak_rss")):
            row[name] = round(row[key] / base[key], 2) if row.get(key) and base.get(key) else None
    return out


def _mem_total_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> Dict[str, object]:
    """nproc, CPU model, memory and the library versions the numbers depend on."""
    from importlib import metadata

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gb": _mem_total_gb(),
        "python": platform.python_version(),
        "tfx": metadata.version("tfx"),
        "tensorflow": metadata.version("tensorflow"),
        "tensorflow_transform": metadata.version("tensorflow-transform"),
        "apache_beam": metadata.version("apache-beam"),
    }


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(rows: List[Dict[str, object]], meta: Dict[str, object]) -> str:
    """The results page: the stage table of scale.json, the per-run details, then how they were measured."""
    machine = meta["machine"]
    lines = [
        "# Scaling benchmark: every stage of the pipeline vs rows" if meta.get("families") else
        "# Scaling benchmark: ExampleGen + Transform vs rows, per Beam profile; the Trainer per worker count",
        "",
        f"The pipeline's data stages on {meta.get('dataset', 'the data')} replicated "
        "`scale` times (offset ids); "
        "rows = interactions read by ExampleGen; seconds = the runner's wall time of the stage; "
        "peak RSS = the highest resident memory of the pipeline's process tree (Beam workers included) "
        "sampled every second while the stage ran; load = the machine's 1-minute load average at the "
        "start / end of the run (2 cores, shared with other jobs).",
        "",
        "| stage | profile | scale | rows | seconds | rows/s | peak RSS MB | load |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    stages = stage_rows(rows)
    trainer = [r for r in rows if "workers" in r]
    rows = [r for r in rows if "workers" not in r]
    for r in stages:
        lines.append(f"| {r['stage']} | {r['profile']} | {r['scale']} | {_fmt(r['rows'])} | {_fmt(r['seconds'])} "
                     f"| {_fmt(r['rows_per_second'], 0)} | {_fmt(r['peak_rss_mb'], 0)} "
                     f"| {r['load_average'][0]} / {r['load_average'][1]} |")
    lines += [
        "",
        "Per run (CPU s = user + system CPU seconds of the pipeline process and its finished children, "
        "which do not grow when other jobs share the cores; x = relative to the same profile at scale 1):",
        "",
        "| profile | scale | rows | EG + Transform s | x time | EG + Transform CPU s | rows per CPU s | x CPU "
        "| StatisticsGen s | all data stages s | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        base = next((b for b in rows if b.get("status") == "ok" and b["scale"] == 1
                     and b.get("profile") == r.get("profile")), None)
        ratio = (r["seconds"] / base["seconds"]) if base and r.get("seconds") else None
        cpu_ratio = (r["cpu_seconds"] / base["cpu_seconds"]) if base and base.get("cpu_seconds") \
            and r.get("cpu_seconds") else None
        lines.append(
            f"| {r.get('profile', 'in_process')} | {r['scale']} | {_fmt(r['rows'])} | {_fmt(r.get('seconds'))} "
            f"| {_fmt(ratio, 2)} | {_fmt(r.get('cpu_seconds'))} | {_fmt(r.get('rows_per_cpu_second'), 0)} "
            f"| {_fmt(cpu_ratio, 2)} | {_fmt(r.get('statistics_gen_seconds'))} "
            f"| {_fmt(r.get('data_stages_seconds'))} | {r.get('status')} |")
    if trainer:
        lines += [
            "",
            f"The Trainer on the {trainer[0]['scale']}x Transform output (`python -m training.worker`, one process "
            "per worker; two or more workers join one MultiWorkerMirroredStrategy over loopback and split every "
            "global batch; rows = training examples seen; seconds = the chief's fit time, its per-epoch "
            "evaluation included; peak RSS = all workers together):",
            "",
            "| family | workers | epochs | rows | seconds | rows/s | wall s | peak RSS MB | eval metric | status |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in trainer:
            metric = f"{r['monitor']} {r['best_value']:.4f}" if r.get("best_value") is not None else "-"
            lines.append(f"| {r['family']} | {r['workers']} | {r.get('epochs_run', '-')} | {_fmt(r.get('rows'))} "
                         f"| {_fmt(r.get('seconds'))} | {_fmt(r.get('rows_per_second'), 0)} "
                         f"| {_fmt(r.get('wall_seconds'))} | {_fmt(r.get('peak_rss_mb'), 0)} | {metric} "
                         f"| {r['status']}{': ' + r['error'] if r.get('error') else ''} |")
    staged = pipeline_stage_rows(rows)
    if staged:
        families = ", ".join(staged[0]["families"])
        lines += [
            "",
            f"## Every stage of the pipeline (families {families})",
            "",
            "Each stage of a run that trains, evaluates and pushes the families above, as `make run` does. "
            "seconds = the runner's wall time of the stage; CPU s = CPU seconds of the pipeline's process and "
            "its finished children while the stage ran (load-independent); peak RSS = the highest resident "
            "memory of the process tree sampled while the stage ran (memory earlier stages still hold counts "
            "too); x = relative to the smallest scale. A stage grows no faster than the data where its x time, "
            "x CPU and x peak are at most x rows.",
            "",
            "| stage | profile | scale | rows | x rows | seconds | x time | CPU s | x CPU | peak RSS MB | x peak |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(staged, key=lambda r: (r["stage"] == PIPELINE, [s["stage"] for s in staged].index(r["stage"]),
                                               r["profile"], r["scale"])):
            lines.append(f"| {r['stage']} | {r['profile']} | {r['scale']} | {_fmt(r['rows'])} | {_fmt(r['x_rows'], 2)} "
                         f"| {_fmt(r['seconds'])} | {_fmt(r['x_seconds'], 2)} | {_fmt(r['cpu_seconds'])} "
                         f"| {_fmt(r['x_cpu'], 2)} | {_fmt(r['peak_rss_mb'], 0)} | {_fmt(r['x_peak_rss'], 2)} |")
    done = {(r.get("profile", "in_process"), r["scale"]) for r in rows}
    pending = [f"{p} {s}x" for p in meta.get("profiles", ["in_process"]) for s in meta["scales"] if (p, s) not in done]
    measured = {r["workers"] for r in trainer}
    pending += [f"Trainer with {w} worker(s)" for w in meta.get("trainer_workers", []) if w not in measured]
    if pending:
        lines += ["", f"Not yet measured in this run (still running or not reached): {', '.join(pending)}."]
    for r in rows:
        if r.get("status") == "ok":
            continue
        lines += ["", f"**Scale {r['scale']} ({r.get('profile', 'in_process')}) did not finish** after "
                  f"{r.get('wall_seconds')} s: {r.get('error')}. Highest resident memory seen while it ran: "
                  f"{_fmt(r.get('sampled_peak_rss_mb'), 0)} MB."]
        if r.get("log_tail"):
            lines += ["", "Last lines of its log:", "", "```", str(r["log_tail"]), "```"]
    profiles = meta.get("profile_args") or {}
    lines += [
        "",
        "## How it was measured",
        "",
        f"- Command: `{meta['command']}` (started {meta['started']}).",
        f"- Commit: {meta.get('commit') or 'not recorded'}"
        + (f"; kept from earlier runs of the same command (--resume): {', '.join(meta['resumed'])}"
           if meta.get("resumed") else "") + ".",
        f"- Data: `{meta['data_dir']}` (the description's interaction files and item table); replica r adds "
        "r * (max user id + 1) to user ids and r * (max item id + 1) to item ids (ids that are not all integers: "
        "the prefix `r<r>-`); line ends kept, csv quoting minimal.",
        "- Pipeline: `pipeline.local_runner.run` "
        + (f"with families={tuple(meta['families'])} (every stage of `make run`)" if meta.get("families") else
           "with families=() (ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator, AnomalyGate, Transform)")
        + (f", hyperparameters {json.dumps(meta['hparams'], sort_keys=True)} (a fixed number of epochs, so that "
           "a Trainer's cost per row is comparable across scales)" if meta.get("hparams") else "")
        + ", LocalDagRunner, SQLite metadata; "
        "each (profile, scale) in a fresh child process. Beam arguments: "
        + "; ".join(f"{p}: {' '.join(a)}" for p, a in profiles.items()) + ".",
        f"- Transform mode: {meta.get('transform_mode', 'TF1 compat (force_tf_compat_v1)')}.",
        f"- Split: `{meta['split']}`; seed: {meta['seed']}; max_history: {meta['max_history']}; "
        f"negatives per positive: {meta['negatives_per_positive']}.",
        f"- Machine: nproc {machine['nproc']}, CPU {machine['cpu_model']}, memory {machine['memory_gb']} GB, "
        "shared with other jobs (load average at the start / end of each run: "
        + "; ".join(f"{r.get('profile', 'in_process')} {r['scale']}x {r['load_average_at_start'][0]} / "
                    f"{r['load_average_at_end'][0]}" for r in rows)
        + f"); run under `nice -n {meta['niceness']}`.",
        f"- Software: Python {machine['python']}, TFX {machine['tfx']}, TensorFlow {machine['tensorflow']}, "
        f"tf.Transform {machine['tensorflow_transform']}, Beam {machine['apache_beam']}.",
        "",
    ]
    return "\n".join(lines)


def write_results(out_dir: str, rows: List[Dict[str, object]], meta: Dict[str, object], name: str = "scale") -> None:
    """Writes NAME.json, NAME_runs.json and NAME.md under `out_dir`, each through a temporary file and a rename."""
    os.makedirs(out_dir, exist_ok=True)
    _write_atomically(os.path.join(out_dir, f"{name}.json"), [(json.dumps(stage_rows(rows), indent=2) + "\n").encode()])
    _write_atomically(os.path.join(out_dir, f"{name}_runs.json"), [(json.dumps(rows, indent=2) + "\n").encode()])
    _write_atomically(os.path.join(out_dir, f"{name}.md"), [render_markdown(rows, meta).encode()])


def _previous_rows(path: str) -> List[Dict[str, object]]:
    """The runs an earlier invocation wrote to `path` (none when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of runs, got {type(rows).__name__}")
    return rows


def _profiles_arg(text: str) -> List[str]:
    profiles = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in BEAM_PROFILES]
    if not profiles or unknown:
        raise argparse.ArgumentTypeError(f"--profiles expects names of {', '.join(BEAM_PROFILES)}, got {text!r}")
    return profiles


def _scales_arg(text: str) -> List[int]:
    try:
        scales = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales expects comma-separated integers, got {text!r}") from None
    if not scales or min(scales) < 1:
        raise argparse.ArgumentTypeError(f"--scales expects integers >= 1, got {text!r}")
    return scales


def _workers_arg(text: str) -> List[int]:
    try:
        workers = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--trainer_workers expects comma-separated integers, got {text!r}") from None
    if any(w < 1 for w in workers):
        raise argparse.ArgumentTypeError(f"--trainer_workers expects integers >= 1, got {text!r}")
    return workers


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=_scales_arg, default=[1, 4, 16], help="comma-separated, e.g. 1,4,16")
    parser.add_argument("--profiles", type=_profiles_arg, default=list(PROFILES),
                        help="comma-separated Beam profiles (pipeline/configs.py BEAM_PROFILES)")
    parser.add_argument("--transform_tf2", action="store_true",
                        help="Transform in tf.Transform's TF2 mode (the pipeline uses its TF1 compat mode)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for NAME.json, NAME_runs.json and NAME.md")
    parser.add_argument("--name", default="scale", help="the results files' name (default: scale)")
    parser.add_argument("--families", default="none",
                        help="model families each run also trains, evaluates and pushes: comma-separated, "
                             "'default' for make run's, 'none' (the default) for the data stages only")
    parser.add_argument("--work_dir", default=None, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--max_rss_gb", type=float, default=16.0,
                        help="stop a scale whose resident memory passes this")
    parser.add_argument("--keep", action="store_true", help="keep replicated data and pipeline outputs")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of NAME_runs.json in --out whose (profile, scale) this run does not "
                             "measure (each row names the commit it ran)")
    parser.add_argument("--trainer_workers", type=_workers_arg, default=[1, 2],
                        help="comma-separated worker counts for the Trainer rows ('' for none)")
    parser.add_argument("--trainer_family", default="mf", help="the family the Trainer rows train")
    parser.add_argument("--trainer_epochs", type=int, default=3, help="epochs of each Trainer row")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE",
                        help="a family's hyperparameter for every run (with --families), e.g. mf.max_epochs=2")
    parser.add_argument("--child_data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--child_output_dir", help=argparse.SUPPRESS)
    parser.add_argument("--child_result", help=argparse.SUPPRESS)
    parser.add_argument("--child_profile", default="in_process", help=argparse.SUPPRESS)
    parser.add_argument("--child_transform_tf2", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child_data", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--child_families", default="", help=argparse.SUPPRESS)
    add_dataset_arguments(parser)
    args = parser.parse_args(argv)

    if args.child_result:
        return _run_one_scale(args.child_data_dir, args.child_output_dir, args.child_result, args.child_profile,
                              args.child_transform_tf2, json.loads(args.child_data),
                              [f for f in args.child_families.split(",") if f])

    data = dataset_overrides(args)
    if args.dataset_file:
        data["dataset"] = os.path.abspath(args.dataset_file)  # the children run from the repository root
    defaults = dataclasses.replace(PipelineConfig(), **data).resolved()
    src_dir = defaults.data_dir
    data.pop("data_dir", None)
    families = list(families_arg(None if args.families == "default" else args.families))
    if args.hparam:
        data["hparams"] = parse_assignments(args.hparam)
    meta = {
        "command": command_line("bench.ingest", argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit(),
        "scales": args.scales,
        "profiles": args.profiles,
        "profile_args": {p: list(with_beam_profile(defaults, p).beam_pipeline_args) for p in args.profiles},
        "transform_mode": "TF2" if args.transform_tf2 else "TF1 compat (force_tf_compat_v1)",
        "dataset": defaults.describe_dataset(),
        "data_dir": os.path.relpath(src_dir, str(REPO_ROOT)),
        "split": defaults.split,
        "seed": defaults.seed,
        "max_history": defaults.max_history,
        "negatives_per_positive": defaults.negatives_per_positive,
        "niceness": os.nice(0),
        "trainer_workers": args.trainer_workers,
        "families": families,
        "hparams": data.get("hparams", {}),
        "machine": machine_info(),
    }
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench-ingest-")
    os.makedirs(work_dir, exist_ok=True)
    print(f"Scratch: {work_dir}; results: {args.out}", flush=True)
    rows: List[Dict[str, object]] = []
    if args.resume:
        rows = [r for r in _previous_rows(os.path.join(args.out, f"{args.name}_runs.json"))
                if (r.get("profile"), r.get("scale")) not in {(p, s) for s in args.scales for p in args.profiles}]
        meta["resumed"] = sorted({f"{r.get('profile')} {r.get('scale')}x at {r.get('commit') or 'an unrecorded commit'}"
                                  for r in rows})
    trainer_data = (min(args.scales), args.profiles[0])  # the run whose Transform output the Trainer rows read
    try:
        for scale, profile in [(s, p) for s in args.scales for p in args.profiles]:
            keep = args.keep or (bool(args.trainer_workers) and (scale, profile) == trainer_data)
            rows.append(measure_scale(scale, src_dir, work_dir, args.max_rss_gb, keep, profile,
                                      args.transform_tf2, data, families))
            write_results(args.out, rows, meta, args.name)
            r = rows[-1]
            if r["status"] == "ok":
                print(f"scale {scale} ({profile}): {r['rows']} rows, ExampleGen {r['example_gen_seconds']} s + "
                      f"Transform {r['transform_seconds']} s = {r['seconds']} s, {r['rows_per_second']} rows/s, "
                      f"peak RSS {r['stage_peak_rss_mb']['both']} MB", flush=True)
        trained = next((r for r in rows if (r["scale"], r["profile"]) == trainer_data and r["status"] == "ok"), None)
        for workers in args.trainer_workers if trained else []:
            rows.append(measure_trainer(workers, trained, work_dir, args.trainer_family, args.trainer_epochs,
                                        {**data, "data_dir": src_dir}))
            write_results(args.out, rows, meta, args.name)
            r = rows[-1]
            if r["status"] == "ok":
                print(f"Trainer ({args.trainer_family}) with {workers} worker(s): {r['rows']} rows in {r['seconds']} s, "
                      f"{r['rows_per_second']} rows/s, peak RSS {r['peak_rss_mb']} MB", flush=True)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f"Wrote {os.path.join(args.out, args.name)}.json, {args.name}_runs.json and {args.name}.md")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

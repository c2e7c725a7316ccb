"""Reliability under faults: kill -9 mid-component, two runs at once, a corrupted push under
load, fuzzed input files, and load while new versions are pushed.

Every scenario runs the product's own code: pipeline runs through `pipeline.local_runner`,
the ingest through ExampleGen's Beam pipeline, serving through `serving.local_server` and
`serving.client`, and every push of the serving scenarios through the Pusher's
`components.pusher.push_model` (the function the Pusher component calls), which picks the
version numbers; the corrupted push is a model artifact with truncated variables that the
Pusher copies as it is. The figures are about correctness (what was lost, which versions
answered); the times and latencies it also records come from a shared machine.

    make bench-reliability ARGS="--out bench/results"
    # = python -m bench.reliability --out bench/results [--trials 3] [--scenarios NAME,...]

Pipeline runs use a slice of a dataset description's data (`--dataset` / `--dataset_file`,
`--data_dir`; default MovieLens: the first 15 users of data/movielens-small's ratings.csv,
which is ordered by user, with the whole item table; its description's split, seed 42), the
`--family` (`mf`) with 40 train steps and gates loose enough to bless every run, all on one
output directory, one after another, so every trial starts from the outputs and pushed
versions of the runs before it. Fuzzing damages lines of the slice's first interaction
file, which must be csv or tsv with one record per line. Writes `<out>/reliability.json` (rows:
scenario, trials, passed, data_lost, notes; per-trial details under "trials") and
`<out>/reliability.md`. `data_lost` counts, per scenario: published artifacts or pushed
versions that went missing or changed (kills, concurrent runs), failed requests (serving
scenarios), input rows neither parsed nor reported (fuzzing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.machine import command_line, commit, cpu_model  # noqa: E402
from common.io_utils import atomic_write  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLICE_USERS = 15
FAMILY = "mf"
KILL_COMPONENTS = ("InteractionExampleGen", "Transform", f"Trainer_{FAMILY}", f"Pusher_{FAMILY}")
# Seconds after a component starts at which a kill lands, drawn uniformly; each bound is
# below the component's usual time on the slice (ExampleGen ~4 s, Transform ~28 s, Trainer ~6 s).
KILL_DELAY = {"InteractionExampleGen": (0.2, 2.5), "Transform": (1.0, 20.0), f"Trainer_{FAMILY}": (0.5, 4.0)}
SCENARIOS = tuple(f"kill_{c}" for c in KILL_COMPONENTS) + (
    "concurrent_runs", "corrupt_push_under_load", "fuzzed_input", "load_while_pushing",
)
RUN_TIMEOUT_S = 1800
_RUNNING = re.compile(r"Component (\S+) is (running|finished)\.")


# --------------------------------------------------------------------------
# Pipeline runs in child processes
# --------------------------------------------------------------------------
def slice_file(source, src: str, dst: str, user: str, users: int) -> int:
    """Writes the records of the first `users` distinct users of `src` (in file order) to
    `dst`, byte for byte (header kept); returns the records written.

    Args:
      source: the file's `contract.description.Source` (format, delimiter, header, columns).
      src / dst: the paths.
      user: the user column.
      users: how many users to keep.
    """
    import csv

    from contract import description as desc

    kept: set = set()
    written = 0
    if source.format == desc.PARQUET:
        import pandas as pd

        frame = pd.read_parquet(src)
        order = list(dict.fromkeys(frame[user].astype(str)))[:users]
        part = frame[frame[user].astype(str).isin(order)]
        part.to_parquet(dst)
        return len(part)
    with open(src, "rb") as f, open(dst, "wb") as out:
        if source.format == desc.JSONL:
            for line in f:
                if not line.strip():
                    continue
                value = str(json.loads(line)[user])
                if value in kept or len(kept) < users:
                    kept.add(value)
                    out.write(line)
                    written += 1
            return written
        raw: List[bytes] = []

        def lines():
            for line in f:
                raw.append(line)
                yield line.decode(source.encoding, "replace")

        reader = csv.reader(lines(), delimiter=source.delimiter, quotechar=source.quotechar)
        column = None if source.header else list(source.columns).index(user)
        for fields in reader:
            record, raw[:] = b"".join(raw), []
            if column is None:  # the header line
                column = fields.index(user)
                out.write(record)
                continue
            if not fields:
                continue
            value = fields[column] if column < len(fields) else ""
            if value in kept or len(kept) < users:
                kept.add(value)
                out.write(record)
                written += 1
    return written


def write_slice(d, data_dir: str, dst: str, users: int = SLICE_USERS) -> str:
    """The description's data with its interaction files cut to the records of the first
    `users` users of each file (other tables copied whole), under `dst`."""
    from contract import description as desc

    os.makedirs(dst, exist_ok=True)
    inter = [p for pattern in d.interactions.files for p in sorted(glob.glob(os.path.join(data_dir, pattern)))]
    if not inter:
        raise SystemExit(f"error: no interaction file {list(d.interactions.files)} in {data_dir}")
    for path in inter:
        target = os.path.join(dst, os.path.relpath(path, data_dir))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        slice_file(d.interactions, path, target, d.user, users)
    for table in (d.items, d.users):
        for pattern in (table.files if isinstance(table, desc.Source) else ()):
            for path in glob.glob(os.path.join(data_dir, pattern)):
                target = os.path.join(dst, os.path.relpath(path, data_dir))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy(path, target)
    return dst


def loose_gates(config) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Gate thresholds and tolerated worsening loose enough to bless whatever the family learns
    in 40 steps on the slice (the scenarios test recovery, not quality)."""
    from pipeline.model_stages import family_tasks

    thresholds, worsening = {}, {}
    for task in family_tasks(config, FAMILY):
        if task.gate is not None:
            thresholds[task.name] = -1e9 if task.gate.higher_is_better else 1e9
            worsening[task.name] = 1e9
    return thresholds, worsening


def pipeline_config(data_dir: str, output_dir: str, families=(FAMILY,), **data):
    """The trials' pipeline configuration on the slice in `data_dir`.

    Args:
      data_dir: the slice.
      output_dir: the one output directory of every trial.
      families: the families trained.
      data: the dataset options (PipelineConfig fields: dataset, split, ...).
    """
    from pipeline.configs import PipelineConfig

    config = dataclasses.replace(PipelineConfig(), **data, data_dir=data_dir, output_dir=output_dir,
                                 families=tuple(families), train_steps=40)
    thresholds, worsening = loose_gates(config)
    return dataclasses.replace(config, gate_thresholds=thresholds, gate_max_worsening=worsening).resolved()


def interactions_file(config) -> str:
    """The slice's first interaction file, which the fuzzing damages (csv / tsv, one record
    per line: SystemExit otherwise)."""
    from contract import description as desc

    d = config.load_description()
    if d.interactions.format not in (desc.CSV, desc.TSV):
        raise SystemExit(f"error: fuzzed_input damages lines of a csv / tsv log; {d.name}'s is {d.interactions.format}")
    paths = [p for pattern in d.interactions.files for p in sorted(glob.glob(os.path.join(config.data_dir, pattern)))]
    with open(paths[0], "rb") as f:
        if d.interactions.quotechar.encode() in f.read():
            raise SystemExit(f"error: fuzzed_input counts lines as records; {paths[0]} has quoted fields")
    return paths[0]


def _dataset_flags(config) -> List[str]:
    """The local runner's options naming the config's description."""
    from contract import description as desc

    return ["--dataset_file", str(desc.resolve(config.dataset))]


def child_main(config_path: str) -> int:
    """Runs one pipeline (the child process a trial kills): 0 done, 1 failed, 2 refused by the lock."""
    from common.run_lock import RunLocked
    from pipeline.configs import PipelineConfig
    from pipeline.local_runner import PipelineFailed, run

    with open(config_path) as f:
        values = json.load(f)
    values["families"] = tuple(values["families"])
    values["beam_pipeline_args"] = tuple(values["beam_pipeline_args"])
    config = PipelineConfig(**values)
    try:
        run(config, progress_out=sys.stdout)
    except RunLocked as e:
        print(f"error: {e}", flush=True)
        return 2
    except PipelineFailed as e:
        print(f"FAILED in component {e.component}: {type(e.cause).__name__}: {e.cause}", flush=True)
        return 1
    return 0


class Child:
    """A pipeline run in its own process group, with its stdout in a file."""

    def __init__(self, config, work: str, name: str):
        self.config = config
        config_path = os.path.join(work, f"{name}.config.json")
        with open(config_path, "w") as f:
            json.dump(dataclasses.asdict(config), f)
        self.stdout_path = os.path.join(work, f"{name}.stdout")
        self.log_offset = os.path.getsize(config.log_path) if os.path.exists(config.log_path) else 0
        self._out = open(self.stdout_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.reliability", "--child", config_path],
            cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log_events(self) -> List[Tuple[str, str]]:
        """(component, running|finished) lines this run wrote to the pipeline log so far."""
        try:
            with open(self.config.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return _RUNNING.findall(text)

    def running(self) -> Optional[str]:
        """The component started and not finished, per the log."""
        current = None
        for name, state in self.log_events():
            current = name if state == "running" else (None if name == current else current)
        return current

    def wait_for_start(self, component: str, timeout_s: float = RUN_TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and self.proc.poll() is None:
            if (component, "running") in self.log_events():
                return True
            time.sleep(0.05)
        return (component, "running") in self.log_events()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._out.close()

    def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self._out.close()
        return code

    def stdout(self) -> str:
        with open(self.stdout_path, encoding="utf-8", errors="replace") as f:
            return f.read()


# --------------------------------------------------------------------------
# What a trial must not lose
# --------------------------------------------------------------------------
def _digest(path: str) -> str:
    h = hashlib.md5()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode())
                h.update(f.read())
    return h.hexdigest()


def snapshot(config) -> Dict[str, Dict[str, str]]:
    """LIVE artifacts (uri -> type) and pushed versions (path -> digest) of an output directory."""
    from pipeline.recovery import open_store

    live = {}
    if os.path.exists(config.metadata_path):
        from ml_metadata.proto import metadata_store_pb2

        store = open_store(config.metadata_path)
        types = {t.id: t.name for t in store.get_artifact_types()}
        live = {
            a.uri: types.get(a.type_id, "")
            for a in store.get_artifacts() if a.state == metadata_store_pb2.Artifact.LIVE
        }
    versions = {
        path: _digest(path) for path in glob.glob(os.path.join(config.serving_model_dir, "*", "*"))
        if os.path.basename(path).isdigit()
    }
    return {"live": live, "versions": versions}


def lost_since(config, before) -> List[str]:
    from pipeline.recovery import _artifact_problem

    lost = []
    for uri, type_name in before["live"].items():
        problem = _artifact_problem(type_name, uri)
        if problem:
            lost.append(f"{uri}: {problem}")
    for path, digest in before["versions"].items():
        if not os.path.isdir(path):
            lost.append(f"{path}: missing")
        elif _digest(path) != digest:
            lost.append(f"{path}: changed")
    return lost


def newest_version(config) -> Optional[str]:
    versions = [p for p in glob.glob(os.path.join(config.serving_model_dir, FAMILY, "*")) if os.path.basename(p).isdigit()]
    return max(versions, key=lambda p: int(os.path.basename(p))) if versions else None


def serves(version_dir: str) -> str:
    """'' when the local server loads the version and replays its warmup, else the error."""
    from serving import local_server

    try:
        local_server.load_servable(FAMILY, int(os.path.basename(version_dir)), version_dir, run_warmup=True)
    except Exception as exc:  # reported as the trial's failure
        return f"{type(exc).__name__}: {exc}"
    return ""


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------
def kill_trial(component: str, config, work: str, rng: random.Random, n: int) -> dict:
    from pipeline import recovery

    before = snapshot(config)
    child = Child(config, work, f"kill-{component}-{n}")
    started = child.wait_for_start(component)
    landed, staging_seen = None, False
    if not started:
        child.kill()
        return {"passed": False, "data_lost": 0, "note": f"{component} never started: {child.stdout()[-500:]}"}
    if component.startswith("Pusher"):
        # The copy takes milliseconds: kill as soon as the staging directory appears.
        end = time.monotonic() + 120
        model_dir = os.path.join(config.serving_model_dir, FAMILY)
        while time.monotonic() < end and child.proc.poll() is None:
            if glob.glob(os.path.join(model_dir, ".tmp-*")):
                staging_seen = True
                break
            if (component, "finished") in child.log_events():
                break
            time.sleep(0.001)
    else:
        low, high = KILL_DELAY[component]
        time.sleep(rng.uniform(low, high))
    landed = child.running()
    child.kill()
    left = recovery.audit(config.pipeline_root, config.metadata_path, config.serving_model_dir)
    partial_versions = [
        p for p in glob.glob(os.path.join(config.serving_model_dir, "*", "*"))
        if os.path.basename(p).isdigit() and not os.path.exists(os.path.join(p, "saved_model.pb"))
    ]
    rerun = Child(config, work, f"rerun-{component}-{n}")
    code = rerun.wait()
    out = rerun.stdout()
    recovered = [line.strip() for line in out.splitlines() if line.strip().startswith("recovered:")]
    problems = recovery.audit(config.pipeline_root, config.metadata_path, config.serving_model_dir)
    lost = lost_since(config, before)
    newest = newest_version(config)
    pushed_new = newest is not None and newest not in before["versions"]
    serve_error = serves(newest) if newest else "no version"
    passed = code == 0 and not problems and not lost and pushed_new and not serve_error and not partial_versions
    return {
        "passed": passed,
        "data_lost": len(lost),
        "killed_in": landed,
        "staging_seen": staging_seen,
        "left_by_kill": len(left),
        "partial_versions_after_kill": len(partial_versions),
        "recovered": recovered,
        "rerun_exit": code,
        "audit_after_rerun": problems,
        "lost": lost,
        "serve_error": serve_error,
        "rerun_seconds": round(time.monotonic() - rerun.started, 1),
    }


def concurrent_trial(config, work: str, n: int) -> dict:
    from pipeline import recovery

    before = snapshot(config)
    first = Child(config, work, f"concurrent-first-{n}")
    first.wait_for_start("InteractionExampleGen")
    t0 = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "pipeline.local_runner", *_dataset_flags(config), "--data_dir", config.data_dir,
         "--output_dir", config.output_dir, "--families", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    second_seconds = time.monotonic() - t0
    still_running = first.proc.poll() is None
    code = first.wait()
    problems = recovery.audit(config.pipeline_root, config.metadata_path, config.serving_model_dir)
    lost = lost_since(config, before)
    refused = second.returncode == 2 and "is in use by another run" in second.stdout
    return {
        "passed": refused and still_running and code == 0 and not problems and not lost and "Traceback" not in second.stderr,
        "data_lost": len(lost),
        "second_exit": second.returncode,
        "second_seconds": round(second_seconds, 1),
        "second_message": [line for line in second.stdout.splitlines() if "in use" in line][:1],
        "first_exit": code,
        "audit": problems,
    }


def _truncate_variables(version_dir: str) -> None:
    for data in glob.glob(os.path.join(version_dir, "variables", "variables.data-*")):
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)


def _warmup_inputs(version_dir: str) -> Tuple[List[bytes], list]:
    """The warmup examples and histories a pushed version carries (what the Pusher wrote)."""
    from bench.serving import warmup_inputs

    examples, histories = warmup_inputs(version_dir)
    if not examples:
        raise SystemExit(f"error: {version_dir} has no warmup examples")
    return examples, histories


def push(source: str, base: str) -> int:
    """Pushes the SavedModel `source` into the serving base `base` with the product's Pusher
    code (`components.pusher.push_model`: staging copy, warmup records, atomic rename), as
    the pipeline's Pusher component does; returns the version it chose."""
    from components.pusher import push_model

    examples, histories = _warmup_inputs(source)
    version, _ = push_model(source, base, FAMILY, warmup_examples=examples, warmup_histories=histories)
    return version


def corrupted_copy(source: str, dst: str) -> str:
    """A copy of the SavedModel `source` whose variables are cut to half their size: a
    damaged model artifact that the Pusher copies as it is."""
    shutil.copytree(source, dst)
    _truncate_variables(dst)
    return dst


def corrupt_trial(source_version: str, work: str, n: int, concurrency: int = 8) -> dict:
    from contract import protocol
    from serving import local_server
    from serving.client import ServingClient, ServingError

    base = os.path.join(work, f"corrupt-base-{n}")
    os.makedirs(base)
    first = push(source_version, base)
    examples = np.array(_warmup_inputs(source_version)[0][:1], dtype=object)
    server = local_server.serve(base, port=0, poll_seconds=0.2)
    stop = threading.Event()
    versions, failures, count = set(), [], [0]

    def load():
        with ServingClient(server.address, timeout_s=30.0, retries=0) as client:
            while not stop.is_set():
                try:
                    versions.add(client.predict(FAMILY, {protocol.EXAMPLES: examples}).version)
                    count[0] += 1
                except ServingError as exc:
                    failures.append(f"{exc.code.name}: {exc.message[:200]}")

    threads = [threading.Thread(target=load) for _ in range(concurrency)]
    status = {}
    try:
        for t in threads:
            t.start()
        _until(lambda: count[0] >= 200, 120)
        bad = push(corrupted_copy(source_version, os.path.join(work, f"corrupt-model-{n}")), base)
        with ServingClient(server.address, timeout_s=30.0) as client:
            def failed():
                return {s["version"]: s for s in client.model_status(FAMILY)}.get(bad, {}).get("state") == "END"
            reported = _until(failed, 300)
            status = {s["version"]: s for s in client.model_status(FAMILY)}
            at_failure = count[0]
            _until(lambda: count[0] >= at_failure + 200, 120)
            good = push(source_version, base)
            switched = _until(lambda: good in versions, 300)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop(grace=0)
    error = status.get(bad, {})
    passed = (not failures and reported and switched and bad not in versions and first in versions
              and error.get("error_code", "OK") != "OK")
    return {
        "passed": passed,
        "data_lost": len(failures),
        "requests": count[0],
        "failed_requests": failures[:3],
        "pushed": {"first": first, "corrupted": bad, "then": good},
        "versions_answering": sorted(versions),
        "corrupted_version_status": f"{error.get('state')} {error.get('error_code')}: {error.get('error_message', '')[:160]}",
    }


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _blank(line: bytes) -> bool:
    """Blank as the parser sees it: UTF-8 and only whitespace."""
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _trial_copy(config, trial_dir: str) -> Tuple[str, str, bytes]:
    """A copy of the slice in `trial_dir`; (the copy's interaction file, its name, its line end)."""
    source = interactions_file(config)
    shutil.copytree(config.data_dir, trial_dir)
    path = os.path.join(trial_dir, os.path.relpath(source, config.data_dir))
    with open(path, "rb") as f:
        end = b"\r\n" if b"\r\n" in f.read() else b"\n"
    return path, os.path.basename(path), end


def fuzz_trial(config, work: str, rng: random.Random, n: int) -> dict:
    """Damages lines of the slice's interaction file; the Beam ingest must account for every line and
    hold the limit."""
    from components.example_gen import run_ingest

    path, name, end = _trial_copy(config, os.path.join(work, f"fuzz-{n}"))
    trial_dir = os.path.dirname(path)
    sep = config.load_description().interactions.delimiter.encode()
    with open(path, "rb") as f:
        lines = f.read().split(end)
    body = [i for i in range(1, len(lines)) if lines[i]]
    damaged = rng.sample(body, rng.randrange(1, 12))
    kinds = []
    for i in damaged:
        kind = rng.choice(["truncate", "latin1", "huge", "nul", "garbage", "quote", "extra", "swap"])
        kinds.append(kind)
        line = lines[i]
        if kind == "truncate":
            line = line[: rng.randrange(0, len(line))]
        elif kind == "latin1":
            line = line + "é".encode("latin-1")
        elif kind == "huge":
            line = line + sep + b"9" * rng.choice([70_000, 3_000_000])
        elif kind == "nul":
            line = line[:2] + b"\x00" + line[2:]
        elif kind == "garbage":
            line = bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(rng.randrange(1, 200)))
        elif kind == "quote":
            line = b'"' + line
        elif kind == "extra":
            line = line + sep + b"x"
        elif kind == "swap":
            fields = line.split(sep)
            line = sep.join([fields[1], fields[0]] + fields[2:]) if len(fields) > 1 else line
        lines[i] = line
    header = config.load_description().interactions.header
    width = len(lines[0].split(sep))
    if header and rng.random() < 0.3:  # shuffled columns, consistently: must read by name
        order = list(range(width))[::-1]
        lines = [sep.join(l.split(sep)[j] for j in order) if len(l.split(sep)) == width else l for l in lines]
    with open(path, "wb") as f:
        f.write(end.join(lines))
    nonblank = sum(1 for l in lines[1 if header else 0:] if not _blank(l))
    out = os.path.join(work, f"fuzz-out-{n}")
    try:
        result = run_ingest(trial_dir, dataclasses.replace(config, max_bad_rows=100).ingest_config(), out)
    except Exception as exc:  # the trial fails; the exception is the note
        return {"passed": False, "data_lost": 0, "note": f"{type(exc).__name__}: {str(exc)[:300]}"}
    bad = result["bad_rows"]["total"]
    read = result["rows_read"]["interactions"]
    written = sum(result["positives_written"].values())
    unaccounted = nonblank - read  # every non-blank line must be read as a row or a bad row
    bad_interactions = read - written
    limit_ok = True
    if bad:
        try:
            run_ingest(trial_dir, dataclasses.replace(config, max_bad_rows=bad - 1).ingest_config(), out + "-limit")
            limit_ok = False
        except ValueError as exc:
            limit_ok = f"{bad} bad input rows, more than max_bad_rows={bad - 1}" in str(exc) and f"{name}:" in str(exc)
    passed = unaccounted == 0 and bad_interactions == bad and limit_ok
    return {
        "passed": passed,
        "data_lost": abs(unaccounted) + abs(bad_interactions - bad),
        "damaged_lines": len(damaged),
        "kinds": sorted(set(kinds)),
        "rows_read": read,
        "bad_rows": bad,
        "by_reason": {k: v["count"] for k, v in result["bad_rows"]["by_reason"].items()},
        "limit_holds": limit_ok,
    }


def fuzz_cli_trial(config, work: str) -> dict:
    """A damaged file through the pipeline's CLI: a clear error naming file:line, no traceback."""
    path, name, end = _trial_copy(config, os.path.join(work, "fuzz-cli"))
    with open(path, "rb") as f:
        lines = f.read().split(end)
    lines[5] = lines[5] + b"\xff\xfe"
    with open(path, "wb") as f:
        f.write(end.join(lines))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.local_runner", *_dataset_flags(config), "--data_dir", os.path.dirname(path),
         "--output_dir", os.path.join(work, "fuzz-cli-out"), "--families", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    text = proc.stdout + proc.stderr
    head = text.split("Last lines of")[0]  # the failure summary, before the log tail
    named = f"{name}:6: not UTF-8" in head
    return {
        "passed": proc.returncode == 1 and named and "Traceback" not in head,
        "data_lost": 0,
        "exit": proc.returncode,
        "message": [line.strip() for line in head.splitlines() if f"{name}:6" in line][:1],
    }


def load_trial(source_version: str, work: str, requests: int, concurrency: int, pushes: int) -> dict:
    """`requests` Predicts at `concurrency` against a local server child while `pushes` versions arrive."""
    from bench.serving import free_port, run_cell  # noqa: F401  (same client stack as the latency bench)
    from contract import protocol
    from serving.client import ServingClient, ServingError

    base = os.path.join(work, "load-base")
    os.makedirs(base)
    first = push(source_version, base)
    port = free_port()
    log_path = os.path.join(work, "load-server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.local_server", "--model_base", base, "--port", str(port),
             "--poll_seconds", "0.5"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    target = f"127.0.0.1:{port}"
    try:
        with ServingClient(target, timeout_s=120.0, retries=60, backoff_s=0.5, max_backoff_s=2.0) as probe:
            probe.model_status(FAMILY)
        examples = np.array(_warmup_inputs(source_version)[0][:1], dtype=object)
        per_thread = requests // concurrency
        latencies = [[] for _ in range(concurrency)]
        versions: List[List[int]] = [[] for _ in range(concurrency)]
        errors: List[str] = []
        done = [0]
        lock = threading.Lock()
        push_at = [int(requests * (k + 1) / (pushes + 1)) for k in range(pushes)]
        pushed: List[int] = []
        gate = threading.Barrier(concurrency + 1)

        def worker(i: int) -> None:
            with ServingClient(target, timeout_s=30.0, retries=0) as client:
                gate.wait()
                for _ in range(per_thread):
                    t0 = time.perf_counter()
                    try:
                        result = client.predict(FAMILY, {protocol.EXAMPLES: examples})
                        latencies[i].append(time.perf_counter() - t0)
                        versions[i].append(result.version)
                    except ServingError as exc:
                        errors.append(f"{exc.code.name}: {exc.message[:200]}")
                    with lock:
                        done[0] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        load_before = os.getloadavg()[0]
        gate.wait()
        t0 = time.perf_counter()
        for k, at in enumerate(push_at):
            _until(lambda: done[0] >= at, 600)
            pushed.append(push(source_version, base))
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1000.0
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if lat.size else (0, 0, 0)
    seen = sorted({v for vs in versions for v in vs})
    return {
        "passed": not errors and set([first] + pushed) <= set(seen),
        "data_lost": len(errors),
        "requests": int(lat.size) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "requests_per_s": round(lat.size / wall, 1),
        "versions_answering": seen,
        "first": first,
        "pushed": pushed,
        "load_average_before": round(load_before, 2),
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def summarize(scenario: str, trials: List[dict]) -> dict:
    passed = sum(1 for t in trials if t["passed"])
    lost = sum(int(t.get("data_lost", 0)) for t in trials)
    if scenario.startswith("kill_"):
        landed = sorted({str(t.get("killed_in")) for t in trials})
        rerun = [t["rerun_seconds"] for t in trials if "rerun_seconds" in t]
        notes = (
            f"killed in {', '.join(landed)}; partial outputs left by the kills (audit findings) "
            f"{[t.get('left_by_kill') for t in trials]}, all removed by the next run's recovery; "
            f"partial versions in the serving base after the kill: {sum(t.get('partial_versions_after_kill', 0) for t in trials)}; "
            f"reruns completed, audit clean after them: {sum(1 for t in trials if t.get('rerun_exit') == 0 and not t.get('audit_after_rerun'))}"
            f"/{len(trials)}; rerun s {rerun}"
        )
        if scenario.startswith("kill_Pusher"):
            notes += f"; staging directory present at the kill: {sum(1 for t in trials if t.get('staging_seen'))}/{len(trials)}"
    elif scenario == "concurrent_runs":
        notes = (
            f"second run exit codes {[t.get('second_exit') for t in trials]} after "
            f"{[t.get('second_seconds') for t in trials]} s (process start included); "
            f"{(trials[0].get('second_message') or [''])[0][:160]}"
        )
    elif scenario == "corrupt_push_under_load":
        pushed = trials[0].get("pushed", {})
        notes = (
            f"requests {[t.get('requests') for t in trials]} at concurrency 8, failed {lost}; pushed with "
            f"components.pusher.push_model: versions {pushed.get('first')}, {pushed.get('corrupted')} (truncated "
            f"variables), {pushed.get('then')}; versions answering {trials[0].get('versions_answering')}; "
            f"corrupted version: {trials[0].get('corrupted_version_status')}"
        )
    elif scenario == "fuzzed_input":
        reasons: Dict[str, int] = {}
        for t in trials:
            for k, v in t.get("by_reason", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        notes = (
            f"{sum(t.get('damaged_lines', 0) for t in trials if 'damaged_lines' in t)} damaged lines in "
            f"{sum(1 for t in trials if 'damaged_lines' in t)} Beam ingests, bad rows by reason {reasons}; "
            f"limit exact in all: {all(t.get('limit_holds', True) for t in trials)}; CLI run: "
            + "; ".join(m for t in trials for m in t.get("message", []))[:200]
        )
    else:
        t = trials[0]
        notes = (
            f"{t.get('requests')} requests at concurrency 8, {t.get('errors')} errors, p50 {t.get('p50_ms')} ms, "
            f"p95 {t.get('p95_ms')} ms, p99 {t.get('p99_ms')} ms, {t.get('requests_per_s')} requests/s; "
            f"versions answering {t.get('versions_answering')} (version {t.get('first')} pushed before the load, "
            f"{t.get('pushed')} during it, all with components.pusher.push_model)"
        )
    return {"scenario": scenario, "trials": len(trials), "passed": passed, "data_lost": lost, "notes": notes}


def render_markdown(rows: List[dict], meta: dict) -> str:
    lines = [
        "# Reliability under faults",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: {meta.get('commit') or 'not recorded'}",
        f"- data: {meta['data']}",
        f"- machine: {meta['nproc']} CPUs, {meta['cpu_model']}; load average {meta['load']}; shared with other "
        "work, so the seconds and latencies below are not evidence of speed (the scenarios are about what was "
        "lost and which versions answered)",
        f"- date: {meta['date']}; wall time {meta['seconds']} s",
        "",
        "| scenario | trials | passed | data lost | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['trials']} | {r['passed']} | {r['data_lost']} | {r['notes']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Reliability under faults (kills, locks, corruption, fuzzing, load).")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--trials", type=int, default=3, help="trials per kill and corruption scenario")
    parser.add_argument("--fuzz_trials", type=int, default=10)
    parser.add_argument("--requests", type=int, default=10_000, help="load_while_pushing: total requests")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--work_dir", default=None, help="keep trial outputs here (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    from pipeline.configs import PipelineConfig, add_dataset_arguments, dataset_overrides

    add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    started = time.monotonic()
    ran_at = commit()  # before the trials: the code they ran
    load_before = os.getloadavg()[0]
    work = args.work_dir or tempfile.mkdtemp(prefix="reliability-")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    data = dataset_overrides(args)
    if args.dataset_file:
        data["dataset"] = os.path.abspath(args.dataset_file)
    full = dataclasses.replace(PipelineConfig(), **data).resolved()
    data_dir = write_slice(full.load_description(), full.data_dir, os.path.join(work, "data"))
    config = pipeline_config(data_dir, os.path.join(work, "out"), **{k: v for k, v in data.items() if k != "data_dir"})
    results: Dict[str, List[dict]] = {}

    def record(scenario: str, trial: dict) -> None:
        results.setdefault(scenario, []).append(trial)
        print(f"{scenario}: {'passed' if trial['passed'] else 'FAILED'} {json.dumps(trial, default=str)[:400]}", flush=True)

    needs_pipeline = any(s.startswith("kill_") or s in ("concurrent_runs", "corrupt_push_under_load", "load_while_pushing")
                         for s in scenarios)
    if needs_pipeline:
        baseline = Child(config, work, "baseline")
        code = baseline.wait()
        print(f"baseline run: exit {code} in {time.monotonic() - baseline.started:.0f} s", flush=True)
        if code != 0:
            print(baseline.stdout()[-3000:], file=sys.stderr)
            return 1
    for scenario in scenarios:
        if scenario.startswith("kill_"):
            component = scenario[len("kill_"):]
            for n in range(args.trials):
                record(scenario, kill_trial(component, config, work, rng, n))
        elif scenario == "concurrent_runs":
            for n in range(max(1, args.trials - 1)):
                record(scenario, concurrent_trial(config, work, n))
        elif scenario == "corrupt_push_under_load":
            for n in range(args.trials):
                record(scenario, corrupt_trial(newest_version(config), work, n))
        elif scenario == "fuzzed_input":
            for n in range(args.fuzz_trials):
                record(scenario, fuzz_trial(config, work, rng, n))
            record(scenario, fuzz_cli_trial(config, work))
        elif scenario == "load_while_pushing":
            record(scenario, load_trial(newest_version(config), work, args.requests, 8, 2))
    rows = [summarize(s, results[s]) for s in scenarios if s in results]
    for row in rows:  # notes name files relative to the trial's working directory
        row["notes"] = row["notes"].replace(work + os.sep, "").replace(work, ".")
    meta = {
        "command": command_line("bench.reliability", argv),
        "commit": ran_at,
        "data": f"{config.describe_dataset()} from {full.data_dir}: the first {SLICE_USERS} users of each interaction "
                f"file ({config.split} split, seed {config.seed}), family {FAMILY}, 40 train steps",
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 minute)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.monotonic() - started),
    }
    os.makedirs(args.out, exist_ok=True)
    report = {"rows": rows, "meta": meta, "trials": results}
    atomic_write(os.path.join(args.out, "reliability.json"), json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(os.path.join(args.out, "reliability.md"), render_markdown(rows, meta))
    print(render_markdown(rows, meta))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["passed"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

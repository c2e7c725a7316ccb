"""Runs the pipeline locally: LocalDagRunner with SQLite ML Metadata.

`make run` calls `python -m pipeline.local_runner`. The terminal shows one line per
component (name, status, seconds); TensorFlow's and Beam's logs go to a file under
the output directory, whose path is printed. On failure the failing component and
the last lines of its log are shown.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import re
import sys
import time
from typing import List, Optional

from common import run_lock
from pipeline import recovery, report
from pipeline.configs import (LOCAL_BEAM_PROFILES, PipelineConfig, add_beam_arguments, add_dataset_arguments,
                              apply_beam_arguments, dataset_overrides, families_arg, load_preset,
                              merge_hparams, presets)

_COMPONENT_LINE = re.compile(r"^Component (\S+) is (running|finished)\.$")
_SKIP_LINE = re.compile(r"^Skipping component (\S+)\.$")


@dataclasses.dataclass
class ComponentTiming:
    name: str
    status: str  # ok / failed / skipped
    seconds: float


class PipelineFailed(RuntimeError):
    """A component failed; carries its name and the log path."""

    def __init__(self, component: Optional[str], log_path: str, cause: BaseException):
        self.component = component
        self.log_path = log_path
        self.cause = cause
        super().__init__(f"component {component or '?'} failed: {cause}")


class _Progress(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished.' records into lines."""

    def __init__(self, out: io.TextIOBase):
        super().__init__(level=logging.INFO)
        self.out = out
        self.timings: List[ComponentTiming] = []
        self.running: Optional[str] = None
        self._started = 0.0
        self._tty = hasattr(out, "isatty") and out.isatty()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to report
            return
        match = _COMPONENT_LINE.match(message)
        if match:
            name, state = match.groups()
            if state == "running":
                self.running, self._started = name, time.monotonic()
                if self._tty:  # the finish line overwrites this one
                    self.out.write(f"  {name:<28} running ...")
                    self.out.flush()
            else:
                self._finish("ok")
            return
        match = _SKIP_LINE.match(message)
        if match:
            self.timings.append(ComponentTiming(match.group(1), "skipped", 0.0))
            self.out.write(f"  {match.group(1):<28} skipped\n")
            self.out.flush()

    def _finish(self, status: str) -> None:
        if self.running is None:
            return
        seconds = time.monotonic() - self._started
        self.timings.append(ComponentTiming(self.running, status, seconds))
        prefix = "\r" if self._tty else ""
        self.out.write(f"{prefix}  {self.running:<28} {status:<7} {seconds:7.1f} s\n")
        self.out.flush()
        self.running = None

    def fail(self) -> Optional[str]:
        name = self.running
        self._finish("FAILED")
        return name


@contextlib.contextmanager
def _logs_to_file(log_path: str):
    """Sends stdout, stderr (including TensorFlow's C++ logs) and logging to a file.

    Yields a text stream on the original stdout for the progress lines.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = io.TextIOWrapper(io.FileIO(os.dup(saved_out), "w"), line_buffering=True)
    old_streams = sys.stdout, sys.stderr
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(os.dup(log_fd), "w"), line_buffering=True)
    sys.stderr = sys.stdout
    root = logging.getLogger()
    file_handler = logging.StreamHandler(sys.stdout)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield terminal
    finally:
        root.removeHandler(file_handler)
        root.setLevel(old_level)
        sys.stdout.flush()
        sys.stdout, sys.stderr = old_streams
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.flush()


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def without_tfx_sdist():
    """TFX's Beam executors package TFX as an sdist for the Beam workers unless the Beam
    arguments name a dependency (`tfx.utils.dependency_utils.make_beam_dependency_flags`):
    a `setup.py sdist` subprocess of 2-3 s in each Beam component, seven of them in `make
    run` (bench/results/evaluator_profile.md). Workers of the local profiles run in this
    Python environment, which has TFX: within this context nothing is packaged."""
    from tfx.utils import dependency_utils

    original = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = lambda beam_pipeline_args: list(beam_pipeline_args)
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = original


def run(config: PipelineConfig, progress_out: Optional[io.TextIOBase] = None) -> List[ComponentTiming]:
    """Runs the pipeline in-process; returns per-component timings.

    With `progress_out`, TensorFlow/Beam logs go to `config.log_path` and one progress
    line per component goes to `progress_out`. Before any component, ExampleGen's preflight
    checks the description against the data (`preflight`) and raises its error (a
    ValueError or OSError naming the file, column or task). Raises PipelineFailed when a
    component fails, and common.run_lock.RunLocked at once when another run holds the output
    directory.
    """
    config = config.resolved()
    preflight(config)
    with contextlib.ExitStack() as stack:
        stack.enter_context(run_lock.hold(config.output_dir))
        out = progress_out
        if out is not None:
            to_terminal = progress_out is sys.stdout
            terminal = stack.enter_context(_logs_to_file(config.log_path))
            out = terminal if to_terminal else progress_out
        progress = _Progress(out or io.StringIO())

        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)
        absl_logger = logging.getLogger("absl")
        absl_logger.addHandler(progress)
        stack.callback(absl_logger.removeHandler, progress)

        # With the lock held, an execution still RUNNING belongs to a run that died.
        for note in recovery.recover(config.pipeline_root, config.metadata_path, config.serving_model_dir):
            logging.warning("recovered: %s", note)
            if out is not None:
                out.write(f"  recovered: {note}\n")

        try:
            from tfx import v1 as tfx

            from pipeline.pipeline import create_pipeline

            os.makedirs(config.output_dir, exist_ok=True)
            if config.beam_profile in LOCAL_BEAM_PROFILES:
                stack.enter_context(without_tfx_sdist())
            pipeline = create_pipeline(
                config,
                metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                    config.metadata_path
                ),
                enable_cache=config.enable_cache,
                report_step=False,  # main() writes the report, with the timings, after the run
            )
            tfx.orchestration.LocalDagRunner().run(pipeline)
            if config.spanned:  # each family's push or its reason, in the run record
                from pipeline import report, span_stages

                span_stages.record_outcomes(config, report.output_dirs(config.pipeline_root))
        except BaseException as e:  # noqa: B902 - reported, then re-raised
            failed = progress.fail()
            logging.exception("pipeline failed in component %s", failed)
            raise PipelineFailed(failed, config.log_path, e) from e
        return progress.timings


def _parse_args(argv: Optional[List[str]]) -> PipelineConfig:
    from models import registry
    from models.hparams import parse_assignments

    defaults = PipelineConfig()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=registry.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(parser)
    parser.add_argument("--output_dir", default=defaults.output_dir)
    parser.add_argument("--families", default=None,
                        help=f"comma-separated, or 'none' for data stages only (default: {','.join(defaults.families)})")
    parser.add_argument("--preset", default=None, choices=presets(),
                        help="named settings shipped in presets/NAME.yaml (e.g. best: the best measured settings "
                             "that cost too much for the default run); --hparam overrides them")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE",
                        help="override a family's hyperparameter (repeatable); see the list below")
    parser.add_argument("--gate", action="append", default=[], metavar="TASK=THRESHOLD",
                        help="override a task's gate threshold, e.g. rating=0.95 (repeatable)")
    parser.add_argument("--train_steps", type=int, default=defaults.train_steps,
                        help="cap on each Trainer's steps (0: train until early stopping)")
    parser.add_argument("--max_bad_rows", type=int, default=defaults.max_bad_rows)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train_strategy", default=defaults.train_strategy,
                        choices=["default", "mirrored", "multi_worker"],
                        help="the Trainers' tf.distribute strategy (multi_worker: TF_CONFIG must name the workers)")
    add_beam_arguments(parser)
    parser.add_argument("--schema_file", default=None, help="schema to validate against (default: the curated one)")
    parser.add_argument("--train_spans", type=int, default=defaults.train_spans,
                        help="spanned logs: the most spans a run trains on (eval: next-to-newest, test: newest)")
    parser.add_argument("--warm_start", default=None, choices=["on", "off"],
                        help="start each Trainer from its family's last blessed model (default: on for spanned logs)")
    parser.add_argument("--drift_threshold", action="append", default=[], metavar="FEATURE=VALUE",
                        help="spanned logs: a feature's drift threshold, newest span vs the window (0: not watched)")
    args = parser.parse_args(argv)
    try:
        preset = load_preset(args.preset) if args.preset else {}
        hparams = merge_hparams(preset.pop("hparams", {}), parse_assignments(args.hparam))
        gates = {}
        for item in args.gate:
            task, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--gate {item!r}: expected TASK=THRESHOLD, e.g. rating=0.95")
            gates[task.strip()] = float(value)
        drift = {}
        for item in args.drift_threshold:
            feature, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--drift_threshold {item!r}: expected FEATURE=VALUE, e.g. rating=0.3")
            drift[feature.strip()] = float(value)
        config = dataclasses.replace(
            defaults,
            **preset,
            **dataset_overrides(args),
            output_dir=os.path.abspath(args.output_dir),
            families=families_arg(args.families),
            hparams=hparams,
            gate_thresholds=gates,
            train_steps=args.train_steps,
            train_strategy=args.train_strategy,
            max_bad_rows=args.max_bad_rows,
            seed=args.seed,
            schema_file=args.schema_file,
            train_spans=args.train_spans,
            warm_start=None if args.warm_start is None else args.warm_start == "on",
            drift_thresholds=drift,
        ).resolved()
        return apply_beam_arguments(config, args)
    except ValueError as e:  # DescriptionError included: it names the file, key and what is allowed
        parser.error(str(e))


def preflight(config: PipelineConfig) -> None:
    """ExampleGen's checks of the description against the data (files, columns, tasks the data
    can feed), before any component runs; raises with a message naming what is wrong."""
    if config.spanned:  # each span's files are checked when SpanExampleGen reads it; here: any span at all
        from components.example_gen.spans import available_spans

        available_spans(config.data_dir, config.load_description().interactions.files)
        return
    from components.example_gen.preflight import preflight as check

    check(config.load_description(), config.data_dir)


def _is_input_error(failure: PipelineFailed) -> bool:
    """Bad input data (rows, files, anomalies): reported by its message, which names file, line or feature."""
    if failure.component == "AnomalyGate":
        return True
    return failure.component == "InteractionExampleGen" and isinstance(failure.cause, (ValueError, OSError))


def main(argv: Optional[List[str]] = None) -> int:
    config = _parse_args(argv)
    print(f"Pipeline on {config.describe_dataset()} data from {config.data_dir} (split: {config.split}, "
          f"Beam: {config.beam_profile})")
    print(f"Logs: {config.log_path}")
    started = time.monotonic()
    try:
        timings = run(config, progress_out=sys.stdout)
    except run_lock.RunLocked as e:
        print(f"\nerror: {e}")
        return 2
    except (ValueError, OSError) as e:  # preflight: a bad description or data, before any component ran
        print(f"\nerror: {e}")
        return 2
    except PipelineFailed as e:
        print(f"\nFAILED in component {e.component or '(before any component)'}:")
        print(f"  {type(e.cause).__name__}: {e.cause}")
        if _is_input_error(e):  # the message says it all; the log's stack trace would read as a crash
            print(f"\nFull log: {e.log_path}")
        else:
            print(f"\nLast lines of {e.log_path}:")
            print(tail(e.log_path))
        return 1
    print(f"\nDone in {time.monotonic() - started:.1f} s. Outputs:")
    print(f"  description       {config.describe_dataset()}")
    print(f"  pipeline root     {config.pipeline_root}")
    print(f"  ML Metadata       {config.metadata_path}")
    print(f"  log               {config.log_path}")
    for component, outputs in report.output_dirs(config.pipeline_root).items():
        for key, path in outputs.items():
            print(f"  {component + '.' + key:<40} {path}")
    if config.families:
        print(f"\nModels (serving base {config.serving_model_dir}):")
        for family in config.families:
            outcome = report.family_outcome(config.pipeline_root, family)
            print("\n".join(report.format_outcome(outcome, config.top_k)) if outcome else f"  {family}: no evaluation")
    from pipeline import html_report

    from pipeline import model_card

    for path in model_card.write_cards(config):
        print(f"Model card: {path}")
    print(f"\nReport: {html_report.write(config, timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

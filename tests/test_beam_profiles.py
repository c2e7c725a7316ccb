"""Beam runner profiles: argument sets from configuration; multi-process and TF2-mode Transform = the defaults' output."""

import dataclasses
import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline import configs, report
from pipeline.configs import PipelineConfig, beam_args
from pipeline.local_runner import _parse_args, run

SPLITS = ("train", "eval", "test")


def test_in_process_is_the_default_profile():
    config = PipelineConfig()
    assert config.beam_profile == "in_process"
    assert config.beam_pipeline_args == beam_args("in_process")


def test_profiles_fill_placeholders_from_settings_then_environment():
    env = {"RECSYS_BEAM_PROJECT": "p1", "RECSYS_BEAM_TEMP_LOCATION": "gs://b/tmp"}
    args = beam_args("dataflow", {"image": "reg/recsys:1"}, extra=["--num_workers=3"], environ=env)
    assert args[0] == "--runner=DataflowRunner"
    assert {"--project=p1", "--temp_location=gs://b/tmp", "--sdk_container_image=reg/recsys:1",
            "--region=us-central1"} <= set(args)
    assert args[-1] == "--num_workers=3"
    assert not any("{" in a for a in args)
    flink = beam_args("flink", {"job_endpoint": "flink-js:8099", "environment_config": "reg/recsys:1"}, environ={})
    assert "--runner=PortableRunner" in flink and "--job_endpoint=flink-js:8099" in flink
    assert "--environment_type=DOCKER" in flink
    assert beam_args("multi_process", {"workers": "3"}, environ={})[1] == "--direct_num_workers=3"


def test_a_missing_setting_names_the_flag_and_the_variable():
    with pytest.raises(ValueError, match=r"'dataflow' needs temp_location .*--beam_setting temp_location="
                                         r"VALUE or set RECSYS_BEAM_TEMP_LOCATION"):
        beam_args("dataflow", {"project": "p", "image": "i"}, environ={})
    with pytest.raises(ValueError, match="unknown Beam profile 'dask'"):
        beam_args("dask")
    with pytest.raises(ValueError, match="name=value"):
        configs.settings_arg(["temp_location"])


def test_local_runner_selects_the_profile_from_its_command_line(tmp_path):
    config = _parse_args(["--output_dir", str(tmp_path), "--beam_profile", "multi_process",
                          "--beam_setting", "workers=2", "--beam_arg=--direct_runner_bundle_repeat=0"])
    assert config.beam_profile == "multi_process"
    assert config.beam_pipeline_args == ("--direct_running_mode=multi_processing", "--direct_num_workers=2",
                                         "--direct_runner_bundle_repeat=0")


def _records(directory, pattern="*"):
    files = sorted(glob.glob(os.path.join(directory, pattern)))
    assert files, f"no files in {directory}"
    return sorted(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())


def _decoded(records):
    """Serialized tf.Examples as {feature: values}, in a canonical order."""
    out = []
    for raw in records:
        feature = tf.train.Example.FromString(raw).features.feature
        out.append({k: tuple(getattr(f, f.WhichOneof("kind")).value) for k, f in feature.items()})
    # Floats rounded for ordering only, so examples equal up to summation order pair up.
    return sorted(out, key=lambda r: sorted((k, tuple(round(x, 3) if isinstance(x, float) else x for x in v))
                                            for k, v in r.items()))


def _assert_same_examples(before, after, split):
    """Ids, labels and histories equal; floats equal up to the analyzers' summation order."""
    before, after = _decoded(before), _decoded(after)
    assert len(before) == len(after) > 0, split
    for x, y in zip(before, after):
        assert x.keys() == y.keys(), split
        for name, value in x.items():
            if value and isinstance(value[0], float):
                np.testing.assert_allclose(value, y[name], rtol=1e-5, atol=1e-6, err_msg=f"{split} {name}")
            else:
                assert value == y[name], (split, name)


def _assets(transform_graph):
    assets = os.path.join(transform_graph, "transform_fn", "assets")
    out = {}
    for name in sorted(os.listdir(assets)):
        with open(os.path.join(assets, name), "rb") as f:
            out[name] = f.read()
    return out


def test_multi_process_and_tf2_mode_write_what_the_in_process_compat_run_writes(trained_run, tmp_path):
    """The DirectRunner's multi-process mode, with Transform in TF2 mode, against the session's
    run of the same slice (in-process, Transform in tf.Transform's TF1 compat mode, the faster
    one the pipeline uses). One run checks both switches: each must leave ExampleGen's examples,
    the transformed examples and the transform graph's assets as they were."""
    in_process = trained_run[0]
    assert in_process.beam_profile == "in_process" and in_process.transform_tf_compat_v1
    config = configs.with_beam_profile(
        dataclasses.replace(in_process, output_dir=str(tmp_path / "mp"), families=(), transform_tf_compat_v1=False),
        "multi_process", {"workers": "2"})
    timings = run(config, progress_out=io.StringIO())
    assert all(t.status == "ok" for t in timings)

    before, after = report.output_dirs(in_process.pipeline_root), report.output_dirs(config.pipeline_root)
    for split in SPLITS:
        examples = [_records(os.path.join(d["InteractionExampleGen"]["examples"], f"Split-{split}"))
                    for d in (before, after)]
        assert examples[0] == examples[1] and examples[0], split
        transformed = [_records(os.path.join(d["Transform"]["transformed_examples"], f"Split-{split}"))
                       for d in (before, after)]
        _assert_same_examples(transformed[0], transformed[1], split)
    assert _assets(before["Transform"]["transform_graph"]) == _assets(after["Transform"]["transform_graph"])

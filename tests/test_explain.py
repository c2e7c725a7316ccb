"""Serving an explanation: `explain` inside the SavedModel, through the local server, the gRPC
client and serving.cli, on a review family exported with a small description's Transform
(the reviews of tests/typed_description.py without their side tables)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import metadata_io

from contract import datasets as D
from contract import description as desc
from contract import features as F
from contract import protocol
from export.signatures import export_model, serving_feature_spec
from models.context import ModelContext, feature_inputs
from serving import cli, client as client_module, local_server
from serving.client import ServingClient
from training.trainer import fit_on_arrays
from transform.preprocessing import preprocessing_fn
from typed_description import TRAIN, TYPED

REVIEWS = {
    "name": "reviews",
    "interactions": {k: TYPED["interactions"][k] for k in ("files", "user", "item", "time", "rating")},
    "labels": {"stars": {"rating": True}, "seen": {"implicit": True}},
    "tasks": [{"name": "stars", "kind": "regression", "condition": "seen"}],
}
REVIEWS["interactions"]["columns"] = {"review": TYPED["interactions"]["columns"]["review"]}
SPEC = D.dataset_spec(REVIEWS)
MAX_LENGTH = 3
COLUMNS = ("user_idx", "item_idx", "stars", "seen", "review_tokens", "user_review_docs_tokens",
           "item_review_docs_tokens")


def _raw_spec():
    spec = {}
    for f in desc.raw_features(SPEC.description):
        dtype = {desc.BYTES: tf.string, desc.INT: tf.int64, desc.FLOAT: tf.float32}[f.dtype]
        spec[f.name] = (tf.io.FixedLenFeature([], dtype) if f.name in (F.USER_ID, F.ITEM_ID)
                        else tf.io.VarLenFeature(dtype))
    return spec


def _row(user, item, stars, votes, review, user_docs, item_docs):
    return {
        F.USER_ID: user, F.ITEM_ID: item, F.TIMESTAMP: [0], F.HISTORY_ITEM_IDS: [], F.HISTORY_BEHAVIORS: [],
        "review": [] if review is None else [review], "user_review_docs": user_docs, "item_review_docs": item_docs,
        "stars": [] if stars is None else [stars], "seen": [0 if stars is None else 1], "split": ["train"],
    }


def _served_example(row) -> bytes:
    """What a client sends: the served raw features only (no review, rating or split)."""
    served = {f.name: f.dtype for f in desc.raw_features(SPEC.description) if f.serving}
    example = tf.train.Example()
    for name, dtype in served.items():
        values = row[name] if isinstance(row[name], list) else [row[name]]
        feature = example.features.feature[name]
        if dtype == desc.BYTES:
            feature.bytes_list.value.extend(v.encode() for v in values)
        elif dtype == desc.INT:
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return example.SerializeToString()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """review_mt fitted a few steps on the transformed synthetic rows and exported as version 1."""
    tmp = tmp_path_factory.mktemp("explain")
    graph = str(tmp / "transform")
    rows = [_row(*r) for r in TRAIN]
    metadata = tft.DatasetMetadata.from_feature_spec(_raw_spec())
    config = {"description": SPEC.to_dict(), "max_history": 8}
    with tft_beam.Context(temp_dir=str(tmp / "beam"), force_tf_compat_v1=True):
        transformed, transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config), output_record_batches=False)
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    metadata_io.write_metadata(metadata, os.path.join(graph, "metadata"))
    output = tft.TFTransformOutput(graph)
    data = {name: np.stack([np.asarray(r[name]) for r in transformed[0]]) for name in COLUMNS}
    data["stars"] = data["stars"].astype(np.float32)

    def rows_of(name):
        return output.vocabulary_size_by_name(name) + F.OOV_BUCKETS + 1

    context = ModelContext(
        dataset=SPEC, tasks=(SPEC.task("stars"),), num_users=rows_of(F.USER_VOCAB), num_items=rows_of(F.ITEM_VOCAB),
        num_behaviors=len(SPEC.behaviors) + 2, features=feature_inputs(SPEC.description, rows_of),
        mean_rating=float(data["stars"].mean()), text_rows={c.name: rows_of(c.vocabulary_name)
                                                            for c in SPEC.description.text_columns}, seed=3)
    model = fit_on_arrays("review_mt", context, {"dim": 8, "units": 8, "max_length": MAX_LENGTH, "encoder": "cnn",
                                                 "learning_rate": 0.05}, [data], epochs=5)
    base = str(tmp / "serving")
    valid = np.ones(context.num_items, bool)
    valid[0] = False
    export_model(model, output, valid, os.path.join(base, "review_mt", "1"), family="review_mt")
    yield {"model": model, "data": data, "base": base, "output": output,
           "loaded": tf.saved_model.load(os.path.join(base, "review_mt", "1")),
           "examples": [_served_example(r) for r in rows]}
    shutil.rmtree(str(tmp), ignore_errors=True)


def test_explain_generates_in_the_savedmodel_what_the_model_generates_with_the_served_rating(exported):
    loaded, examples = exported["loaded"], exported["examples"]
    assert {protocol.SERVING_DEFAULT, protocol.EXPLAIN} <= set(loaded.signatures)
    out = {k: v.numpy() for k, v in loaded.signatures[protocol.EXPLAIN](examples=tf.constant(examples)).items()}
    served = loaded.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(examples))["stars"].numpy()
    np.testing.assert_allclose(out["stars"], served, rtol=1e-5)
    tokens = out[protocol.EXPLANATION_TOKENS]
    assert tokens.shape == (len(examples), MAX_LENGTH)
    # The words of the model's own greedy ids, through the review vocabulary (<unk> for its unknown id).
    ids = exported["model"].explain({k: tf.constant(v) for k, v in exported["data"].items()}).numpy()
    vocabulary = [b""] + list(exported["output"].vocabulary_by_name("review_vocab")) + [b"<unk>"]
    expected = [[vocabulary[i] if i < len(vocabulary) else b"" for i in row] for row in ids]
    assert tokens.tolist() == expected
    assert [t.decode() for t in out[protocol.EXPLANATION]] == [" ".join(w.decode() for w in row if w)
                                                                for row in expected]
    assert any(t for t in out[protocol.EXPLANATION])  # the fitted model writes something


def test_explain_takes_the_serving_default_inputs_and_reads_the_documents(exported):
    loaded = exported["loaded"]
    assert loaded.signatures[protocol.EXPLAIN].structured_input_signature[1].keys() == {protocol.EXAMPLES}
    spec = serving_feature_spec(exported["output"], SPEC)
    assert "user_review_docs" in spec and "review" not in spec and "stars" not in spec
    plain = protocol.interaction_example("u1", "i1")
    with_docs = protocol.interaction_example("u1", "i1", texts={"user_review_docs": ["great shoe fit"],
                                                                "item_review_docs": ["bad", "ok shoe"]})
    out = loaded.signatures[protocol.EXPLAIN](examples=tf.constant([plain, with_docs]))
    assert out["stars"].numpy()[0] != pytest.approx(out["stars"].numpy()[1])  # documents move the rating


def test_local_server_client_and_cli_serve_the_explanation(exported, capsys):
    examples = exported["examples"][:2]
    expected = protocol.explanations({k: v.numpy() for k, v in exported["loaded"].signatures[protocol.EXPLAIN](
        examples=tf.constant(examples)).items()})
    server = local_server.serve(exported["base"], port=0, poll_seconds=0, run_warmup=False)
    try:
        with ServingClient(server.address, timeout_s=30.0, retries=2) as client:
            got = client.explain("review_mt", examples)
            assert [g[protocol.EXPLANATION] for g in got] == [e[protocol.EXPLANATION] for e in expected]
            assert [g["stars"] for g in got] == pytest.approx([e["stars"] for e in expected], rel=1e-5)
        request = ["--user", "u1", "--item", "i2", "--text", "user_review_docs=Great shoe. Great fit!"]
        assert client_module.main(["explain", "--target", server.address, "--model", "review_mt"] + request) == 0
        printed = capsys.readouterr().out
        assert "review_mt: stars " in printed and "explanation:" in printed
    finally:
        server.stop(grace=0)
    assert cli.main(["--serving_base", exported["base"], "--model", "review_mt", "explain"] + request) == 0
    assert printed.splitlines()[-1] in capsys.readouterr().out  # the same explanation in-process
    with pytest.raises(SystemExit):
        cli.main(["--serving_base", exported["base"], "--model", "review_mt", "explain", "--user", "u1",
                  "--item", "i2", "--text", "no equals sign"])

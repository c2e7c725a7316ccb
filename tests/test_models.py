"""Every MF family trains a few steps on the pipeline's Transform output and exports its signatures."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import features as F
from models.export import export_model, serving_feature_spec
from models.inputs import densify
from models.registry import FAMILIES
from models.trainer import train
from pipeline import report

SIGNATURES = {"serving_default", "transform_features", "recommend", "similar_items"}


@pytest.fixture(scope="module")
def transform_outputs(trained_run):
    config = trained_run[0]
    outputs = report.output_dirs(config.pipeline_root)
    examples = outputs["Transform"]["transformed_examples"]
    raw = outputs["InteractionExampleGen"]["examples"]
    return {
        "graph": outputs["Transform"]["transform_graph"],
        "train": [os.path.join(examples, "Split-train", "*")],
        "eval": [os.path.join(examples, "Split-eval", "*")],
        "raw_test": sorted(glob.glob(os.path.join(raw, "Split-test", "*"))),
    }


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, transform_outputs, tmp_path_factory):
    family = request.param
    model, summary, valid = train(
        family, transform_outputs["train"], transform_outputs["eval"], transform_outputs["graph"],
        train_steps=20, eval_steps=1, config={"dataset": "movielens", "epochs": 2},
    )
    out = str(tmp_path_factory.mktemp(family))
    tft_output = tft.TFTransformOutput(transform_outputs["graph"])
    export_model(model, tft_output, D.MOVIELENS, valid, out, top_k=5)
    return family, model, tf.saved_model.load(out), tft_output, summary


def _raw_test_examples(transform_outputs, n=64):
    ds = tf.data.TFRecordDataset(transform_outputs["raw_test"], compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]


def test_training_reports_progress(exported):
    family, _, _, _, summary = exported
    assert summary["train_steps"] == 20
    assert len(summary["history"]["total_loss"]) == 2
    assert all(np.isfinite(summary["history"]["total_loss"]))


def test_export_has_the_four_signatures(exported):
    assert SIGNATURES <= set(exported[2].signatures.keys())


def test_serving_default_equals_the_in_process_model(exported, transform_outputs):
    family, model, loaded, tft_output, _ = exported
    examples = _raw_test_examples(transform_outputs)
    served = loaded.signatures["serving_default"](examples=tf.constant(examples))
    head = FAMILIES[family].head.name
    assert set(served) == {head}
    # In process: parse the raw features the same way, apply the Transform graph, call the model.
    spec = serving_feature_spec(tft_output, D.MOVIELENS)
    transformed = densify(tft_output.transform_features_layer()(tf.io.parse_example(examples, spec)))
    np.testing.assert_allclose(served[head].numpy(), model(transformed).numpy(), rtol=1e-5, atol=1e-5)
    if FAMILIES[family].head.classification:
        assert np.all((served[head].numpy() >= 0) & (served[head].numpy() <= 1))


def test_serving_default_needs_no_label_or_timestamp(exported, transform_outputs):
    loaded = exported[2]
    example = tf.train.Example.FromString(_raw_test_examples(transform_outputs, 1)[0])
    for name in (F.RATING, F.WATCHED, F.TIMESTAMP):
        del example.features.feature[name]
    out = loaded.signatures["serving_default"](examples=tf.constant([example.SerializeToString()]))
    assert np.isfinite(list(out.values())[0].numpy()).all()


def _vocabulary(tft_output):
    return [v.decode() for v in tft_output.vocabulary_by_name(F.ITEM_VOCAB)]


def test_recommend_never_returns_a_history_item(exported):
    _, _, loaded, tft_output, _ = exported
    vocab = _vocabulary(tft_output)
    rng = np.random.default_rng(0)
    histories = [list(rng.choice(vocab, size=n, replace=False)) for n in (1, 3, 100)]
    # The ten most frequent training items are in every history (likely top scorers),
    # and a 100-item history is longer than the 64 the query uses: exclusion must cover
    # the whole history, not only what the query saw.
    histories = [h + [v for v in vocab[:10] if v not in h] for h in histories]
    width = max(len(h) for h in histories)
    ids = [[x.encode() for x in h] + [b""] * (width - len(h)) for h in histories]
    behaviors = [[b"liked"] * len(h) + [b""] * (width - len(h)) for h in histories]
    out = loaded.signatures["recommend"](history_item_ids=tf.constant(ids), history_behaviors=tf.constant(behaviors))
    assert out["item_ids"].shape == (3, 5)
    for history, recommended, scores in zip(histories, out["item_ids"].numpy(), out["scores"].numpy()):
        recommended = [r.decode() for r in recommended]
        assert not set(recommended) & set(history)
        assert all(r in vocab for r in recommended)
        assert list(scores) == sorted(scores, reverse=True)


def test_recommend_accepts_missing_behaviors(exported):
    loaded, tft_output = exported[2], exported[3]
    vocab = _vocabulary(tft_output)
    out = loaded.signatures["recommend"](
        history_item_ids=tf.constant([[vocab[0].encode(), vocab[1].encode()]]),
        history_behaviors=tf.constant([[b"", b""]]),
    )
    assert np.isfinite(out["scores"].numpy()).all()


def test_similar_items_excludes_the_item_and_rejects_unknown_ids(exported):
    loaded, tft_output = exported[2], exported[3]
    vocab = _vocabulary(tft_output)
    out = loaded.signatures["similar_items"](item_ids=tf.constant([vocab[0].encode()]))
    similar = [x.decode() for x in out["item_ids"].numpy()[0]]
    assert vocab[0] not in similar and len(similar) == 5
    assert np.all(out["scores"].numpy() <= 1.0 + 1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown item id"):
        loaded.signatures["similar_items"](item_ids=tf.constant([b"no-such-item"]))


def test_pushed_model_served_over_grpc_matches_in_process(trained_run, transform_outputs):
    """The pipeline's pushed models, served by the local server, answer as the SavedModel does."""
    from serving.client import ServingClient
    from serving.local_server import serve

    config = trained_run[0]
    examples = _raw_test_examples(transform_outputs, 8)
    with serve(config.serving_model_dir, port=0, poll_seconds=0.5) as server:
        with ServingClient(f"127.0.0.1:{server.port}", timeout_s=30) as client:
            for family in config.families:
                path = os.path.join(config.serving_model_dir, family)
                loaded = tf.saved_model.load(os.path.join(path, os.listdir(path)[0]))
                expected = loaded.signatures["serving_default"](examples=tf.constant(examples))
                served = client.predict_examples(family, examples)
                head = FAMILIES[family].head.name
                np.testing.assert_allclose(served[head], expected[head].numpy(), rtol=1e-6)
                history = _vocabulary(tft.TFTransformOutput(transform_outputs["graph"]))[:3]
                ranked = client.recommend(family, [history], [["liked"] * 3])[0]
                assert ranked and not {item for item, _ in ranked} & set(history)


def test_cli_prints_similar_items_and_recommendations(trained_run, transform_outputs, capsys):
    from models import cli

    config = trained_run[0]
    item = _vocabulary(tft.TFTransformOutput(transform_outputs["graph"]))[0]
    assert cli.main(["--serving_base", config.serving_model_dir, "--model", "mf", "similar", "--item", item]) == 0
    out = capsys.readouterr().out
    assert "items most similar to" in out and out.count("\n") >= 7
    assert cli.main(["--serving_base", config.serving_model_dir, "--model", "mf_dnn_liked", "recommend",
                     "--items", item, "--behaviors", "liked"]) == 0
    assert "recommended:" in capsys.readouterr().out

"""A sequential family through the pipeline on protocol S (leave_last_two_out), and the
`recommend` contract of every sequential family's export."""
import dataclasses
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import features as F
from contract import protocol
from contract import tasks as T
from evaluation import definitions as d
from evaluation.tfma_metrics import next_item_metric_names
from pipeline import report
from pipeline.configs import PipelineConfig
from training.warm_start import old_weights

NEXT_LIKE = "next_like"  # the shipped descriptions' tasks
TAOBAO = D.dataset_spec("taobao")

TINY = {"dim": "16", "max_epochs": "2"}


@pytest.fixture(scope="module")
def sequence_run(movielens_slice, tmp_path_factory):
    """One pipeline run of nextitnet, and of peterrec fine-tuning it, on the slice with
    split=leave_last_two_out."""
    from pipeline.local_runner import run

    config = dataclasses.replace(
        PipelineConfig(), data_dir=str(movielens_slice), output_dir=str(tmp_path_factory.mktemp("sequence_run")),
        split="leave_last_two_out", families=("nextitnet", "peterrec"),
        hparams={"nextitnet": dict(TINY), "peterrec": {"max_epochs": "2", "bottleneck": "4", "mode": "patch_serial"}}, train_steps=10,
        # Loose enough to bless what a few steps on 15 users learn (both gates are lifts
        # over a peer; tests/test_evaluation.py shows the next_like gate blocking).
        gate_thresholds={"items": -1.0, NEXT_LIKE: -1.0}, gate_max_worsening={"items": 1.0, NEXT_LIKE: 1.0},
    ).resolved()  # the description's settings (max_history) filled in, as the run reads them
    timings = run(config, progress_out=io.StringIO())
    assert all(t.status == "ok" for t in timings), timings
    return config


def _user_records(config, split):
    users = report.output_dirs(config.pipeline_root)["InteractionExampleGen"]["user_examples"]
    files = sorted(glob.glob(os.path.join(users, f"Split-{split}", "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_the_evaluator_computes_protocol_s_through_the_exported_signature(sequence_run):
    config = sequence_run
    outcome = report.family_outcome(config.pipeline_root, "nextitnet")
    assert outcome["failures"] == [] and outcome["push"]["pushed"] is True
    trainer_model = report.output_dirs(config.pipeline_root)["Trainer_nextitnet"]["model"]
    loaded = tf.saved_model.load(os.path.join(trainer_model, "Format-Serving"))
    for split in ("eval", "test"):
        tfma_values = outcome["metrics"][split][""]
        assert set(next_item_metric_names()) <= set(tfma_values)
        records = _user_records(config, split)
        assert tfma_values["users"] == len(records)
        # The same numbers from score_queries and the definitions, example by example.
        out = loaded.signatures[protocol.SCORE_QUERIES](examples=tf.constant(records))
        per_user = []
        for scores, history, targets, user in zip(out[protocol.CATALOGUE_SCORES].numpy(),
                                                  out[protocol.HISTORY_ROWS].numpy(),
                                                  out[protocol.TARGET_ROWS].numpy(), out[protocol.QUERY_USER].numpy()):
            (target,) = targets[targets != protocol.TARGET_PAD]
            per_user.append(d.protocol_s_user_metrics(scores, target, history, np.isfinite(scores), user))
        expected = d.mean_user_metrics(per_user)
        for name in d.next_item_metric_names() + d.next_item_metric_names(d.SAMPLED_PREFIX):
            assert tfma_values[name] == pytest.approx(expected[name], abs=1e-9), (split, name)
        assert tfma_values["ndcg@10_lift"] == pytest.approx(tfma_values["ndcg@10"] - tfma_values["popularity_ndcg@10"])
    # The gate read the eval split's full NDCG@10 lift; the run summary shows the sampled metrics too.
    lines = "\n".join(report.format_outcome(outcome))
    assert "sampled_hit_rate@10" in lines and "ndcg@10_lift" in lines


def _serving(config, family):
    return os.path.join(report.output_dirs(config.pipeline_root)[f"Trainer_{family}"]["model"], "Format-Serving")


def test_peterrec_fine_tunes_the_pipelines_nextitnet_and_serves_only_its_classifier(sequence_run):
    from pipeline.pipeline import create_pipeline

    config = sequence_run
    # Lineage: the fine-tuning Trainer's base_model is nextitnet's Trainer's model, and it
    # is the model the run_fn loaded.
    components = {c.id: c for c in create_pipeline(config).components}
    assert components["Trainer_peterrec"].inputs["base_model"].producer_component_id == "Trainer_nextitnet"
    runs = report.output_dirs(config.pipeline_root)["Trainer_peterrec"]["model_run"]
    with open(os.path.join(runs, protocol.TRAINING_SUMMARY)) as f:
        summary = json.load(f)
    assert os.path.realpath(summary["base_model"]) == os.path.realpath(_serving(config, "nextitnet"))
    assert summary["examples"]["eval"]["examples"] == len(_user_records(config, "eval"))
    assert summary["trained_parameters"] > 0 and summary["hparams"]["mode"] == "patch_serial"
    # The served model: scores only, the pretrained weights unchanged under the patches,
    # and not the network's next-item output (its item bias).
    tuned = tf.saved_model.load(_serving(config, "peterrec"))
    assert set(tuned.signatures) == {protocol.SERVING_DEFAULT, protocol.TRANSFORM_FEATURES}

    def checkpoint(family):
        path = os.path.join(_serving(config, family), "variables", "variables")
        return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
                if name.endswith("VARIABLE_VALUE")}

    base = old_weights(_serving(config, "nextitnet"))  # (name, value) in the network's order
    tuned_values = list(checkpoint("peterrec").values())
    items = base[0][1]  # the item embeddings
    bias = next(value for _, value in base if value.shape == (items.shape[0], 1))
    assert not [v for v in tuned_values if v.shape == bias.shape]
    convolution = next(value for name, value in base if name.endswith("conv_0/kernel"))
    for name, value in (("the item embeddings", items), ("a convolution", convolution)):
        assert any(v.shape == value.shape and np.array_equal(v, value) for v in tuned_values), name
    # The Evaluator's test AUC is the AUC of serving_default on the test user view, the
    # label being whether the test item is liked.
    outcome = report.family_outcome(config.pipeline_root, "peterrec")
    assert outcome["failures"] == [] and outcome["push"]["pushed"] is True
    records = _user_records(config, "test")
    scores = tuned.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(records))[NEXT_LIKE].numpy()
    labels = [tf.train.Example.FromString(r).features.feature[F.TARGET_BEHAVIORS].bytes_list.value[0] == b"liked"
              for r in records]
    assert 0 < sum(labels) < len(labels)
    assert outcome["metrics"]["test"][""]["auc"] == pytest.approx(d.binary_auc(scores, np.array(labels)), abs=1e-3)
    # Next to it, the history peer (the share of liked items among the input's most recent
    # max_history, what the model reads at most) on the same users, and the lift the gate reads.
    peer = [d.history_share(list(tf.train.Example.FromString(r).features.feature[F.HISTORY_BEHAVIORS]
                                 .bytes_list.value)[-config.max_history:], "liked") for r in records]
    test = outcome["metrics"]["test"][""]
    assert test["peer_auc"] == pytest.approx(d.binary_auc(np.array(peer), np.array(labels)), abs=1e-9)
    assert test[T.AUC_LIFT] == pytest.approx(test["auc"] - test["peer_auc"], abs=1e-9)
    assert T.AUC_LIFT in "\n".join(report.format_outcome(outcome))
    # Sliced as user-view examples are: by the user's activity within each split.
    import tensorflow_model_analysis as tfma

    evaluation = report.output_dirs(config.pipeline_root)["Evaluator_peterrec"]["evaluation"]
    slices = {tuple(k.column for k in m.slice_key.single_slice_keys) for m in tfma.load_metrics(evaluation)}
    assert (F.SPLIT, F.USER_ACTIVITY_LEVEL) in slices
    from pipeline import model_card

    assert "It scores a user's history" in model_card.render(config, "peterrec", outcome)


def test_the_grpc_client_scores_histories_with_the_pushed_peterrec(sequence_run, capsys):
    from serving import client as serving_client
    from serving import local_server

    config = sequence_run
    tuned = tf.saved_model.load(_serving(config, "peterrec"))
    records = _user_records(config, "test")[:3]
    histories, behaviors = [], []
    for r in records:
        feature = tf.train.Example.FromString(r).features.feature
        histories.append([v.decode() for v in feature[F.HISTORY_ITEM_IDS].bytes_list.value])
        behaviors.append([v.decode() for v in feature[F.HISTORY_BEHAVIORS].bytes_list.value])
    want = tuned.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(records))[NEXT_LIKE].numpy()
    handle = local_server.serve(config.serving_model_dir, port=0, host="127.0.0.1")
    try:
        with serving_client.ServingClient(handle.address, timeout_s=20.0) as c:
            got = c.score_histories("peterrec", histories, behaviors, output_filter=[NEXT_LIKE])
            np.testing.assert_allclose(got[NEXT_LIKE], want, rtol=1e-5)
            with pytest.raises(ValueError, match="must align"):
                c.score_histories("peterrec", [histories[0]], [behaviors[0][:-1]])
        assert serving_client.main(["score-history", "--target", handle.address, "--model", "peterrec",
                                    "--items", ",".join(histories[0]), "--behaviors", ",".join(behaviors[0])]) == 0
        assert capsys.readouterr().out.strip() == f"peterrec {NEXT_LIKE}: {want[0]:.4f}"
    finally:
        handle.stop(grace=0)


def test_sequential_families_need_the_leave_last_two_out_split():
    from pipeline.pipeline import create_pipeline

    with pytest.raises(ValueError, match="sasrec.*protocol S.*--split leave_last_two_out"):
        create_pipeline(dataclasses.replace(PipelineConfig(), families=("sasrec",), split="hash"))
    # A family fine-tuning a sequential one is sequential too.
    with pytest.raises(ValueError, match="peterrec.*--split leave_last_two_out"):
        create_pipeline(dataclasses.replace(PipelineConfig(), families=("peterrec",), split="hash"))


def test_peterrec_alone_trains_its_base_without_evaluating_or_pushing_it():
    from models.registry import get_family
    from pipeline.pipeline import create_pipeline

    ids = {c.id for c in create_pipeline(dataclasses.replace(
        PipelineConfig(), families=("peterrec",), split="leave_last_two_out")).components}
    assert {"Trainer_nextitnet", "Trainer_peterrec", "Evaluator_peterrec", "Pusher_peterrec"} <= ids
    assert not {"Evaluator_nextitnet", "Pusher_nextitnet"} & ids
    with pytest.raises(ValueError, match="dataset 'taobao' defines no next-behavior task"):
        get_family("peterrec").task_specs(TAOBAO)


# The pipeline's nextitnet, and bert4rec, whose query differs (an appended mask); sasrec
# shares nextitnet's query and export path (its encoder is tested in test_sequential_models).
@pytest.fixture(scope="module", params=("nextitnet", "bert4rec"))
def exported(request, sequence_run, tmp_path_factory):
    from training.trainer import TrainConfig, train_and_export

    found = report.output_dirs(sequence_run.pipeline_root)
    graph = found["Transform"]["transform_graph"]
    if request.param == "nextitnet":
        out = os.path.join(found["Trainer_nextitnet"]["model"], "Format-Serving")
    else:
        users = found["InteractionExampleGen"]["user_examples"]
        out = str(tmp_path_factory.mktemp(request.param))
        files = {s: [os.path.join(users, f"Split-{s}", "*")] for s in ("train", "eval")}
        summary = train_and_export(TrainConfig(family=request.param, description=D.dataset_spec("movielens").to_dict(),
                                               hparams=dict(TINY), top_k=5), files["train"],
                                   files["eval"], graph, out, train_steps=5)
        # Protocol S's NDCG@10 is watched whatever the K of recommend.
        assert summary["monitor"] == "val_ndcg@10" and "val_sampled_hit_rate@10" in summary["history"]
    return request.param, tf.saved_model.load(out), tft.TFTransformOutput(graph)


def _recommend(loaded, histories, behaviors=None):
    ids, kinds = protocol.history_arrays(histories, behaviors)
    return loaded.signatures[protocol.RECOMMEND](history_item_ids=tf.constant(ids), history_behaviors=tf.constant(kinds))


def test_recommend_keeps_todays_contract(exported):
    family, loaded, tft_output = exported
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(F.ITEM_VOCAB)]
    rng = np.random.default_rng(0)
    histories = [list(rng.choice(vocab, size=n, replace=False)) for n in (1, 3, 64, 100)]
    out = _recommend(loaded, histories, [["liked"] * len(h) for h in histories])
    k = out[protocol.RECOMMEND_ITEM_IDS].shape[1]
    assert out[protocol.RECOMMEND_ITEM_IDS].shape == (4, k) and k in (5, 10)
    for history, recommended, scores in zip(histories, out[protocol.RECOMMEND_ITEM_IDS].numpy(),
                                            out[protocol.RECOMMEND_SCORES].numpy()):
        recommended = [r.decode() for r in recommended]
        assert not set(recommended) & set(history)  # every history item is excluded, read or not
        assert all(r in vocab for r in recommended)
        assert list(scores) == sorted(scores, reverse=True) and np.isfinite(scores).all()
    # The query reads the most recent max_history (64) items: older ones only stay excluded.
    long = histories[3]
    older_changed = [["disliked"] * 36 + ["liked"] * 64]
    again = _recommend(loaded, [long], older_changed)
    np.testing.assert_array_equal(again[protocol.RECOMMEND_ITEM_IDS].numpy()[0],
                                  out[protocol.RECOMMEND_ITEM_IDS].numpy()[3])
    recent_changed = [["liked"] * 36 + ["disliked"] * 64]
    assert not np.allclose(_recommend(loaded, [long], recent_changed)[protocol.RECOMMEND_SCORES].numpy()[0],
                           out[protocol.RECOMMEND_SCORES].numpy()[3])
    # Unknown items next to known ones are ignored; an empty history is allowed; bad input is named.
    ok = _recommend(loaded, [[vocab[0], "no-such-item"], []], [["", "liked"], []])
    assert np.isfinite(ok[protocol.RECOMMEND_SCORES].numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="history_behaviors holds a value"):
        _recommend(loaded, [[vocab[0]]], [["hated"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="none of them is in the catalogue"):
        _recommend(loaded, [["no-such-item", "nor-this"]])


def test_score_queries_ranks_as_recommend_does(exported, sequence_run):
    family, loaded, tft_output = exported
    vocab = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    records = _user_records(sequence_run, "test")[:4]
    out = loaded.signatures[protocol.SCORE_QUERIES](examples=tf.constant(records))
    for record, scores, history in zip(records, out[protocol.CATALOGUE_SCORES].numpy(),
                                       out[protocol.HISTORY_ROWS].numpy()):
        feature = tf.train.Example.FromString(record).features.feature
        ids = [v.decode() for v in feature[F.HISTORY_ITEM_IDS].bytes_list.value]
        kinds = [v.decode() for v in feature[F.HISTORY_BEHAVIORS].bytes_list.value]
        served = _recommend(loaded, [ids], [kinds])
        top = d.top_k_excluding(scores, history, served[protocol.RECOMMEND_ITEM_IDS].shape[1])
        assert [vocab[r - 1] for r in top] == list(served[protocol.RECOMMEND_ITEM_IDS].numpy()[0])
        np.testing.assert_allclose(scores[top], served[protocol.RECOMMEND_SCORES].numpy()[0], rtol=1e-5)

"""TAKD on small synthetic data: Multi-AUC, the augmented BPR pairs, calibration, error
correction and the student's distillation loss."""

import collections

import numpy as np
import pytest

from contract import datasets as D
from contract import features as F
from contract import tasks as T
from evaluation import definitions as d
from models.context import synthetic_context as _synthetic_context

LIKED, LOVED, RATING, WATCHED = "liked", "loved", "rating", "watched"  # the shipped descriptions' tasks
MOVIELENS = D.dataset_spec("movielens")


def synthetic_context(tasks=("rating",), **kwargs):
    """A context of the shipped MovieLens description with random item features."""
    return _synthetic_context("movielens", tasks, **kwargs)


# -- Multi-AUC ------------------------------------------------------------------------
def test_multi_auc_equals_the_hand_computed_value():
    scores = [0.9, 0.4, 0.5, 0.1, 0.6]
    classes = [3, 3, 1, 0, 0]
    # AUC(1>0) = 1/2, p = 3/5; AUC(3>0) = 3/4, p = 4/5; AUC(3>1) = 1/2, p = 3/5 (class 2 is empty)
    expected = (0.6 * 0.5 + 0.8 * 0.75 + 0.6 * 0.5) / (0.6 + 0.8 + 0.6)
    assert d.multi_auc(scores, classes) == pytest.approx(expected)
    assert d.multi_auc([4, 3, 2, 1], [3, 2, 1, 0]) == 1.0
    assert d.multi_auc([1, 2, 3, 4], [3, 2, 1, 0]) == 0.0
    assert np.isnan(d.multi_auc([1.0, 2.0], [2, 2]))
    with pytest.raises(ValueError, match="classes must be in"):
        d.multi_auc([1.0], [4])


def test_pair_classes_order_the_label_pairs_and_drop_rows_without_a_condition():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 0, 1, 1]
    classes, keep = d.pair_classes(a, b)
    assert classes.tolist() == [3, 2, 1, 0, 3, 1] and keep.all()
    # liked (A) is conditioned on watched (B): an unwatched row is --, never dropped
    classes, keep = d.pair_classes([0, 1, 0], [0, 1, 1], weights_a=[0, 1, 1])
    assert classes.tolist() == [0, 3, 1] and keep.all()
    # loved / liked share the condition watched: unwatched rows are left out
    _, keep = d.pair_classes([0, 1], [0, 1], weights_a=[0, 1], weights_b=[0, 1])
    assert keep.tolist() == [False, True]


def test_tfma_multi_auc_combiner_equals_the_definition():
    from evaluation import tfma_metrics as m

    Element = collections.namedtuple("Element", "prediction label example_weight")
    rng = np.random.default_rng(0)
    n = 60
    watched = (rng.random(n) < 0.7).astype(float)
    liked = ((rng.random(n) < 0.5) & (watched > 0)).astype(float)
    p_liked, p_watched = rng.random(n), rng.random(n)
    computation = m.MultiAUC(pair=[LIKED, WATCHED]).computations(output_names=[LIKED, WATCHED])[0]
    combiner = computation.combiner
    parts = []
    for rows in (slice(0, 25), slice(25, n)):  # two bundles, merged
        acc = combiner.create_accumulator()
        for i in range(n)[rows]:
            acc = combiner.add_input(acc, Element(
                prediction={LIKED: np.array([p_liked[i]]), WATCHED: np.array([p_watched[i]])},
                label={LIKED: np.array([liked[i]]), WATCHED: np.array([watched[i]])},
                example_weight={LIKED: np.array([watched[i]])}))
        parts.append(acc)
    out = combiner.extract_output(combiner.compact(combiner.merge_accumulators(parts)))
    classes, keep = d.pair_classes(liked, watched, watched, None)
    values = {k.name: v for k, v in out.items()}
    assert values[d.multi_auc_name(LIKED)] == pytest.approx(d.multi_auc(p_liked[keep], classes[keep]))
    assert values[d.multi_auc_name(WATCHED)] == pytest.approx(d.multi_auc(p_watched[keep], classes[keep]))


def test_eval_config_gates_both_multi_aucs_of_the_pair():
    from evaluation.eval_config import eval_config

    tasks = [MOVIELENS.task(LOVED), MOVIELENS.task(LIKED)]
    config = eval_config(tasks, pair=(LOVED, LIKED), pair_gate=T.Gate("", True, 0.7))
    spec = [s for s in config.metrics_specs if s.metrics[0].class_name == "MultiAUC"][0]
    assert set(spec.per_slice_thresholds) == {d.multi_auc_name(LOVED), d.multi_auc_name(LIKED)}
    bound = spec.per_slice_thresholds[d.multi_auc_name(LOVED)].thresholds[0].threshold
    assert bound.value_threshold.lower_bound.value == 0.7
    with pytest.raises(ValueError, match="Multi-AUC pair"):
        eval_config(tasks, pair=(LOVED, RATING))


# -- the teacher's ranking losses ---------------------------------------------------------
def test_label_pairs_and_bpr_rank_each_class_against_the_right_ones():
    import tensorflow as tf

    from models import blocks
    from models.blocks.distill import FINE_PAIRS, NN, NP, PN, PP

    a = tf.constant([1, 1, 0, 0, 1, 0])
    b = tf.constant([1, 0, 1, 0, 1, 0])
    masks = blocks.label_pair_masks(a, b, valid=tf.constant([1, 1, 1, 1, 1, 0]))
    assert {k: np.flatnonzero(v.numpy()).tolist() for k, v in masks.items()} == {
        PP: [0, 4], PN: [1], NP: [2], NN: [3]}  # row 5 is not valid
    assert FINE_PAIRS[0] == ((PP, PN), (NP, NN)) and FINE_PAIRS[1] == ((PP, NP), (PN, NN))
    scores = tf.constant([2.0, 0.5, 1.0, -1.0, 0.0, 5.0])
    # bpr = mean over (better, worse) pairs of softplus(s_worse - s_better)
    loss = blocks.bpr(scores, masks[PP], masks[PN])
    assert float(loss) == pytest.approx(np.mean([np.log1p(np.exp(0.5 - 2.0)), np.log1p(np.exp(0.5 - 0.0))]), rel=1e-5)
    assert float(blocks.bpr(scores, masks[PN], tf.zeros(6, tf.bool))) == 0.0

    layer = blocks.AugmentedBPR(fine_weights=(1.0, 2.0, 3.0, 4.0), coarse_weights=(1.0, 1.0))
    ones = tf.ones(6)
    s_a, s_b = scores, -scores
    terms = layer.terms((s_a, s_b), (a, b), (ones, ones), masks[PP] | masks[PN] | masks[NP] | masks[NN])
    assert float(terms["0:-+>--"]) == pytest.approx(float(blocks.bpr(s_a, masks[NP], masks[NN])))
    assert float(terms["1:+->--"]) == pytest.approx(float(blocks.bpr(s_b, masks[PN], masks[NN])))
    positives_a = tf.cast(a, tf.bool)
    assert float(terms["coarse_0"]) == pytest.approx(float(blocks.bpr(s_a, positives_a, ~positives_a)))
    total = layer((s_a, s_b), (a, b), (ones, ones), masks[PP] | masks[PN] | masks[NP] | masks[NN])
    expected = (terms["coarse_0"] + terms["coarse_1"] + 1 * terms["0:++>+-"] + 2 * terms["0:-+>--"]
                + 3 * terms["1:++>-+"] + 4 * terms["1:+->--"])
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    without = blocks.AugmentedBPR(aux=False)((s_a, s_b), (a, b), (ones, ones), masks[PP])
    assert float(without) == pytest.approx(float(terms["coarse_0"] + terms["coarse_1"]), rel=1e-5)


def _pair_batches(ctx, n=1024, batch=256, seed=3):
    """loved / liked / watched from a latent affinity; unwatched rows are sampled negatives."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, ctx.num_users - 1, size=n)
    items = rng.integers(1, ctx.num_items - 1, size=n)
    u_f, i_f = rng.normal(size=(ctx.num_users, 2)), rng.normal(size=(ctx.num_items, 2))
    rating = 3.5 + (u_f[users] * i_f[items]).sum(1) + 0.5 * rng.normal(size=n)
    watched = (rng.random(n) < 0.8).astype(np.int64)
    data = {F.USER_IDX: users, F.ITEM_IDX: items, WATCHED: watched,
            LIKED: ((rating >= 4) & (watched == 1)).astype(np.int64),
            LOVED: ((rating >= 4.6) & (watched == 1)).astype(np.int64),
            F.HISTORY_ITEM_IDX: rng.integers(1, ctx.num_items - 1, size=(n, 6)),
            F.HISTORY_BEHAVIOR_IDX: np.full((n, 6), 3), F.HISTORY_BUCKET: np.full(n, 6),
            **{k: v[items] for k, v in ctx.item_table.items()}}
    return [{k: v[s:s + batch] for k, v in data.items()} for s in range(0, n, batch)], data


# The teacher's networks: PLE, and DTRN with a small interest encoder; (settings, epochs).
# BPR scores shift freely, so the Platt heads need steps to follow them: after 8 epochs
# (32 steps) DTRN's liked output averaged 0.55 on a positive rate of 0.37, after 16 0.373.
TEACHER_SETTINGS = {"takd_teacher": ({}, 8),
                    "takd_teacher_dtrn": ({"seq_len": 3, "seq_dim": 8, "cond_dim": 4, "hyper_hidden": 8,
                                           "refine_hidden": 8}, 16)}


@pytest.fixture(scope="module", params=sorted(TEACHER_SETTINGS))
def trained_teacher(request):
    """(teacher, context, batches, data): a TAKD teacher fitted on synthetic loved / liked."""
    from training.trainer import fit_on_arrays

    ctx = synthetic_context(tasks=(LOVED, LIKED), num_users=30, num_items=25)
    batches, data = _pair_batches(ctx)
    settings = {"dim": 4, "bottom": "8", "tower": "4", "learning_rate": 0.02, "calibration_learning_rate": 0.2,
                **TEACHER_SETTINGS[request.param][0]}
    return fit_on_arrays(request.param, ctx, settings, batches, epochs=TEACHER_SETTINGS[request.param][1]), ctx, \
        batches, data


def test_calibration_step_moves_only_the_platt_heads(trained_teacher):
    import tensorflow as tf

    teacher, _, batches, _ = trained_teacher
    heads = teacher.calibration_variables()
    assert len(heads) == 4  # P and Q of each task
    head_ids = {v.ref() for v in heads}
    network = [v for v in teacher.trainable_variables if v.ref() not in head_ids]
    before = [v.numpy().copy() for v in network]
    heads_before = [v.numpy().copy() for v in heads]
    batch = {k: tf.constant(v) for k, v in batches[0].items()}
    teacher.calibration_step(batch)
    for old, v in zip(before, network):
        np.testing.assert_array_equal(old, v.numpy(), err_msg=v.name)
    assert any(not np.allclose(old, v.numpy()) for old, v in zip(heads_before, heads))
    # and the ranking loss does not reach the heads, nor the calibration loss the network
    with tf.GradientTape(persistent=True) as tape:
        main, calibration = teacher.loss_terms(batch, training=True)
    assert all(g is None for g in tape.gradient(main, heads))
    assert all(g is None for g in tape.gradient(calibration, network))
    for old, v in zip(heads_before, heads):  # the module's teacher as it was
        v.assign(old)


def test_teacher_ranks_both_tasks_and_serves_calibrated_probabilities(trained_teacher):
    import tensorflow as tf

    teacher, _, _, data = trained_teacher
    features = {k: tf.constant(v) for k, v in data.items()}
    out = teacher(features)
    raw = teacher.scores(features)[0]
    watched = data[WATCHED] == 1
    for task in (LOVED, LIKED):
        p = out[task].numpy()
        assert ((p > 0) & (p < 1)).all()
        assert d.binary_auc(p[watched], data[task][watched]) > 0.7
        # Platt scaling keeps the ranking of the raw scores (P > 0)
        assert d.binary_auc(raw[task].numpy()[watched], data[task][watched]) == pytest.approx(
            d.binary_auc(p[watched], data[task][watched]))
        # calibrated: the mean prediction is near the positive rate (raw BPR scores are not)
        assert abs(p[watched].mean() - data[task][watched].mean()) < 0.1


# -- the student ------------------------------------------------------------------------
def test_error_correction_moves_only_labels_beyond_the_margin():
    import tensorflow as tf

    from models import blocks

    soft = tf.constant([0.9, 0.3, 0.5, 0.1, 0.7, 0.35])
    hard = tf.constant([1, 1, 1, 0, 0, 0])
    corrected = blocks.correct_soft_labels(soft, hard, margin=0.6).numpy()
    np.testing.assert_allclose(corrected, [0.9, 0.4, 0.5, 0.1, 0.6, 0.35], atol=1e-6)


def test_student_loss_equals_the_hand_computed_value():
    import tensorflow as tf

    from models import blocks, registry
    from models.families.takd import soft_label

    alpha, tau, margin = 0.3, 2.0, 0.6
    labels, soft, logits = [1.0, 0.0], [0.2, 0.3], [0.5, -1.0]
    corrected = [0.4, 0.3]  # 0.2 is 0.8 from its label 1: moved to 1 - margin

    def ce(y, z):
        p = 1 / (1 + np.exp(-z))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    def target(p):
        return 1 / (1 + np.exp(-np.log(p / (1 - p)) / tau))

    expected = np.mean([(1 - alpha) * ce(y, z) + alpha * ce(target(s), z / tau)
                        for y, s, z in zip(labels, corrected, logits)])
    value = blocks.distillation_loss(tf.constant(labels), blocks.correct_soft_labels(
        tf.constant(soft), tf.constant(labels), margin), tf.constant(logits), alpha, tau)
    assert float(value) == pytest.approx(expected, rel=1e-5)

    # the family's loss on a tiny batch: the same per task, plus its penalty
    ctx = synthetic_context(tasks=(LOVED, LIKED), num_users=10, num_items=10)
    family = registry.get_family("takd_student")
    student = family.build(ctx, family.hparams().override(
        {"alpha": alpha, "tau": tau, "margin": margin, "l2": 0.0, "dim": 2}))
    batch = {F.USER_IDX: tf.constant([1, 2]), F.ITEM_IDX: tf.constant([3, 4]), WATCHED: tf.constant([1, 1]),
             LOVED: tf.constant([1, 0]), LIKED: tf.constant([1, 0]),
             F.HISTORY_ITEM_IDX: tf.constant([[1, 2], [3, 0]]), F.HISTORY_BEHAVIOR_IDX: tf.constant([[3, 3], [3, 0]]),
             soft_label(LOVED): tf.constant(soft), soft_label(LIKED): tf.constant(soft)}
    z = student.forward(batch)[0]
    per_task = [np.mean([(1 - alpha) * ce(y, zi) + alpha * ce(target(s), zi / tau)
                         for y, s, zi in zip(labels, corrected, z[t].numpy())]) for t in (LOVED, LIKED)]
    assert float(student.compute_loss(batch)) == pytest.approx(sum(per_task), rel=1e-5)
    # without soft labels (eval batches, or trained alone): the tasks' cross-entropy
    hard_only = {k: v for k, v in batch.items() if not k.startswith("soft_")}
    expected_hard = sum(np.mean([ce(y, zi) for y, zi in zip(labels, z[t].numpy())]) for t in (LOVED, LIKED))
    assert float(student.compute_loss(hard_only)) == pytest.approx(expected_hard, rel=1e-5)


def test_student_learns_from_the_teachers_soft_labels(trained_teacher):
    import tensorflow as tf

    from training.distillation import teacher_soft_labels
    from training.trainer import fit_on_arrays

    teacher, ctx, batches, data = trained_teacher
    soft = teacher_soft_labels(teacher)(data)
    assert set(soft) == {"soft_loved", "soft_liked"}
    distilled = [{**b, **{k: v[i * 256:(i + 1) * 256] for k, v in soft.items()}} for i, b in enumerate(batches)]
    student = fit_on_arrays("takd_student", ctx, {"dim": 4, "l2": 0.0, "learning_rate": 0.03}, distilled, epochs=6)
    out = student({k: tf.constant(v) for k, v in data.items()})
    watched = data[WATCHED] == 1
    assert d.binary_auc(out[LIKED].numpy()[watched], data[LIKED][watched]) > 0.7
    with pytest.raises(ValueError, match="pair of binary tasks"):
        from models import registry
        family = registry.get_family("takd_student")
        family.build(synthetic_context(tasks=(LIKED, RATING)), family.hparams())


# -- the pipeline: teacher Trainer -> student Trainer, only the student pushed ------------------
def test_pipeline_trains_the_teacher_for_the_student_and_pushes_only_the_student(tmp_path):
    import dataclasses
    import json

    from pipeline.configs import PipelineConfig
    from pipeline.pipeline import create_pipeline

    from models.registry import get_family

    teacher = get_family("takd_student").teacher
    assert teacher == "takd_teacher_dtrn"  # the strongest multi-task family's network
    config = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("mf", "takd_student"))
    components = {c.id: c for c in create_pipeline(config).components}
    assert f"Trainer_{teacher}" in components
    assert not {f"Evaluator_{teacher}", f"Pusher_{teacher}"} & set(components)
    student = components["Trainer_takd_student"]
    assert student.inputs["base_model"].producer_component_id == f"Trainer_{teacher}"
    assert json.loads(student.exec_properties["custom_config"])["tasks"] == [LOVED, LIKED]
    assert "base_model" not in components["Trainer_mf"].inputs or \
        components["Trainer_mf"].inputs["base_model"] is None
    evaluation = components["Evaluator_takd_student"].exec_properties["eval_config"]
    assert "MultiAUC" in evaluation and d.multi_auc_name(LOVED) in evaluation


def test_exported_teacher_gives_the_student_trainer_its_in_process_soft_labels(trained_run, tmp_path):
    import os

    import tensorflow as tf
    import tensorflow_transform as tft

    from contract import protocol
    from pipeline import report
    from training.distillation import saved_teacher_soft_labels, teacher_soft_labels
    from training.inputs import load_examples
    from training.trainer import TrainConfig, train, train_and_export

    found = report.output_dirs(trained_run[0].pipeline_root)
    graph = found["Transform"]["transform_graph"]
    files = {s: [os.path.join(found["Transform"]["transformed_examples"], f"Split-{s}", "*")] for s in ("train", "eval")}
    hparams = {"max_epochs": 1, "batch_size": 64, "dim": 4, "bottom": "8", **TEACHER_SETTINGS["takd_teacher_dtrn"][0]}
    config = TrainConfig(family="takd_teacher_dtrn", description=MOVIELENS.to_dict(), hparams=hparams)
    teacher, _, _ = train(config, files["train"], files["eval"], graph, train_steps=5)
    out = str(tmp_path / "teacher")
    from export.signatures import export_model
    export_model(teacher, tft.TFTransformOutput(graph), np.ones(teacher.context.num_items, bool), out)
    assert protocol.SOFT_LABELS in tf.saved_model.load(out).signatures
    data = load_examples(files["train"], tft.TFTransformOutput(graph))
    served = saved_teacher_soft_labels(out, files["train"])(data)
    in_process = teacher_soft_labels(teacher)(data)
    assert set(served) == {"soft_loved", "soft_liked"}
    for name in served:
        np.testing.assert_allclose(served[name], in_process[name], atol=1e-5)
    with pytest.raises(ValueError, match="needs the teacher's model as base_model"):
        train_and_export(TrainConfig(family="takd_student", description=MOVIELENS.to_dict()), files["train"], files["eval"], graph,
                         str(tmp_path / "student"))


def test_serving_times_a_model_on_the_features_it_reads_against_the_floor_of_a_compiled_call():
    import tensorflow as tf

    from bench import takd

    seen = {"history": tf.Variable([0, 0])}  # the shape a call received (it is traced with unknown shapes)

    def model(x, training=False):
        seen["keys"] = sorted(x)
        seen["history"].assign(tf.shape(x[F.HISTORY_ITEM_IDX]))
        return {"score": tf.reduce_sum(tf.cast(x[F.HISTORY_ITEM_IDX], tf.float32), -1) + tf.cast(x[F.ITEM_IDX],
                                                                                                   tf.float32)}

    data = {F.ITEM_IDX: np.arange(10), F.HISTORY_BUCKET: np.full(10, 4), LIKED: np.ones(10, np.int64),
            F.HISTORY_ITEM_IDX: np.ones((10, 16), np.int64), F.HISTORY_BEHAVIOR_IDX: np.ones((10, 16), np.int64)}
    assert takd.read_features(model, {k: tf.constant(v[:2]) for k, v in data.items()}) == [F.HISTORY_ITEM_IDX,
                                                                                         F.ITEM_IDX]
    timed = takd.serve_ms({"model": model}, data, batch=3, repeats=5, floor_of="model")
    assert set(timed) == {"model", takd.FLOOR} and all(v > 0 for v in timed.values())
    # The call takes only what the model reads (no label, no unread feature), and the
    # histories are cut to the batch's bucket, as the serving signature pads them.
    assert seen["keys"] == [F.HISTORY_ITEM_IDX, F.ITEM_IDX]
    assert seen["history"].numpy().tolist() == [3, 4]
    assert set(takd.serve_ms({"model": model}, data, batch=3, repeats=2)) == {"model"}
    # the feature lists the caller found are what each call takes
    seen["keys"] = None
    takd.serve_ms({"model": model}, data, batch=3, repeats=2, reads={"model": [F.HISTORY_ITEM_IDX, F.ITEM_IDX]})
    assert seen["keys"] == [F.HISTORY_ITEM_IDX, F.ITEM_IDX]


def _serving_rows(student, teacher, dtrn, floor=(0.25, 0.26, 0.25, 0.24, 0.25), batch=1):
    from bench import takd

    timed = {(takd.STUDENT, batch): list(student), ("takd_teacher", batch): list(teacher),
             ("takd_teacher_dtrn", batch): list(dtrn), (takd.FLOOR, batch): list(floor)}
    reads = {takd.STUDENT: ["a"], "takd_teacher": ["a", "b"], "takd_teacher_dtrn": ["a", "b"], takd.FLOOR: ["a"]}
    return takd.serving_rows("movielens", timed, {takd.STUDENT: 10, "takd_teacher": 20, "takd_teacher_dtrn": 30},
                             reads)


def test_serving_rows_keep_every_rounds_time_and_the_speed_up_has_a_paired_interval_over_rounds():
    from scipy import stats

    from bench import takd

    student = [0.38, 0.39, 0.37, 0.40, 0.38]
    teacher = [0.62, 0.64, 0.60, 0.65, 0.63]
    # Rounds under a changing load: each round's dtrn is the student's + about 0.02 ms, a gap
    # far inside the spread over rounds.
    loaded = [0.30, 0.50, 0.40, 0.60, 0.35]
    rows = _serving_rows(loaded, teacher, [v + g for v, g in zip(loaded, (0.02, 0.021, 0.019, 0.02, 0.02))])
    by_model = {r["model"]: r for r in rows}
    assert by_model["takd_teacher"]["rounds_ms"] == teacher and by_model["takd_teacher"]["rounds"] == 5
    assert by_model["takd_teacher"]["ms"] == pytest.approx(np.mean(teacher))
    assert by_model["takd_teacher"]["std"] == pytest.approx(np.std(teacher, ddof=1))
    assert by_model["takd_teacher"]["above_floor_ms"] == pytest.approx(np.mean(teacher) - 0.25)
    assert by_model[takd.STUDENT]["params"] == 10 and by_model[takd.FLOOR]["params"] == 0

    clear = takd.speedup(by_model["takd_teacher"], {**by_model[takd.STUDENT], "rounds_ms": student})
    ci = stats.ttest_rel(teacher, student).confidence_interval(0.95)
    assert clear["ms"].low == pytest.approx(ci.low) and clear["ms"].high == pytest.approx(ci.high)
    ratio = stats.ttest_rel(np.log(teacher), np.log(student)).confidence_interval(0.95)
    assert clear["log_ratio"].low == pytest.approx(ratio.low) and clear["log_ratio"].high == pytest.approx(ratio.high)
    assert clear["ms"].verdict() == "takd_student beats takd_teacher"

    lines = takd.speedup_lines("movielens", rows)
    assert len(lines) == 2 and lines[0].startswith("- movielens batch 1, takd_teacher:")
    assert "paired 95% t interval" in lines[0] and "over the 5 rounds" in lines[0]
    # The dtrn gap is there in every round, so its interval excludes 0, but it is within the
    # spread over rounds: by the project's rule no difference is shown.
    paired = takd.speedup(by_model["takd_teacher_dtrn"], by_model[takd.STUDENT])["ms"]
    assert paired.low > 0 and paired.diff == pytest.approx(0.02)
    assert lines[1].startswith("- movielens batch 1, takd_teacher_dtrn:")
    assert ": no difference (within one round std); floor 0.250 ms" in lines[1]
    assert "teacher - student +0.020 ms, paired 95% t interval [+0.019, +0.021] ms" in lines[1]
    shown = takd.speedup_lines("movielens", _serving_rows(student, teacher, teacher))
    assert all("takd_student beats takd_teacher" in line for line in shown)
    assert f"per-round speed-up {np.exp(np.mean(np.log(teacher) - np.log(student))):.2f}x" in shown[0]


def test_serve_only_writes_every_rounds_time_and_the_paired_speed_ups(monkeypatch, tmp_path):
    import json
    import types

    from bench import multitask as mt
    from bench import takd

    calls = []

    def serve_ms(models, data, batch, repeats, floor_of="", reads=None):
        calls.append(batch)
        r = len([b for b in calls if b == batch]) - 1  # this batch's round
        slow = {takd.FLOOR: 0.25, takd.STUDENT: 0.38, "takd_teacher": 0.62, "takd_teacher_dtrn": 1.4}
        return {name: slow[name] * batch ** 0.5 + 0.01 * r for name in list(models) + [takd.FLOOR]}

    monkeypatch.setattr(mt, "load_dataset", lambda *a, **k: (None, {"test": {F.ITEM_IDX: np.arange(4)}}))
    monkeypatch.setattr(takd, "train_one", lambda family, *a, **k: (family, {}))
    monkeypatch.setattr(takd, "read_features", lambda model, sample: [F.ITEM_IDX])
    monkeypatch.setattr(takd, "count_params", lambda model: 7)
    monkeypatch.setattr(takd, "serve_ms", serve_ms)
    args = types.SimpleNamespace(work_dir=str(tmp_path), repeats=40, out=str(tmp_path), data_dir=[], negatives=[])
    takd.serving_only(args, {"movielens": (LOVED, LIKED)}, {}, "python -m bench.takd --serve_only", rounds=3)
    assert calls == [1, 100] * 3  # each round times batch 1, then batch 100
    with open(tmp_path / f"{takd.SERVING_NAME}.json") as f:
        rows = {(r["model"], r["batch"]): r for r in json.load(f)}
    assert rows[("takd_teacher", 1)]["rounds_ms"] == pytest.approx([0.62, 0.63, 0.64])
    assert rows[(takd.FLOOR, 100)]["rounds_ms"] == pytest.approx([2.5, 2.51, 2.52])
    markdown = (tmp_path / f"{takd.SERVING_NAME}.md").read_text()
    speed_ups = [line for line in markdown.splitlines() if line.startswith("- movielens batch")]
    assert len(speed_ups) == 4 and all("paired 95% t interval" in line and "over the 3 rounds" in line
                                       for line in speed_ups)


def test_a_variant_keeps_what_defines_it_and_takes_its_own_overrides_last():
    from bench import takd

    overrides = {"takd_student": {"alpha": "0.8", "dim": "64"}, "variant:student_alone": {"dim": "16"}}
    # --hparam reaches every variant, but cannot turn student_alone into a distilled student
    assert takd.variant_hparams("takd_student", "student_alone", {"alpha": "0"}, overrides) == {"alpha": "0",
                                                                                               "dim": "16"}
    assert takd.variant_hparams("takd_student", "student", {}, overrides) == {"alpha": "0.8", "dim": "64"}
    with pytest.raises(ValueError, match="student_alone.alpha"):
        takd.variant_hparams("takd_student", "student_alone", {"alpha": "0"},
                             {"variant:student_alone": {"alpha": "0.5"}})


def test_student_grid_chooses_per_variant_on_eval_and_never_reads_test(monkeypatch, tmp_path):
    import argparse

    from bench import multitask as mt
    from bench import takd
    from training import distillation

    eval_rows, test_rows = object(), object()
    trained = []

    def score(hp):  # student best at dim 64 / alpha 0.8; alone (alpha 0) best at dim 32
        if hp.get("alpha") == "0":
            return 0.80 + (0.01 if hp["dim"] == "32" else 0.0)
        return 0.80 + (0.02 if hp["dim"] == "64" else 0.0) + (0.01 if hp["alpha"] == "0.8" else 0.0)

    def train_one(family, stages, specs, seed, hparams, soft_labels=None, train_steps=None):
        trained.append((family, dict(hparams), soft_labels))
        value = 0.9 if family == "takd_teacher" else score(hparams)
        return dict(hparams), {"best_value": value, "best_epoch": 1, "train_seconds": 1.0}

    def pair_metrics(pair, specs, predictions, data):
        assert data is eval_rows, "the grid reads the eval split only"
        return {f"{t}/{m}": 0.5 for t in pair for m in ("auc", "multi_auc")}

    monkeypatch.setattr(mt, "load_dataset", lambda *a, **k: (None, {"train": None, "eval": eval_rows, "test": test_rows}))
    monkeypatch.setattr(mt, "predict_rows", lambda model, data: {})
    monkeypatch.setattr(takd, "train_one", train_one)
    monkeypatch.setattr(takd, "pair_metrics", pair_metrics)
    monkeypatch.setattr(distillation, "teacher_soft_labels", lambda teacher, calibrated: "soft")
    args = argparse.Namespace(work_dir="", negatives=["movielens=1"], data_dir=[], out=str(tmp_path),
                              teacher="takd_teacher")
    grid = {"takd_student.dim": ["32", "64"], "takd_student.alpha": ["0.5", "0.8"]}
    result = takd.tune_students(args, {"movielens": ("loved", "liked")}, {}, grid, 42, "cmd")
    per = result["datasets"]["movielens"]
    assert [f for f, _, _ in trained].count("takd_teacher") == 1
    students = [(hp, soft) for f, hp, soft in trained if f == "takd_student"]
    assert len(students) == 4 + 2  # alone fixes alpha: its grid has two distinct points
    assert all(soft == "soft" for hp, soft in students if hp["alpha"] != "0")
    assert all(soft is None for hp, soft in students if hp["alpha"] == "0")
    assert per["student"]["chosen"] == {"dim": "64", "alpha": "0.8"}
    assert per["student_alone"]["chosen"] == {"dim": "32", "alpha": "0"}
    assert per["options"] == ("--hparam takd_student.dim=64 --hparam takd_student.alpha=0.8 "
                              "--variant_hparam student_alone.dim=32")
    assert (tmp_path / "tuning" / "takd_student.md").exists()
    with pytest.raises(ValueError, match="takd_student.NAME"):
        takd.tune_students(args, {"movielens": ("loved", "liked")}, {}, {"takd_teacher.dim": ["4"]}, 42, "cmd")
    with pytest.raises(ValueError, match="no hyperparameter 'width'"):
        takd.tune_students(args, {"movielens": ("loved", "liked")}, {}, {"takd_student.width": ["4"]}, 42, "cmd")


def _takd_runs(seed, value):
    """A bench.takd runs file's content for one seed: teacher, student and student alone."""
    def entry(v, serve=False):
        metrics = {f"{split}/{t}/{m}": [v] for split in ("eval", "test") for t in ("loved", "liked")
                   for m in ("auc", "multi_auc")}
        # Teacher and student timed in alternation within a seed: batch 1 speed-ups 3.0x and 3.5x
        # (seeds 42, 43), batch 100 exactly 6x, the same with every seed.
        teacher_b1 = 3.0 + 0.5 * (seed - 42)
        timing = {"serve_ms_b1": [teacher_b1 if serve == "teacher" else 1.0],
                  "serve_ms_b100": [6.0 if serve == "teacher" else 1.0]} if serve else {}
        return {**metrics, **timing, "params": 10, "seeds": [seed], "epochs": [1], "train_seconds": [1.0]}

    return {"command": f"run {seed}", "pairs": {"movielens": ["loved", "liked"]}, "log": [f"seed {seed}"],
            "results": {"movielens": {"takd_teacher_dtrn/teacher": entry(value, "teacher"),
                                      "takd_student/student": entry(value + 0.01, "student"),
                                      "takd_student/student_alone": entry(value - 0.01)}}}


def test_merge_concatenates_seeds_and_refuses_to_overwrite_an_input(tmp_path):
    import json

    from bench import takd

    paths = []
    for seed, value in ((42, 0.80), (43, 0.82)):
        paths.append(str(tmp_path / f"takd_s{seed}_runs.json"))
        (tmp_path / f"takd_s{seed}_runs.json").write_text(json.dumps(_takd_runs(seed, value)))
    takd.merge(paths, takd.RESULTS_NAME, str(tmp_path), "merge command")
    rows = json.loads((tmp_path / "takd.json").read_text())
    student = [r for r in rows if r["variant"] == "student" and r["task"] == "loved" and r["metric"] == "multi_auc"]
    assert student[0]["seeds"] == 2 and student[0]["value"] == pytest.approx(0.82)
    assert student[0]["serve_ms_b1"] == 1.0
    markdown = (tmp_path / "takd.md").read_text()
    assert "`run 42`" in markdown and "`run 43`" in markdown
    # The speed-up goal is judged by the paired interval over seeds, not by the ratio of means:
    # 3.0x and 3.5x leave a two-seed interval reaching below 3x; 6x with every seed is met.
    assert "serving batch 1: teacher 3.250 ms, student 1.000 ms; per-seed speed-up 3.24x" in markdown
    assert "goal >= 3x: not met: not shown, the interval reaches below 3x" in markdown
    assert "serving batch 100: teacher 6.000 ms, student 1.000 ms; per-seed speed-up 6.00x" in markdown
    assert "[6.00x, 6.00x]; goal >= 3x: met" in markdown
    assert not (tmp_path / "dtrn_takd.json").exists()  # each benchmark has its own page; no joined copy
    before = (tmp_path / "takd_s42_runs.json").read_text()
    with pytest.raises(ValueError, match="would overwrite its input"):
        takd.merge(paths, "takd_s42", str(tmp_path), "merge command")
    assert (tmp_path / "takd_s42_runs.json").read_text() == before


def test_benchmark_trains_the_chosen_teacher_family_and_times_its_teacher_against_the_student(monkeypatch):
    import argparse

    from bench import multitask as mt
    from bench import takd
    from training import distillation

    test_rows = {LOVED: np.array([1, 0, 0, 1]), LIKED: np.array([1, 1, 0, 0]), WATCHED: np.ones(4, int),
                 F.ITEM_IDX: np.arange(4)}
    trained = []

    def train_one(family, stages, specs, seed, hparams, soft_labels=None, train_steps=None):
        trained.append((family, dict(hparams), soft_labels))
        return family, {"best_value": 0.8, "best_epoch": 1, "epochs_run": 2, "train_seconds": 1.0}

    def serve_ms(models, data, batch, repeats, floor_of=""):
        assert set(models) == {"teacher", "student"} and models["teacher"] == "takd_teacher_dtrn"
        return {"teacher": 4.0 * batch, "student": 1.0 * batch}

    parts = {"train": test_rows, "eval": test_rows, "test": test_rows}
    monkeypatch.setattr(mt, "load_dataset", lambda *a, **k: (None, parts))
    monkeypatch.setattr(mt, "predict_rows", lambda model, data: {})
    monkeypatch.setattr(takd, "train_one", train_one)
    monkeypatch.setattr(takd, "pair_metrics", lambda pair, specs, predictions, data: {"loved/auc": 0.8})
    monkeypatch.setattr(takd, "pair_draws", lambda pair, specs, predictions, data: {"loved/auc": (4, [0.8, 0.7])})
    monkeypatch.setattr(takd, "count_params", lambda model: 1)
    monkeypatch.setattr(takd, "serve_ms", serve_ms)
    monkeypatch.setattr(distillation, "teacher_soft_labels", lambda teacher, calibrated: (teacher, calibrated))
    args = argparse.Namespace(work_dir="", negatives=["movielens=1"], data_dir=[], repeats=4,
                              teacher="takd_teacher_dtrn")
    results, log = {}, []
    overrides = {"takd_teacher_dtrn": {"max_epochs": "6"}, "takd_student": {"dim": "64"}}
    assert list(takd.run_dataset("movielens", args, [42], ("loved", "liked"), overrides, results, log)) == [42]
    teachers = [(hp, soft) for family, hp, soft in trained if family == "takd_teacher_dtrn"]
    assert [hp for hp, _ in teachers] == [{"max_epochs": "6"}, {"max_epochs": "6", "aux": "false"},
                                          {"max_epochs": "6", "ranking": "ce"}]
    students = [soft for family, _, soft in trained if family == "takd_student"]
    assert len(students) == len(takd.STUDENTS) and ("takd_teacher_dtrn", True) in students and None in students
    per = results["movielens"]
    assert per["takd_teacher_dtrn/teacher"]["serve_ms_b100"] == [400.0]
    assert per["takd_student/student"]["serve_ms_b1"] == [1.0]
    assert log[-1] == "  seed 42 done; serve ms teacher/student b1 4.000/1.000, b100 400.000/100.000"
    assert per["takd_student/student"]["draws/loved/auc"] == [[0.8, 0.7]]
    assert per["takd_student/student"]["units/loved/auc"] == 4


def test_pair_draws_resample_the_rows_each_metric_is_computed_on():
    from bench import common
    from bench import takd
    from contract import datasets as D

    rng = np.random.default_rng(0)
    n = 300
    data = {"loved": (rng.random(n) < 0.2).astype(int), "liked": (rng.random(n) < 0.5).astype(int),
            "watched": (rng.random(n) < 0.8).astype(int), F.ITEM_IDX: np.arange(n)}
    specs = [D.dataset_spec("movielens").task(t) for t in ("loved", "liked")]
    predictions = {t: data[t] + rng.normal(size=n) for t in ("loved", "liked")}
    values = takd.pair_metrics(("loved", "liked"), specs, predictions, data)
    draws = takd.pair_draws(("loved", "liked"), specs, predictions, data)
    assert set(draws) == set(values)
    watched = int(data["watched"].sum())
    assert draws["loved/auc"][0] == watched and draws["liked/multi_auc"][0] == watched
    for name, (units, d_) in draws.items():
        assert len(d_) == common.BOOTSTRAP_RESAMPLES
        low, high = common.percentile_interval(d_)
        assert low < values[name] < high


def _synthetic_takd(seeds=3, n=400, student_scale=0.6, alone_scale=1.5, teacher_scale=0.6):
    """Runs of teacher, student and student_alone on a synthetic pair, with draws."""
    from bench import takd
    from contract import datasets as D

    rng = np.random.default_rng(1)
    data = {"loved": (rng.random(n) < 0.2).astype(int), "liked": (rng.random(n) < 0.5).astype(int),
            "watched": np.ones(n, int), F.ITEM_IDX: np.arange(n)}
    specs = [D.dataset_spec("movielens").task(t) for t in ("loved", "liked")]
    per = {}
    for key, scale in (("takd_teacher/teacher", teacher_scale), ("takd_student/student", student_scale),
                       ("takd_student/student_alone", alone_scale)):
        entry = per.setdefault(key, {"params": 1, "seeds": list(range(seeds))})
        for _ in range(seeds):
            predictions = {t: 2 * data["loved"] + data["liked"] + rng.normal(scale=scale, size=n)
                           for t in ("loved", "liked")}
            for name, value in takd.pair_metrics(("loved", "liked"), specs, predictions, data).items():
                entry.setdefault(f"test/{name}", []).append(value)
                entry.setdefault(f"eval/{name}", []).append(value)
            for name, (units, draws) in takd.pair_draws(("loved", "liked"), specs, predictions, data).items():
                entry[f"units/{name}"] = units
                entry.setdefault(f"draws/{name}", []).append(draws)
    return {"movielens": per}


def test_takd_goals_show_both_stds_and_the_paired_interval():
    from bench import takd

    results = _synthetic_takd()
    pairs = {"movielens": ("loved", "liked")}
    lines = takd.goals(takd.rows_of(results, pairs), pairs, results)
    multi = next(l for l in lines if l.startswith("- movielens loved Multi-AUC"))
    assert "student" in multi and " ± " in multi and "vs student_alone" in multi and "paired 95% bootstrap" in multi
    assert multi.endswith("— met")
    # As good as its teacher on average (liked: diff -0.0001) is not enough: the interval of
    # the difference must stay above -0.005, and here it reaches -0.02.
    auc = next(l for l in lines if l.startswith("- movielens liked AUC, goal student - teacher >= -0.005"))
    assert "(3 seeds) vs teacher" in auc and "paired 95% bootstrap [-0.02" in auc
    assert auc.endswith("not met: the interval reaches below -0.005")
    better = _synthetic_takd(student_scale=0.3)
    line = next(l for l in takd.goals(takd.rows_of(better, pairs), pairs, better) if "liked AUC, goal" in l)
    assert line.endswith("— met")
    # Runs recorded without draws are undecided, not met.
    for entry in results["movielens"].values():
        for key in [k for k in entry if k.startswith("draws/")]:
            del entry[key]
    assert all("undecided" in l for l in takd.goals(takd.rows_of(results, pairs), pairs, results)
               if "Multi-AUC" in l or " AUC" in l)


def test_rerender_rewrites_the_page_from_its_runs_and_keeps_the_runs_provenance(tmp_path):
    import json

    from bench import common, takd

    run = _takd_runs(42, 0.80)
    common.extend_results(run["results"], _takd_runs(43, 0.82)["results"])
    (tmp_path / "takd_runs.json").write_text(json.dumps(run))
    rows = takd.rows_of(run["results"], run["pairs"])
    old_page = takd.markdown(rows, run["pairs"], [42, 43], run["log"] + ["Wall time so far 1.0 min; seeds finished "
                                                                          "on movielens: [42, 43]."],
                             "Hyperparameters: registry defaults.", run["results"])
    common.write_results("takd", rows, old_page.replace("per-seed speed-up", "OLD RULE"),
                         {"command": "python -m bench.takd --seeds 42,43", "commit": "abc1234", "machine": "{}"},
                         str(tmp_path))
    runs_before = (tmp_path / "takd_runs.json").read_text()
    page = takd.rerender("takd", str(tmp_path), "python -m bench.takd --rerender takd")
    text = (tmp_path / "takd.md").read_text()
    assert "OLD RULE" not in text and "per-seed speed-up" in page
    assert "Seeds: [42, 43]. Hyperparameters: registry defaults." in text
    assert "Wall time so far 1.0 min; seeds finished on movielens: [42, 43]." in text
    assert "Page re-rendered from `takd_runs.json` by `python -m bench.takd --rerender takd`" in text
    assert "Produced by: `python -m bench.takd --seeds 42,43`" in text and "Commit: abc1234" in text
    assert (tmp_path / "takd_runs.json").read_text() == runs_before

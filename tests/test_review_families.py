"""The review families (semax, review_mt, nor_reviews) and their text blocks on planted text.

The planted pattern: a user is generous or harsh, an item solid or flimsy, and the rating
is 1 + 2 [generous] + 2 [solid]; the review of a user on an item is two words, the item's
("solid" / "flimsy") then the user's ("love" / "meh"). A user's documents are earlier
reviews, all ending with the user's word; an item's documents all start with the item's
word. The test rows belong to users whose ids no training row has, so only the text tells
how they rate: a family that learns from the documents must beat `mf` (ids only) on the
rating, and a generator must write the item's word then the user's.
"""


import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import registry
from models.base import EXPLAIN, SCORE
from models.blocks import text as tb
from models.context import synthetic_context
from models.tasks import GenerationTask, token_nll
from training.trainer import fit_on_arrays

PLANTED = {
    "name": "planted",
    "interactions": {
        "files": "log.csv", "user": "u", "item": "i", "time": "t",
        "rating": {"column": "stars", "min": 1, "max": 5},
        "columns": {"review": {"type": "text", "max_tokens": 3, "documents": True, "max_documents": 3}},
    },
    "labels": {"stars": {"rating": True}, "seen": {"implicit": True}},
    "tasks": [{"name": "stars", "kind": "regression", "condition": "seen"}],
}
SOLID, FLIMSY, LOVE, MEH = 1, 2, 3, 4  # word ids; 5..9 are other words
ROWS = 11  # padding, 9 words, unknown
USERS, ITEMS, TEST_USERS = 200, 24, 40
SMALL = {"dim": 16, "units": 16, "max_length": 3, "learning_rate": 0.005, "l2": 0.01}
# The word encoder of each document: a CNN keeps the test fast (the recurrent ones are
# tested on their own below); the documents are still read in time order by a GRU / LSTM.
FAST = {"semax": {"encoder": "cnn"}, "review_mt": {"encoder": "cnn"}, "nor_reviews": {}}
TEXT_FAMILIES = ("semax", "review_mt", "nor_reviews")
GENERATORS = ("review_mt", "nor_reviews")


def _context(**kwargs):
    return synthetic_context(PLANTED, ("stars",), num_users=USERS + TEST_USERS + 2, num_items=ITEMS + 2,
                             vocabulary_rows=ROWS, **kwargs)


def planted_rows(users, per_user, seed):
    """Rows of the planted pattern for the given user rows (features as the Transform writes them)."""
    rng = np.random.default_rng(seed)
    generous = {u: bool(u % 2) for u in users}
    solid = {i: bool(i % 3) for i in range(1, ITEMS + 1)}

    def word(user=None, item=None):
        return (LOVE if generous[user] else MEH) if user is not None else (SOLID if solid[item] else FLIMSY)

    out = {k: [] for k in ("user_idx", "item_idx", "stars", "seen", "review_tokens", "user_review_docs_tokens",
                           "item_review_docs_tokens")}
    for u in users:
        for _ in range(per_user):
            item = int(rng.integers(1, ITEMS + 1))
            user_docs = [[int(rng.integers(1, 3)), word(user=u), int(rng.integers(5, 10))] for _ in range(3)]
            item_docs = [[word(item=item), int(rng.integers(3, 5)), int(rng.integers(5, 10))] for _ in range(3)]
            out["user_idx"].append(u)
            out["item_idx"].append(item)
            out["stars"].append(1.0 + 2.0 * generous[u] + 2.0 * solid[item])
            out["seen"].append(1)
            out["review_tokens"].append([word(item=item), word(user=u), 0])
            out["user_review_docs_tokens"].append(user_docs)
            out["item_review_docs_tokens"].append(item_docs)
    return {k: np.asarray(v, np.float32 if k == "stars" else np.int64) for k, v in out.items()}


def batches(data, size=64):
    n = len(data["user_idx"])
    return [{k: v[i:i + size] for k, v in data.items()} for i in range(0, n, size)]


@pytest.fixture(scope="module")
def planted():
    train = planted_rows(range(1, USERS + 1), 4, seed=0)
    test = planted_rows(range(USERS + 1, USERS + TEST_USERS + 1), 3, seed=1)  # users no training row has
    return train, test


def _rmse(model, data):
    predicted = model(data)["stars"].numpy()
    return float(np.sqrt(np.mean((predicted - data["stars"]) ** 2)))


@pytest.fixture(scope="module")
def trained(planted):
    train, _ = planted
    out = {"mf": fit_on_arrays("mf", _context(), {"dim": 16, "l2": 0.0, "learning_rate": 0.01, "optimizer": "adam"},
                               batches(train), epochs=8)}
    for family in TEXT_FAMILIES:
        out[family] = fit_on_arrays(family, _context(), {**SMALL, **FAST[family]}, batches(train), epochs=8)
    return out


# -- the families ------------------------------------------------------------------------
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_a_family_reading_review_documents_beats_mf_on_users_known_only_by_their_text(trained, planted, family):
    _, test = planted
    mf, text = _rmse(trained["mf"], test), _rmse(trained[family], test)
    # mf knows the item, not an unseen user: off by about 1 (half its rating range).
    assert mf > 0.8
    assert text < 0.6 * mf, (family, text, mf)


@pytest.mark.parametrize("family", GENERATORS)
def test_a_generator_writes_the_items_aspect_and_the_right_verdict(trained, planted, family):
    _, test = planted
    model = trained[family]
    ids = model.explain(test).numpy()
    expected = test["review_tokens"][:, :2]
    assert ids.shape == (len(expected), 3)
    assert np.mean(ids[:, 0] == expected[:, 0]) > 0.9, family  # the item's word, from its documents
    assert np.mean(ids[:, 1] == expected[:, 1]) > 0.9, family  # the user's word, from theirs
    assert np.all(ids[:, 2] == 0)  # the end after two words: nothing more


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_the_rating_never_reads_the_rows_own_review(trained, planted, family):
    _, test = planted
    model = trained[family]
    other = dict(test, review_tokens=np.random.default_rng(5).integers(1, ROWS, size=test["review_tokens"].shape))
    assert np.array_equal(model(test)["stars"].numpy(), model(other)["stars"].numpy())
    without = {k: v for k, v in test.items() if k != "review_tokens"}  # a serving request carries none
    assert np.array_equal(model(test)["stars"].numpy(), model(without)["stars"].numpy())
    # ... while the text task's loss does read it.
    assert float(model.compute_loss(test)) != pytest.approx(float(model.compute_loss(other)))


@pytest.mark.parametrize("family", GENERATORS)
def test_the_generator_stage_moves_the_generator_alone_and_keeps_the_rating(planted, family):
    # training/recipes/generate.py: after one joint epoch, the generator trains alone on the
    # text task. Its eval perplexity falls; every other weight (the word vectors the encoders
    # share with the generator here included) and so the served rating stay as they were.
    import types

    from training.recipes.generate import generator_stage

    train, test = planted
    model = fit_on_arrays(family, _context(), {**SMALL, **FAST[family], "learning_rate": 0.002}, batches(train),
                          epochs=1)
    own = {id(v) for v in model.generator_variables()}
    assert own and model.generator.words is model.words  # the planted target is the documents column
    assert not own & {id(v) for v in model.words.weights}
    before = [v.numpy().copy() for v in model.weights]
    rating = model(test)["stars"].numpy()
    targets, logits = model.teacher_forced(test)
    nll, mask = token_nll(targets, logits)
    start = float(np.exp(np.sum(nll.numpy() * mask.numpy()) / np.sum(mask.numpy())))
    columns = {k: tf.constant(v) for k, v in train.items()}
    fit_args = {"x": tf.data.Dataset.from_tensor_slices(columns).batch(64).repeat(), "steps_per_epoch": 13,
                "validation_data": tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in test.items()})
                .batch(256)}
    job = types.SimpleNamespace(hparams=model.hparams, train_steps=None)
    summary = generator_stage(job, model, fit_args, epochs=4)
    assert summary["monitor"] == "val_review_perplexity" and summary["epochs_run"] >= 1
    assert summary["best_value"] < start, (summary, start)
    assert not model.text_only
    moved = [id(v) for v, old in zip(model.weights, before) if not np.array_equal(v.numpy(), old)]
    assert moved and set(moved) <= own, [v.name for v in model.weights if id(v) in set(moved) - own]
    np.testing.assert_array_equal(model(test)["stars"].numpy(), rating)


def test_rating_only_ablation_drops_the_text_task_and_explain():
    ctx = _context()
    for family in TEXT_FAMILIES:
        full = registry.get_family(family).build(ctx, registry.get_family(family).hparams().override(SMALL))
        ablated = registry.get_family(family).build(
            ctx, registry.get_family(family).hparams().override({**SMALL, "text_task": "false"}))
        assert SCORE in ablated.capabilities and EXPLAIN not in ablated.capabilities
        assert ablated.generator is None
        assert (EXPLAIN in full.capabilities) == (family in GENERATORS)
        assert full.monitor() == ("val_stars_rmse", "min")  # early stopping on the rating by default
    joint = registry.get_family("nor_reviews").build(
        ctx, registry.get_family("nor_reviews").hparams().override({**SMALL, "stop_on": "joint"}))
    assert joint.monitor() == ("val_loss", "min")
    assert EXPLAIN in registry.get_family("review_mt").capabilities


def test_a_description_without_review_documents_is_a_clear_error():
    ctx = synthetic_context("movielens", ("rating",))
    with pytest.raises(ValueError, match="declares no interaction text column with `documents: true`"):
        registry.get_family("semax").build(ctx, registry.get_family("semax").hparams())
    with pytest.raises(ValueError, match="'reviw' is not an interaction text column.*did you mean 'review'"):
        registry.get_family("nor_reviews").build(
            _context(), registry.get_family("nor_reviews").hparams().override({"documents": "reviw"}))


@pytest.mark.parametrize("generator_epochs", [40, 0])
def test_the_adversarial_stage_acts_where_the_generator_trains_last_after_teacher_forcing(planted, generator_epochs):
    # With a generator stage, the adversarial term and the discriminator act there (the rating's
    # weights frozen); without one, in the joint stage. Either way from the stage's step
    # `adversarial_start` on.
    train, test = planted
    overrides = {**SMALL, **FAST["review_mt"], "adversarial": "true", "adversarial_start": 1000,
                 "discriminator_filters": 8, "generator_epochs": generator_epochs}
    model = fit_on_arrays("review_mt", _context(), overrides, batches(train)[:1], epochs=1)
    data = tf.data.Dataset.from_tensor_slices(train).batch(64).take(2)
    judge = model.discriminator.trainable_variables

    def weights(variables):
        return [v.numpy().copy() for v in variables]

    if generator_epochs:
        assert "discriminator_loss" not in model.fit(data, epochs=1, verbose=0).history  # the joint stage
        model.text_only = True
        model.compile(optimizer=keras.optimizers.Adam(0.005))  # as training/recipes/generate.py does
    before, rating = weights(judge), model(test)["stars"].numpy()
    idle = model.fit(data, epochs=1, verbose=0).history  # teacher forcing only: before step 1000
    assert idle["discriminator_loss"] == [0.0] and idle["adversarial_loss"][0] != 0.0
    assert all(np.array_equal(b, a) for b, a in zip(before, weights(judge)))
    model.optimizer.iterations.assign(1000)
    own = weights(model.generator_variables())
    active = model.fit(data, epochs=1, verbose=0).history
    assert active["discriminator_loss"][0] > 0.0
    assert any(not np.allclose(b, a) for b, a in zip(before, weights(judge)))
    assert any(not np.allclose(b, a) for b, a in zip(own, weights(model.generator_variables())))
    if generator_epochs:  # the generator stage moves the generator alone
        np.testing.assert_array_equal(model(test)["stars"].numpy(), rating)
    model.text_only = False
    assert np.isfinite(float(model.compute_loss(batches(train)[0])))


# -- blocks ------------------------------------------------------------------------------
def test_decoder_targets_cut_the_text_and_put_the_end_after_it():
    tokens = tf.constant([[7, 8, 9, 0], [5, 0, 0, 0], [0, 0, 0, 0]])
    assert tb.decoder_targets(tokens, 2, end=20).numpy().tolist() == [[7, 8, 20], [5, 20, 0], [20, 0, 0]]
    assert tb.decoder_targets(tokens, 5, end=20).numpy().tolist()[0] == [7, 8, 9, 20, 0, 0]


def test_generation_task_is_masked_token_cross_entropy_with_accuracy_and_perplexity():
    task = GenerationTask("review")
    targets = tf.constant([[1, 2, 0], [2, 0, 0]])
    logits = tf.math.log(tf.constant([[[0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [1 / 3] * 3],
                                      [[0.1, 0.1, 0.8], [1 / 3] * 3, [1 / 3] * 3]]))
    loss = task(targets, logits)
    expected = -(np.log(0.6) + np.log(0.7) + np.log(0.8)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(task.accuracy.result()) == pytest.approx(1.0)
    assert float(task.perplexity.result()) == pytest.approx(np.exp(expected), rel=1e-5)
    masked = GenerationTask("review")(targets, logits, mask=tf.constant([1.0, 0.0]))
    assert float(masked) == pytest.approx(-(np.log(0.6) + np.log(0.7)) / 2, rel=1e-5)
    nll, mask = token_nll(targets, logits)
    assert mask.numpy().tolist() == [[1, 1, 0], [1, 0, 0]] and nll.shape == (2, 3)


@pytest.mark.parametrize("kind", tb.ENCODERS)
def test_token_encoder_ignores_padding_and_gives_zeros_for_an_empty_text(kind):
    words = tb.embedding(10, 4, seed=0, name="w")
    encoder = tb.TokenEncoder(words, kind, 4, seed=1)
    short = encoder(tf.constant([[3, 4, 0, 0], [0, 0, 0, 0]]))
    longer = encoder(tf.constant([[3, 4, 0, 0, 0, 0]]))
    np.testing.assert_allclose(short.vector.numpy()[0], longer.vector.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(short.vector.numpy()[1], 0.0)
    assert short.mask.numpy().tolist() == [[True, True, False, False], [False] * 4]
    docs = encoder(tf.constant([[[3, 4, 0], [5, 0, 0]]]))  # [B, D, T]
    assert docs.states.shape[:3] == (1, 2, 3) and docs.vector.shape[:2] == (1, 2)


def test_document_encoder_reads_documents_in_time_order_and_skips_empty_ones():
    words = tb.embedding(10, 4, seed=0, name="w")
    encoder = tb.DocumentEncoder(tb.TokenEncoder(words, "mean", 4, seed=1), 4, "gru", seed=2)
    docs, _ = encoder(tf.constant([[[1, 2], [3, 0], [0, 0]], [[3, 0], [1, 2], [0, 0]]]))
    assert docs.mask.numpy().tolist() == [[True, True, False], [True, True, False]]
    assert not np.allclose(docs.vector.numpy()[0], docs.vector.numpy()[1])  # the order matters
    padded, _ = encoder(tf.constant([[[1, 2], [3, 0], [0, 0], [0, 0]]]))
    np.testing.assert_allclose(padded.vector.numpy()[0], docs.vector.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(docs.states.numpy()[:, 2], 0.0)


def test_attention_weights_are_distributions_over_present_positions_only():
    rng = np.random.default_rng(0)
    states = tf.constant(rng.normal(size=(2, 4, 3)), tf.float32)
    mask = tf.constant([[True, True, False, False], [False] * 4])
    pooled, weights = tb.WordAttention(5, seed=0)(states, mask, tf.ones((2, 2)))
    assert weights.numpy()[0, :2].sum() == pytest.approx(1.0) and np.all(weights.numpy()[0, 2:] == 0)
    np.testing.assert_allclose(pooled.numpy()[1], 0.0)  # nothing present: zeros
    a, b, wa, wb = tb.MutualAttention(3, seed=0)(states, tf.constant([[True] * 4] * 2), states[:, :3],
                                                 tf.constant([[True, False, True]] * 2))
    assert wa.numpy().sum(-1) == pytest.approx([1.0, 1.0]) and np.all(wb.numpy()[:, 1] == 0)
    assert a.shape == (2, 3) and b.shape == (2, 3)


def test_generator_teacher_forcing_and_greedy_decoding_agree_and_never_emit_padding_or_start():
    generator = tb.SequenceGenerator(rows=6, units=4, seed=0)
    context = tf.constant(np.random.default_rng(1).normal(size=(3, 5)), tf.float32)
    memory = tf.constant(np.random.default_rng(2).normal(size=(3, 2, 4)), tf.float32)
    memory_mask = tf.constant([[True, True], [True, False], [False, False]])
    ids = generator.generate(context, memory, memory_mask, max_length=5).numpy()
    assert ids.shape == (3, 5) and not np.any(ids == generator.start)
    assert not np.any(ids == 5)  # the unknown id (rows - 1) is trained on, never written
    assert np.all(ids[:, 0] > 0)  # a text has at least one word
    for row in ids:  # once the end came (0), nothing follows
        ended = np.flatnonzero(row == 0)
        assert not ended.size or np.all(row[ended[0]:] == 0)
    # Feeding the greedy output back under teacher forcing picks the same tokens (among the
    # ones decoding may write: no unknown id, no end first).
    targets = tb.decoder_targets(tf.constant(ids), 5, generator.end)
    logits = generator(context, memory, memory_mask, targets).numpy() + generator.never.numpy()
    logits[:, 0, generator.end] = -np.inf
    chosen = logits.argmax(-1)
    for r, row in enumerate(ids):
        n = int(np.sum(row > 0))
        assert chosen[r, :n].tolist() == row[:n].tolist()
    assert np.all(logits[..., 0] < -1e8) and np.all(logits[..., generator.start] < -1e8)


def _text_log_prob(generator, context, memory, memory_mask, text, max_length, min_length):
    """A text's log-probability [B] under the decoder as `generate` scores it (unknown ids
    barred, END barred before min_length), END included when the text ends early."""
    ids = np.zeros((context.shape[0], max_length), np.int64)
    ids[:, :len(text)] = text
    targets = tb.decoder_targets(tf.constant(ids), max_length, generator.end)
    logits = generator(context, memory, memory_mask, targets).numpy() + generator.never.numpy()
    logits[:, :min_length, generator.end] += tb.NEG_INF
    log_p = tf.nn.log_softmax(logits).numpy()
    steps = min(len(text) + 1, max_length)
    t = targets.numpy()
    return sum(log_p[np.arange(len(t)), s, t[:, s]] for s in range(steps)), steps


@pytest.mark.parametrize("length_penalty,min_length", [(0.0, 1), (1.0, 1), (0.0, 2)])
def test_a_wide_beam_finds_the_best_text_of_all(length_penalty, min_length):
    # Two writable words (1, 2; 3 is the unknown id), texts of at most 3 tokens: a beam wider
    # than every prefix is an exhaustive search, so it returns the text whose log-probability
    # / length ** length_penalty is the best of all texts, which the test enumerates.
    import itertools

    generator = tb.SequenceGenerator(rows=4, units=6, seed=3)
    rng = np.random.default_rng(4)
    context = tf.constant(rng.normal(size=(4, 5)) * 3, tf.float32)
    memory = tf.constant(rng.normal(size=(4, 2, 6)), tf.float32)
    memory_mask = tf.constant([[True, True], [True, False], [True, True], [False, False]])
    ids = generator.generate(context, memory, memory_mask, max_length=3, beam_width=16,
                             length_penalty=length_penalty, min_length=min_length).numpy()
    texts = [list(t) for n in range(min_length, 4) for t in itertools.product([1, 2], repeat=n)]
    scores = []
    for text in texts:
        log_p, steps = _text_log_prob(generator, context, memory, memory_mask, text, 3, min_length)
        scores.append(log_p / steps ** length_penalty)
    best = np.argmax(np.stack(scores), axis=0)
    for r in range(4):
        assert [int(x) for x in ids[r] if x] == texts[best[r]], (r, ids[r])
        written = ids[r][ids[r] > 0]
        assert len(written) >= min_length and not np.any(ids[r][len(written):])


def test_beam_search_of_width_one_is_greedy_and_decoding_settings_are_checked():
    generator = tb.SequenceGenerator(rows=6, units=4, seed=0)
    rng = np.random.default_rng(1)
    context = tf.constant(rng.normal(size=(3, 5)), tf.float32)
    memory = tf.constant(rng.normal(size=(3, 2, 4)), tf.float32)
    memory_mask = tf.constant([[True, True], [True, False], [False, False]])
    greedy = generator.generate(context, memory, memory_mask, max_length=5).numpy()
    np.testing.assert_array_equal(generator._beam(context, memory, memory_mask, 5, 1, 1, 0.0).numpy(), greedy)
    with pytest.raises(ValueError, match="samples or searches a beam"):
        generator.generate(context, memory, memory_mask, max_length=5, beam_width=2, sample=True)
    from models.reviews import ReviewParams

    with pytest.raises(ValueError, match="min_length must be in"):
        ReviewParams(min_length=13)
    with pytest.raises(ValueError, match="beam_width"):
        ReviewParams(beam_width=0)

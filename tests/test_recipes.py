"""Training recipes and the shared training record: what the registry names resolves, and
hyperparameter records parse once with flat names."""

import dataclasses

import pytest

from models.hparams import TrainingParams
from models.registry import FAMILIES, get_family
from training import recipes
from training.config import TrainConfig
from contract import datasets as D


def test_every_family_names_a_recipe_with_the_small_interface():
    for family in FAMILIES.values():
        recipe = recipes.get(family.recipe)
        assert callable(recipe.setup) and recipe.STRATEGIES, family.name
    with pytest.raises(ValueError, match="unknown training recipe 'boosting'"):
        recipes.get("boosting")


def test_members_above_one_resolve_to_the_ensemble_over_the_familys_recipe():
    tower = get_family("two_tower")
    assert recipes.resolve(tower, tower.hparams()).__name__ == "training.recipes.retrieval"
    three = tower.hparams().override({"members": "3"})
    assert three.training.members == 3 and three.to_dict()["members"] == 3
    assert recipes.resolve(tower, three).__name__ == "training.recipes.ensemble"
    config = TrainConfig(family="two_tower", description=D.dataset_spec("movielens").to_dict(),
                         hparams={"members": 3}, seed=7)
    member = recipes.Job(config, tower, config.params, [], [], "").member(2)
    assert member.seed == 9 and member.hparams.training.members == 1
    assert dataclasses.replace(member.hparams, training=three.training) == three  # the rest is the same record


def test_a_family_states_only_the_training_knobs_it_changes():
    shared = TrainingParams()
    mf = get_family("mf").hparams()
    assert (mf.training.learning_rate, mf.training.max_epochs, mf.training.optimizer) == (0.003, 30, "rmsprop")
    assert mf.training.batch_size == shared.batch_size and mf.training.patience == shared.patience
    bert = get_family("bert4rec").hparams().training
    assert bert == dataclasses.replace(get_family("sasrec").hparams().training, patience=20)
    changed = mf.override({"learning_rate": "0.01", "dim": 8})
    assert (changed.training.learning_rate, changed.dim, changed.training.max_epochs) == (0.01, 8, 30)
    with pytest.raises(ValueError, match="has no hyperparameter 'depth'; known: .*learning_rate"):
        mf.override({"depth": 2})
    with pytest.raises(ValueError, match="members must be >= 1"):
        mf.override({"members": 0})


def test_weight_average_validates_and_keeps_the_averaged_weights_of_the_best_epoch():
    import numpy as np
    import tf_keras as keras

    from training.recipes.common import WeightAverage

    with pytest.raises(ValueError, match="weight_average must be in"):
        TrainingParams(weight_average=1.0)
    assert get_family("two_tower").hparams().override({"weight_average": "0.9"}).training.weight_average == 0.9

    class Seen(keras.callbacks.Callback):  # the weights that validation and the epoch's end see
        def __init__(self):
            super().__init__()
            self.at_test, self.at_end = [], []

        def on_test_begin(self, logs=None):
            self.at_test.append(self.model.get_weights()[0].copy())

        def on_epoch_end(self, epoch, logs=None):
            self.at_end.append(self.model.get_weights()[0].copy())

    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    model = keras.Sequential([keras.layers.Dense(1, use_bias=False, input_shape=(3,))])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    trained, averaged = [], []

    class Steps(keras.callbacks.Callback):  # the trained weights after each step, averaged by hand
        def on_train_batch_end(self, batch, logs=None):
            trained.append(self.model.get_weights()[0].copy())  # the average starts at the first step's
            averaged.append(0.8 * averaged[-1] + 0.2 * trained[-1] if averaged else trained[-1])

    seen = Seen()
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), shuffle=False, verbose=0,
              callbacks=[Steps(), WeightAverage(0.8), seen])
    # Steps runs before WeightAverage swaps, so it records the trained weights; the average
    # is what validation, the epoch's end and the model after fit hold.
    np.testing.assert_allclose(seen.at_test[0], averaged[3], rtol=1e-5)
    np.testing.assert_allclose(seen.at_end[1], averaged[7], rtol=1e-5)
    np.testing.assert_allclose(model.get_weights()[0], averaged[7], rtol=1e-5)
    assert not np.allclose(trained[-1], averaged[7])
    # The second epoch trains on from the trained weights, not from the average.
    batch_x, batch_y = x[:16], y[:16]

    def sgd_step(w):
        return w - 0.1 * 2.0 / 16 * batch_x.T @ (batch_x @ w - batch_y)

    np.testing.assert_allclose(trained[4], sgd_step(trained[3]), rtol=1e-4)
    assert not np.allclose(trained[4], sgd_step(averaged[3]), rtol=1e-4)

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

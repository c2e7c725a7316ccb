"""Shipped presets: each names PipelineConfig fields the families accept, `--preset` applies
one and `--hparam` overrides it name by name."""

import pytest

from models.registry import get_family
from pipeline import configs
from pipeline.local_runner import _parse_args


@pytest.mark.parametrize("name", configs.presets())
def test_every_shipped_preset_is_valid_for_its_families(name):
    values = configs.load_preset(name)
    for family, overrides in values.get("hparams", {}).items():
        get_family(family).hparams().override(overrides)  # raises on an unknown name or bad value


def test_the_best_preset_trains_two_tower_as_an_ensemble_of_three_and_hparam_overrides_it():
    assert "best" in configs.presets()
    config = _parse_args(["--preset", "best"])
    assert config.hparams == {"two_tower": {"members": 3}}
    assert _parse_args([]).hparams == {}
    config = _parse_args(["--preset", "best", "--hparam", "two_tower.members=2", "--hparam", "mf.dim=8"])
    assert config.hparams == {"two_tower": {"members": "2"}, "mf": {"dim": "8"}}
    with pytest.raises(ValueError, match="unknown preset 'fastest'; expected one of .*best"):
        configs.load_preset("fastest")

"""bench.common.widening_search on synthetic objectives whose optimum lies outside the first
grid: it widens each knob past the edge it chose until the choice is interior, stops at a
stated bound or budget and says so, and records every point it evaluated."""
import math

import pytest

from bench import common


def _bowl(calls=None):
    """Eval error with its minimum at lr 0.08 (log scale), reg 3.0 and 310 epochs: all three
    outside the first grid below."""
    def objective(s):
        if calls is not None:
            calls.append(dict(s))
        return ((math.log(s["lr"]) - math.log(0.08)) ** 2 + (math.log(s["reg"]) - math.log(3.0)) ** 2
                + ((s["epochs"] - 310) / 100.0) ** 2)
    return objective


KNOBS = [
    common.Knob("lr", (0.001, 0.01), common.GEOMETRIC, 2.0),
    common.Knob("reg", (0.01, 0.1), common.GEOMETRIC, 3.0),
    common.Knob("epochs", (20, 40), common.ADDITIVE, 40, low=10, high=1000, integer=True,
                why="test bounds"),
]


def test_widens_every_knob_past_its_edge_until_the_choice_is_interior():
    calls = []
    tuned = common.widening_search(_bowl(calls), KNOBS, higher_is_better=False)
    assert tuned.status == {"lr": common.INTERIOR, "reg": common.INTERIOR, "epochs": common.INTERIOR}
    assert tuned.interior
    # Geometric steps from the edges: 0.01 * 2^3 = 0.08, 0.1 * 3^3 = 2.7; additive: 40 + 7 * 40.
    assert tuned.chosen == {"lr": 0.08, "reg": pytest.approx(2.7), "epochs": 320}
    # Every evaluated point is recorded with its score, once, in evaluation order.
    assert len(tuned.points) == len(calls)
    assert [{k: p[k] for k in ("lr", "reg", "epochs")} for p in tuned.points] == calls
    assert len({(p["lr"], p["reg"], p["epochs"]) for p in tuned.points}) == len(calls)
    assert tuned.score == min(p["score"] for p in tuned.points)
    # The first grid comes first, whole.
    assert {(c["lr"], c["reg"], c["epochs"]) for c in calls[:8]} == {
        (lr, reg, e) for lr in (0.001, 0.01) for reg in (0.01, 0.1) for e in (20, 40)}
    # The chosen point's neighbours on every knob were evaluated and are worse.
    by = {(p["lr"], p["reg"], p["epochs"]): p["score"] for p in tuned.points}
    c = tuned.chosen
    for n in [(0.04, c["reg"], 320), (0.16, c["reg"], 320), (0.08, c["reg"] / 3, 320),
              (0.08, c["reg"] * 3, 320), (0.08, c["reg"], 280), (0.08, c["reg"], 360)]:
        key = next(k for k in by if all(math.isclose(a, b) for a, b in zip(k, n)))
        assert by[key] > tuned.score


def test_higher_is_better_finds_the_maximum():
    objective = _bowl()
    tuned = common.widening_search(lambda s: -objective(s), KNOBS, higher_is_better=True)
    assert tuned.chosen["lr"] == 0.08 and tuned.chosen["epochs"] == 320 and tuned.interior


def test_a_bound_stops_the_widening_and_is_reported_with_its_reason():
    knobs = [common.Knob("lr", (0.001, 0.01), common.GEOMETRIC, 2.0, high=0.03, why="diverges above"),
             KNOBS[1], KNOBS[2]]
    tuned = common.widening_search(_bowl(), knobs, higher_is_better=False)
    assert tuned.chosen["lr"] == 0.02  # 0.04 would cross the bound
    assert tuned.status["lr"] == "at the upper bound 0.03 (diverges above)"
    assert tuned.status["reg"] == common.INTERIOR and not tuned.interior


def test_the_evaluation_budget_stops_the_search_and_is_reported():
    tuned = common.widening_search(_bowl(), KNOBS, higher_is_better=False, max_evaluations=10)
    assert len(tuned.points) == 10
    assert not tuned.interior
    assert any("evaluation budget of 10" in s for s in tuned.status.values())


def test_an_interior_optimum_of_the_first_grid_adds_nothing_at_the_edges():
    knobs = [common.Knob("lr", (0.02, 0.04, 0.08, 0.16, 0.32), common.GEOMETRIC, 2.0),
             common.Knob("reg", (0.9, 2.7, 8.1), common.GEOMETRIC, 3.0),
             common.Knob("epochs", (270, 310, 350), common.ADDITIVE, 40, integer=True)]
    calls = []
    tuned = common.widening_search(_bowl(calls), knobs, higher_is_better=False)
    assert len(calls) == 5 * 3 * 3 and tuned.interior
    assert tuned.chosen == {"lr": 0.08, "reg": 2.7, "epochs": 310}


def test_categorical_knobs_and_fixed_settings():
    def objective(s):
        assert s["iterations"] == 7  # fixed settings reach the objective, unsearched
        shift = {"als": 0.0, "sgd": 1.0}[s["method"]]
        return (math.log(s["reg"]) - math.log(40.0)) ** 2 + shift

    tuned = common.widening_search(
        objective, [common.Knob("method", ("sgd", "als"), common.CATEGORICAL),
                    common.Knob("reg", (1.0, 5.0), common.GEOMETRIC, 2.0)],
        higher_is_better=False, fixed={"iterations": 7})
    assert tuned.chosen == {"iterations": 7, "method": "als", "reg": 40.0}
    assert tuned.status == {"method": common.CATEGORICAL, "reg": common.INTERIOR}


def test_integer_knob_halved_to_one_stops_at_its_lower_bound():
    tuned = common.widening_search(lambda s: s["factors"], [
        common.Knob("factors", (4, 8), common.GEOMETRIC, 2.0, low=1, why="one factor is the smallest model",
                    integer=True)], higher_is_better=False)
    assert tuned.chosen == {"factors": 1}
    assert tuned.status["factors"].startswith("at the lower bound 1")
    assert [p["factors"] for p in tuned.points] == [4, 8, 2, 1]


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="factor > 1"):
        common.Knob("lr", (0.1,), common.GEOMETRIC, 1.0)
    with pytest.raises(ValueError, match="say why"):
        common.Knob("lr", (0.1,), common.GEOMETRIC, 2.0, high=1.0)
    with pytest.raises(ValueError, match="> 0"):
        common.Knob("reg", (0.0, 0.1), common.GEOMETRIC, 2.0)
    with pytest.raises(ValueError, match="repeat"):
        common.widening_search(lambda s: 0.0, [KNOBS[0], KNOBS[0]])


def test_a_tolerance_keeps_the_earlier_point_when_the_gain_is_below_it():
    # Converging epochs: each doubling gains less; gains below 1e-3 are ties.
    objective = lambda s: 0.5 ** s["epochs"]  # noqa: E731
    knob = [common.Knob("epochs", (1, 2), common.GEOMETRIC, 2.0, high=1024, integer=True, why="test")]
    strict = common.widening_search(objective, knob, higher_is_better=False)
    assert strict.chosen == {"epochs": 1024} and strict.status["epochs"].startswith("at the upper bound 1024")
    tolerant = common.widening_search(objective, knob, higher_is_better=False, tolerance=1e-3)
    assert tolerant.chosen == {"epochs": 16} and tolerant.interior  # 0.5**16 - 0.5**32 < 1e-3 < 0.5**8 - 0.5**16

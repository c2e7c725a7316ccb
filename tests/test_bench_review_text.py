"""bench.review_text's own pieces: the retrieval explanation, the paired bootstrap and its
BLEU / RMSE draws, and the goal lines."""

import numpy as np
import pytest

from bench import review_text as R
from contract import features as F
from evaluation import text_metrics as tm

# Review tokens (the documents column) and summaries (the target) of five training rows.
TRAIN = {
    F.USER_IDX: np.array([1, 1, 2, 2, 3]),
    F.ITEM_IDX: np.array([7, 8, 7, 8, 7]),
    "review_tokens": np.array([[1, 2, 0], [1, 3, 0], [4, 5, 0], [4, 6, 0], [2, 2, 1]]),
    "summary_tokens": np.array([[11, 0], [12, 0], [13, 0], [14, 0], [15, 0]]),
}


def test_retrieval_takes_the_items_training_text_closest_to_the_users_own_reviews():
    test = {F.USER_IDX: np.array([1, 2, 1]), F.ITEM_IDX: np.array([7, 7, 9])}
    out = R.retrieval_explanations(TRAIN, test, "review_tokens", "summary_tokens", vocabulary_rows=8)
    # user 1 writes words 1, 2, 3: of item 7's reviews (1 2 / 4 5 / 2 2 1) the first is closest.
    assert out[0].tolist() == [11, 0]
    assert out[1].tolist() == [13, 0]  # user 2 writes 4, 5, 6: item 7's "4 5"
    assert out[2].tolist() in ([11, 0], [12, 0])  # item 9 has no training row: the closest of any item


def test_paired_interval_is_the_percentile_interval_of_the_seed_mean_difference():
    ratings = np.array([4.0, 5.0, 3.0, 5.0])
    draws = R.resample_indices(4, resamples=200, seed=0)
    exact = R.rmse_draws(ratings, ratings, draws)
    off = R.rmse_draws(ratings + 1.0, ratings, draws)
    assert np.allclose(exact, 0.0) and np.allclose(off, 1.0)
    low, high = R.interval([exact, exact], [off])
    assert low == pytest.approx(-1.0) and high == pytest.approx(-1.0)
    identity = np.arange(4)[None, :]
    assert R.rmse_draws(ratings + np.array([1.0, 0, 0, 1.0]), ratings, identity)[0] == pytest.approx(np.sqrt(0.5))


def test_bleu_draws_of_the_identity_draw_equal_corpus_bleu():
    hyps = [["great", "strings"], ["works", "well", "for", "me"], ["nice"]]
    refs = [["great", "strings", "here"], ["works", "for", "me"], ["not", "nice"]]
    stats = [tm.bleu_statistics(h, r) for h, r in zip(hyps, refs)]
    stacked = tuple(np.stack([s[k] for s in stats]) for k in range(4))
    draws = np.vstack([np.arange(3), np.array([0, 0, 0])])
    values = R.bleu_draws(stacked, draws)
    assert values[0] == pytest.approx(tm.bleu(hyps, refs))
    assert values[1] == pytest.approx(tm.bleu([hyps[0]] * 3, [refs[0]] * 3))


def test_goal_lines_need_the_paired_interval_and_more_than_a_seed_std():
    rng = np.random.default_rng(0)
    n = 50
    draws = R.resample_indices(n, 100)
    ratings = rng.uniform(1, 5, n)

    def entry(noise, seeds=2):
        values, draw = [], []
        for s in range(seeds):
            p = ratings + rng.normal(0, noise, n)
            values.append(float(np.sqrt(np.mean((p - ratings) ** 2))))
            draw.append(R.rmse_draws(p, ratings, draws))
        return {"seeds": list(range(seeds)), "values": {"rmse": values}, "draws": {"rmse": draw}, "info": []}

    results = {"semax": entry(0.2), R.MF: entry(1.0), R.BASELINE: entry(1.0, 1), R.SVD: entry(1.0)}
    summary = R.summarize({"results": results})
    goal = next(g for g in summary["goals"] if g["goal"].startswith("semax"))
    assert goal["met"]
    results["semax"] = entry(0.99)
    goal = next(g for g in R.summarize({"results": results})["goals"] if g["goal"].startswith("semax"))
    assert not goal["met"]


def test_a_comparison_is_better_only_past_the_interval_and_the_larger_seed_std():
    rng = np.random.default_rng(3)

    def entry(values, shift):
        draws = [shift + 0.001 * rng.standard_normal(200) for _ in values]  # every draw apart from the other's
        return {"seeds": list(range(len(values))), "values": {"rmse": list(values)}, "draws": {"rmse": draws},
                "info": []}

    def verdict(family_values):
        results = {"semax": entry(family_values, 0.90), R.MF: entry([0.95, 0.95], 0.95)}
        found = {(c["a"], c["b"]): c for c in R.summarize({"results": results})["comparisons"]}
        return found[("semax", R.MF)]

    spread = verdict([0.80, 1.00])  # mean 0.90: 0.05 below mf, the interval far from 0, seed std 0.14
    assert spread["verdict"] == "no difference (within one seed std)" and not spread["beats"]
    assert spread["high"] < 0 and spread["larger_seed_std"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    tight = verdict([0.899, 0.901])
    assert tight["verdict"] == "A better" and tight["beats"]


def test_eval_at_best_reads_the_kept_epochs_eval_rating_and_perplexity():
    history = {"val_rating_rmse": [1.0, 0.9, 0.95], "val_summary_perplexity": [90.0, 80.0, 70.0],
               "val_loss": [3.0, 2.0, 2.5], "rating_rmse": [0.8, 0.7, 0.6]}
    summary = {"best_epoch": 2, "history": history}
    assert R.eval_at_best(summary) == {"rating_rmse": 0.9, "summary_perplexity": 80.0}
    assert R.eval_at_best({"best_epoch": None, "history": {}}) == {}
    # A generator stage after it: the perplexity is the stage's, at the stage's kept epoch.
    stage = {"monitor": "val_summary_perplexity", "best_value": 60.0, "best_epoch": 5}
    assert R.eval_at_best({**summary, "generator_stage": stage}) == {"rating_rmse": 0.9, "summary_perplexity": 60.0}


def test_a_saved_run_is_reported_with_its_goals_examples_and_eval_lines(tmp_path):
    import json
    import pickle

    rng = np.random.default_rng(1)
    n, texts = 40, 6
    draws, text_draws = R.resample_indices(n, 50), R.resample_indices(texts, 50, seed=1)
    ratings = rng.uniform(1, 5, n)
    refs = [s.split() for s in ("great strings for the price", "works well on my bass", "a nice cable for stage",
                                "great tuner for the money", "ok but too quiet", "good picks and a good case")]

    def rated(noise, seeds):
        out = {"seeds": list(seeds), "values": {"rmse": []}, "draws": {"rmse": []}, "info": []}
        for _ in seeds:
            p = ratings + rng.normal(0, noise, n)
            out["values"]["rmse"].append(float(np.sqrt(np.mean((p - ratings) ** 2))))
            out["draws"]["rmse"].append(R.rmse_draws(p, ratings, draws))
        return out

    def text(entry, hypotheses, seeds):
        stats = [tm.bleu_statistics(h, r) for h, r in zip(hypotheses, refs)]
        stacked = tuple(np.stack([s[k] for s in stats]) for k in range(4))
        rouge = tm.pairwise_rouge(hypotheses, refs)["rouge_l"]
        for k, v in tm.text_metrics(hypotheses, refs).items():
            entry["values"][k] = [100.0 * v] * len(seeds)
        entry["draws"]["bleu_4"] = [100.0 * R.bleu_draws(stacked, text_draws)] * len(seeds)
        entry["draws"]["rouge_l"] = [100.0 * R.mean_draws(rouge, text_draws)] * len(seeds)
        entry["hypotheses"] = hypotheses
        return entry

    seeds = (42, 43)
    results = {R.MF: rated(1.0, seeds), R.BASELINE: rated(1.0, [None]), R.SVD: rated(1.0, seeds),
               "review_mt": text(rated(0.3, seeds), refs, seeds),
               R.RETRIEVAL: text({"seeds": [None], "values": {}, "draws": {}, "info": []}, [["great"]] * texts,
                                 [None]),
               R.ATT2SEQ: text({"seeds": list(seeds), "values": {}, "draws": {}, "info": []}, [["great"]] * texts,
                               seeds)}
    results["review_mt"]["info"] = [{"best_epoch": 3, "epochs_run": 5, "seconds": 1.0,
                                     "eval": {"rating_rmse": 0.93, "summary_perplexity": 110.0}}] * 2
    run_out = {"meta": {"command": "python -m bench.review_text", "commit": "abc", "machine": {}, "date": "d",
                        "seconds": 1.0, "load_average_start": [0.0], "load_average_end": [0.0]},
               "settings": {"description": "x.yaml", "split": "hash", "seeds": list(seeds), "test_rows": n,
                            "test_rows_with_text": texts, "train_rows": 100, "eval_rows": 10, "target": "summary",
                            "max_length": 12, "svd": {}, "liked_threshold": 4.0, "resamples": 50, "overrides": {},
                            "att2seq": {}},
               "results": results,
               "examples": [{"user": "u", "item": "i", "rating": 5.0, "reference": "great strings for the price",
                             "review_mt": "great strings for the price", R.RETRIEVAL: "great"}]}
    saved = tmp_path / "run.pkl"
    saved.write_bytes(pickle.dumps(run_out))
    assert R.main(["--from_run", str(saved), "--out", str(tmp_path), "--name", "t"]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    generation = next(g for g in report["goals"] if g["goal"].startswith("review_mt above"))
    assert generation["met"]  # it writes the references; both peers write "great"
    assert "draws" not in report["results"]["review_mt"]
    verdicts = {(c["a"], c["b"], c["metric"]): c["verdict"] for c in report["comparisons"]}
    assert verdicts[("review_mt", R.RETRIEVAL, "bleu_4")] == "A better"
    md = (tmp_path / "t.md").read_text()
    assert "review_mt: rating_rmse 0.9300, summary_perplexity 110.0000" in md
    assert "reference \"great strings for the price\"" in md

    # Ablations run later with --no_peers, and a re-run peer, go into the same report (--replace twice).
    ablation = {**run_out, "results": {"review_mt rating only": rated(1.0, seeds)},
                "settings": {**run_out["settings"], "variants": [{"name": "review_mt rating only",
                                                                  "family": "review_mt", "overrides": []}]}}
    peer = {**run_out, "results": {R.ATT2SEQ: results[R.ATT2SEQ]}, "meta": {**run_out["meta"], "commit": "def"}}
    (tmp_path / "ablation.pkl").write_bytes(pickle.dumps(ablation))
    (tmp_path / "peer.pkl").write_bytes(pickle.dumps(peer))
    assert R.main(["--from_run", str(saved), "--out", str(tmp_path), "--name", "t2",
                   "--replace", f"review_mt rating only={tmp_path / 'ablation.pkl'}",
                   "--replace", f"{R.ATT2SEQ}={tmp_path / 'peer.pkl'}"]) == 0
    report = json.loads((tmp_path / "t2.json").read_text())
    assert report["meta"]["commit"] == "abc + review_mt rating only from abc + att2seq from def"
    verdicts = {(c["a"], c["b"], c["metric"]): c["verdict"] for c in report["comparisons"]}
    assert verdicts[("review_mt", "review_mt rating only", "rmse")] == "A better"  # noise 0.3 against 1.0


def test_saved_runs_of_other_seeds_merge_seeded_models_and_keep_deterministic_ones_once():
    settings = {"description": "x", "split": "hash", "test_rows": 3, "test_rows_with_text": 2, "target": "summary",
                "max_length": 12, "resamples": 10}

    def saved(seed, rmse):
        return {"meta": {"command": f"c{seed}", "commit": "abc", "date": "d", "seconds": 1.0, "load_average_end": [0]},
                "settings": {**settings, "seeds": [seed]}, "examples": [],
                "results": {R.BASELINE: {"seeds": [None], "values": {"rmse": [0.9]}, "draws": {"rmse": [np.ones(10)]},
                                         "info": []},
                            R.MF: {"seeds": [seed], "values": {"rmse": [rmse]}, "draws": {"rmse": [np.full(10, rmse)]},
                                   "info": [{"best_epoch": seed}]}}}

    merged = R.merge_runs([saved(42, 0.8), saved(43, 1.0)])
    assert merged["settings"]["seeds"] == [42, 43]
    assert merged["results"][R.MF]["values"]["rmse"] == [0.8, 1.0]
    assert len(merged["results"][R.MF]["draws"]["rmse"]) == 2
    assert merged["results"][R.BASELINE]["seeds"] == [None] and merged["results"][R.BASELINE]["values"]["rmse"] == [0.9]
    assert merged["meta"]["command"] == "c42 + c43"
    other = saved(44, 0.9)
    other["settings"]["test_rows"] = 4
    with pytest.raises(ValueError, match="test_rows"):
        R.merge_runs([saved(42, 0.8), other])


def test_an_override_reaches_every_family_that_takes_it_training_knobs_included():
    # `--hparam max_epochs=N` is a training knob (inside the record's `training`): it applies
    # to every family, where a family-only knob applies only where it exists.
    assert R._known("review_mt", "max_epochs") and R._known("mf", "patience")
    assert R._known("review_mt", "beam_width") and not R._known("mf", "beam_width")


def test_att2seq_takes_review_mts_training_knobs_decoding_and_every_epoch_a_generator_may_train():
    from models.registry import get_family

    base = get_family("review_mt").hparams().override({"learning_rate": "0.01", "beam_width": "4"})
    got = R.att2seq_settings(base)
    assert got["learning_rate"] == 0.01 and got["batch_size"] == base.training.batch_size
    assert got["max_epochs"] == base.training.max_epochs + base.generator_epochs
    assert got["decode"] == {"beam_width": 4, "length_penalty": base.length_penalty, "min_length": base.min_length}


def test_variants_are_named_all_by_default_none_for_the_peers_alone_and_an_unknown_name_is_an_error():
    assert [v.name for v in R.chosen_variants("")] == [v.name for v in R.VARIANTS]
    assert R.chosen_variants("none") == []
    assert [v.name for v in R.chosen_variants("nor_reviews,mf")] == ["mf", "nor_reviews"]  # VARIANTS' order
    with pytest.raises(ValueError, match="unknown \\['review_mtt'\\]"):
        R.chosen_variants("mf,review_mtt")


def test_a_sweep_trains_one_variant_once_per_value_and_names_each():
    chosen = R.chosen_variants("review_mt,review_mt adversarial")
    swept = R.swept_variants(chosen, ["review_mt adversarial:adversarial_start=0, 330"])
    assert [v.name for v in swept] == ["review_mt", "review_mt adversarial adversarial_start=0",
                                       "review_mt adversarial adversarial_start=330"]
    assert swept[2].hparams == {"target": R.TARGET, "adversarial": "true", "adversarial_start": "330"}
    twice = R.swept_variants(swept, ["review_mt adversarial adversarial_start=0:adversarial_weight=1"])
    assert twice[1].hparams["adversarial_weight"] == "1" and twice[1].hparams["adversarial_start"] == "0"
    with pytest.raises(ValueError, match="expected VARIANT:KNOB=V1,V2"):
        R.swept_variants(chosen, ["semax:dim=8"])  # not chosen
    with pytest.raises(ValueError, match="review_mt takes no hyperparameter 'nope'"):
        R.swept_variants(chosen, ["review_mt:nope=1"])


def test_att2seq_search_scores_the_eval_perplexity_of_the_kept_epoch_and_widens_to_an_interior_choice(monkeypatch):
    # The kept epoch is the lowest eval perplexity (its stopping rule), whatever the eval loss says.
    history = {"val_loss": [3.0, 2.0, 2.5], "val_summary_tokens_perplexity": [20.0, 9.0, 5.0], "loss": [1, 1, 1]}
    assert R.kept_epoch(history) == 2 and R.eval_perplexity(history) == 5.0
    fits = []

    def fake_fit(train, evaluation, context, target, hparams, seed, verbose=2):
        fits.append(dict(hparams))
        # Best at learning rate 0.09 (past the first grid's top, 0.03), patience 10 (past the
        # first grid's one value) and dropout 0.875 (an eighth of the id kept: past 0.25).
        value = (50 + abs(np.log(hparams["learning_rate"] / 0.09)) + abs(hparams["patience"] - 10) * 0.5
                 + abs(np.log((1 - hparams["dropout"]) / 0.125)))
        return None, {"loss": [1.0], "val_loss": [value], "val_summary_tokens_perplexity": [value]}

    monkeypatch.setattr(R, "fit_att2seq", fake_fit)
    base = {"dim": 8, "units": 8, "max_length": 4, "learning_rate": 0.003, "batch_size": 4, "max_epochs": 2,
            "patience": 1}
    tuned = R.tune_att2seq({}, {}, {}, "summary", base)
    assert tuned.chosen == {"learning_rate": pytest.approx(0.09), "patience": 10, R.ID_KEEP: 0.125}
    assert R.att2seq_with(base, tuned.chosen)["dropout"] == 0.875 and R.ID_KEEP not in R.att2seq_with(base, {})
    assert tuned.interior and tuned.score == pytest.approx(50.0)
    assert all(f["dim"] == 8 and f["max_epochs"] == 2 for f in fits)  # the base settings reach every fit
    assert len(fits) <= R.ATT2SEQ_EVALUATIONS


def test_att2seq_drops_its_id_embeddings_only_while_training():
    import tensorflow as tf

    features = {R.F.USER_IDX: tf.constant([1, 2, 3]), R.F.ITEM_IDX: tf.constant([1, 2, 1]),
                "summary": tf.constant([[3, 4, 0], [4, 0, 0], [5, 3, 4]])}
    for dropout, differs in ((0.0, False), (0.5, True)):
        model = R.att2seq_model(5, 4, 8, "summary", dim=6, units=6, max_length=3, seed=1, dropout=dropout)
        trained = model.decoder_inputs(features, True)[0].numpy()
        served = model.decoder_inputs(features, False)[0].numpy()
        assert (not np.allclose(trained, served)) == differs
        np.testing.assert_allclose(served, model.decoder_inputs(features)[0].numpy())  # inference by default


def test_a_peer_re_run_replaces_its_rows_settings_and_example_texts_and_nothing_else():
    settings = {"description": "x", "split": "hash", "test_rows": 3, "test_rows_with_text": 2, "target": "summary",
                "max_length": 12, "resamples": 10, "seeds": [42, 43]}

    def saved(att2seq_value, lr, mf=True):
        results = {R.ATT2SEQ: {"seeds": [42, 43], "values": {"rouge_l": [att2seq_value] * 2}, "draws": {},
                               "info": []}}
        if mf:
            results[R.MF] = {"seeds": [42, 43], "values": {"rmse": [0.9, 0.91]}, "draws": {}, "info": []}
        return {"meta": {"command": f"c{lr}", "commit": "abc", "date": "d", "seconds": 1.0},
                "settings": {**settings, "att2seq": {"learning_rate": lr}}, "results": results,
                "examples": [{"user": "u", "item": "i", "reference": "r", R.ATT2SEQ: f"text {lr}",
                              **({R.MF: "-"} if mf else {})}]}

    out = R.replace_models(saved(7.0, 0.003), saved(9.0, 0.01, mf=False), [R.ATT2SEQ])
    assert out["results"][R.ATT2SEQ]["values"]["rouge_l"] == [9.0, 9.0]
    assert out["results"][R.MF]["values"]["rmse"] == [0.9, 0.91]  # kept as measured
    assert out["settings"]["att2seq"] == {"learning_rate": 0.01}
    assert out["examples"][0][R.ATT2SEQ] == "text 0.01" and out["examples"][0][R.MF] == "-"
    assert out["meta"]["command"] == "c0.003 + att2seq from c0.01"
    other_seeds = saved(9.0, 0.01)
    other_seeds["results"][R.ATT2SEQ]["seeds"] = [42]
    with pytest.raises(ValueError, match="re-run on seeds \\[42\\]"):
        R.replace_models(saved(7.0, 0.003), other_seeds, [R.ATT2SEQ])
    with pytest.raises(ValueError, match="has no 'semax'"):
        R.replace_models(saved(7.0, 0.003), saved(9.0, 0.01), ["semax"])


def test_ablations_run_later_are_added_to_a_report_with_their_variant_and_the_rest_kept():
    settings = {"description": "x", "split": "hash", "test_rows": 3, "test_rows_with_text": 2, "target": "summary",
                "max_length": 12, "resamples": 10, "seeds": [42, 43]}
    mf = {"seeds": [42, 43], "values": {"rmse": [0.9, 0.91]}, "draws": {}, "info": []}
    report = {"meta": {"command": "all", "commit": "abc", "date": "d", "seconds": 5.0},
              "settings": {**settings, "variants": [{"name": R.MF, "family": "mf", "overrides": []}],
                           "svd": {"n_factors": 20}},
              "results": {R.MF: mf}, "examples": [{"user": "u", "item": "i", "reference": "r", R.MF: "-"}]}
    ablation = {"seeds": [42, 43], "values": {"rmse": [0.95, 0.96]}, "draws": {}, "info": []}
    variant = {"name": "semax rating only", "family": "semax", "overrides": [["text_task", "false"]]}
    later = {"meta": {"command": "ablations", "commit": "def", "date": "e", "seconds": 2.0},
             "settings": {**settings, "variants": [variant]},  # run with --no_peers: no peer settings
             "results": {"semax rating only": ablation}, "examples": [{"user": "u", "item": "i", "reference": "r"}]}
    out = R.replace_models(report, later, ["semax rating only"])
    assert out["results"]["semax rating only"]["values"]["rmse"] == [0.95, 0.96]
    assert out["results"][R.MF] is mf and out["settings"]["svd"] == {"n_factors": 20}
    assert [v["name"] for v in out["settings"]["variants"]] == [R.MF, "semax rating only"]
    assert out["meta"]["seconds"] == 7.0 and out["meta"]["commit"] == "abc + semax rating only from def"
    again = R.replace_models(out, later, ["semax rating only"])  # replacing it again adds no second record
    assert [v["name"] for v in again["settings"]["variants"]] == [R.MF, "semax rating only"]

"""docs/benchmarks/ and the README's family table are what bench/render_docs.py renders from
bench/results/, byte for byte, so no figure can drift from the results file it comes from;
every results file says which command, commit, machine and date produced it."""

import json
import os
import re
import shutil

import pytest

from bench import render_docs

REPO = render_docs.REPO_ROOT


def _tree(root):
    out = {}
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    readme = out / "README.md"
    shutil.copy(render_docs.README, readme)
    render_docs.render(render_docs.RESULTS_DIR, str(out / "benchmarks"), str(readme))
    return out


def test_the_checked_in_pages_are_what_the_renderer_writes(rendered):
    expected = _tree(str(rendered / "benchmarks"))
    checked_in = _tree(render_docs.DOCS_DIR)
    assert sorted(checked_in) == sorted(expected), "run `make docs`"
    stale = [name for name in expected if checked_in[name] != expected[name]]
    assert stale == [], f"pages differ from their results files, run `make docs`: {stale}"


def test_the_readme_family_table_is_what_the_renderer_writes(rendered):
    with open(render_docs.README, "rb") as f:
        assert f.read() == (rendered / "README.md").read_bytes(), "run `make docs`"


def test_every_results_file_records_command_commit_machine_and_date():
    results = render_docs.results_files()
    assert len(results) > 10
    missing = {r.name: r.provenance.missing() for r in results if r.provenance.missing()}
    assert missing == {}


def test_every_measured_figure_of_the_readme_is_in_the_rendered_family_table():
    with open(render_docs.README) as f:
        text = f.read()
    start, end = text.index(render_docs.BEGIN), text.index(render_docs.END)
    outside = text[:start] + text[end:]
    # Measured figures: metrics (three or more decimals, not a dotted version), times, shares.
    figures = r"(?<![\d.])\d+\.\d{3,}(?![\d.])|\b\d+(?:\.\d+)? ?(?:s|ms|min|µs)\b|\d+(?:\.\d+)?%"
    assert re.findall(figures, outside) == []
    assert re.findall(r"\b0\.\d{4}\b", text[start:end]), "the table has no figures"
    assert len(text.splitlines()) <= 400


def _write(directory, name, rows, markdown):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name + ".json"), "w") as f:
        json.dump(rows, f)
    with open(os.path.join(directory, name + ".md"), "w") as f:
        f.write(markdown)


FOOTER = ('\nProduced by: `python -m bench.topk --seeds 42`\nCommit: abc1234\n'
          'Machine: {"cpu": "CPU X", "cores": 2, "python": "3.10.13", "load_average_1m": 0.5, '
          '"date": "2026-12-01 10:00 UTC"}\n')


def test_a_page_states_provenance_and_goals_first_and_keeps_the_tables(tmp_path):
    results = tmp_path / "results"
    markdown = ("# Protocol K\n\nIntro.\n\n| model | ndcg |\n|---|---|\n| two_tower | 0.1851 |\n\n"
                "## Goals\n\n- two_tower ndcg >= 0.19: not met\n" + FOOTER)
    _write(str(results), "topk", [{"model": "two_tower", "ndcg_at_10": 0.1851}], markdown)
    _write(str(results), "topk_tuning", {"two_tower": {}}, "")
    os.remove(results / "topk_tuning.md")
    [result] = render_docs.results_files(str(results))
    assert result.extras == ["topk_tuning.json"]
    page = render_docs.render_page(result)
    lines = page.splitlines()
    assert lines[0] == "# Protocol K"
    assert "| command | `python -m bench.topk --seeds 42` |" in lines
    assert "| commit | abc1234 |" in lines
    assert "| machine | CPU X, 2 cores, Python 3.10.13, 1-minute load 0.5 at the start |" in lines
    assert "| date | 2026-12-01 10:00 UTC |" in lines
    assert lines.index("## Goals") < lines.index("| two_tower | 0.1851 |")
    assert page.count("not met") == 1 and "Produced by" not in page
    assert "[topk_tuning.json](../../bench/results/topk_tuning.json)" in page


def test_provenance_reads_the_bullet_form_and_names_what_is_missing():
    bullets = "# Serving\n\n- command: `python -m bench.serving`\n- machine: 2 CPUs\n- date: 2026-11-23 14:49 UTC\n"
    p = render_docs.provenance(bullets)
    assert (p.command, p.machine, p.date) == ("python -m bench.serving", "2 CPUs", "2026-11-23 14:49 UTC")
    assert p.missing() == ["commit"]
    assert render_docs.provenance(bullets + "- Commit: 1a2b3c4.\n").commit == "1a2b3c4"
    assert render_docs.provenance("# x\n\nno footer\n").missing() == ["command", "commit", "machine", "date"]


def test_a_results_file_without_its_markdown_is_an_error_naming_it(tmp_path):
    (tmp_path / "orphan.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="orphan.json has no orphan.md"):
        render_docs.results_files(str(tmp_path))


def test_render_removes_the_page_of_a_pruned_results_file_and_fills_the_family_table(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    _write(str(results), "topk", [{"model": "two_tower", "ndcg_at_10": 0.19044, "ndcg_std": 0.0002}], "# K\n" + FOOTER)
    os.makedirs(docs)
    (docs / "old_benchmark.md").write_text("stale")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{render_docs.BEGIN}\nold\n{render_docs.END}\n\nafter\n")
    families = [("two_tower", "retrieval", "items", "retrieve"), ("mf_dnn_liked", "liked", "liked", "score")]
    render_docs.render(str(results), str(docs), str(readme), families=families)
    assert sorted(os.listdir(docs)) == ["README.md", "topk.md"]
    text = readme.read_text()
    assert "[test NDCG@10 0.1904 ± 0.0002 (protocol K)](docs/benchmarks/topk.md)" in text
    assert "| `mf_dnn_liked` | liked | liked | score | not benchmarked on its own |" in text
    assert text.endswith(f"{render_docs.END}\n\nafter\n") and "old" not in text


def test_a_headline_whose_results_file_is_gone_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench/results/topk.json"):
        render_docs.render_family_table([], [("two_tower", "retrieval", "items", "retrieve")])


# --- Paired comparisons over seeds ------------------------------------------------------------

def _dtrn_runs(seeds, values):
    """A bench.dtrn runs file on one dataset: {variant: {task: [value per seed]}}."""
    per = {v: {"seeds": list(seeds), **{f"test/{t}": list(vals) for t, vals in tasks.items()}}
           for v, tasks in values.items()}
    return {"metrics": {"movielens": {"rating": "rmse", "liked": "auc"}}, "results": {"movielens": per}}


def test_a_page_with_per_seed_runs_shows_each_comparison_with_its_interval_and_verdict(tmp_path):
    results = tmp_path / "results"
    markdown = "# DTRN\n\n## Goals\n\n- dtrn vs mmoe: met\n\n## Body\n\nTables.\n" + FOOTER
    _write(str(results), "dtrn", [], markdown)
    runs = _dtrn_runs([42, 43, 44], {
        "dtrn": {"rating": [0.850, 0.860, 0.840], "liked": [0.80, 0.70, 0.90]},
        "mmoe": {"rating": [0.870, 0.875, 0.865], "liked": [0.79, 0.72, 0.88]},
    })
    (results / "dtrn_runs.json").write_text(json.dumps(runs))
    [result] = render_docs.results_files(str(results))
    page = render_docs.render_page(result)
    lines = page.splitlines()
    rating = next(line for line in lines if line.startswith("| movielens | rating | rmse | dtrn | mmoe |"))
    liked = next(line for line in lines if line.startswith("| movielens | liked | auc | dtrn | mmoe |"))
    assert rating.endswith("| dtrn beats mmoe |")  # lower RMSE with every seed
    assert "| 0.8500 ± 0.0100 | 0.8700 ± 0.0050 | -0.0200 |" in rating
    assert liked.endswith("| no difference (the interval includes 0 and within one seed std) |")
    assert lines.index("- dtrn vs mmoe: met") < lines.index("## Paired comparisons") < lines.index("## Body")


def test_a_page_without_per_seed_values_says_it_has_no_paired_interval_and_names_its_command(tmp_path, monkeypatch):
    monkeypatch.setitem(render_docs.NO_PAIRED_INTERVAL, "one_run", "each model ran once")
    results = tmp_path / "results"
    _write(str(results), "one_run", [{"model": "ease", "ndcg_at_10": 0.18}],
           "# K\n\n- ease beats two_tower\n" + FOOTER)
    [result] = render_docs.results_files(str(results))
    page = render_docs.render_page(result)
    assert "No paired interval exists for this page" in page and "beats another" in page
    assert "this page came from `python -m bench.topk --seeds 42`." in page


def test_every_page_named_by_the_paired_registries_exists_and_its_means_are_its_rows():
    names = {r.name: r for r in render_docs.results_files()}
    registries = (set(render_docs.PAIRED_OVER_SEEDS), set(render_docs.NO_PAIRED_INTERVAL), set(render_docs.EVAL_ONLY))
    assert set.union(*registries) <= set(names)
    assert sum(map(len, registries)) == len(set.union(*registries))  # a page is in one registry at most
    for page in render_docs.EVAL_ONLY:  # an eval-only page's results read the eval split only
        rows = names[page].rows
        assert rows["split"] == "eval" and "--eval_only" in rows["meta"]["command"], page
    for page, sources in render_docs.PAIRED_OVER_SEEDS.items():
        result = names[page]
        for runs_name, pairs in sources:
            runs = render_docs._runs_file(result, runs_name)
            rows = pairs(runs)
            assert rows, f"{page}: no comparisons read from {runs_name}_runs.json"
            for dataset, task, metric, p in rows:
                variants = [r for r in names[runs_name].rows
                            if r["dataset"] == dataset and r["task"] == task and r["metric"] == metric
                            and r["variant"] == p.b and r["seeds"] == len(p.seeds)]
                for row in variants:  # B over all of its seeds: its mean is the table's value
                    assert round(p.b_mean, 4) == round(row["value"], 4), (page, dataset, task, metric, p.b)


def test_a_bullet_date_ends_at_its_line():
    # bench.serving's pages carry `- date: ...` with no ';' after it: the date must not run on
    # into the rest of the page (the index row would then hold the page's tables).
    page = "# Serving benchmark\n\n- command: `python -m bench.serving`\n- date: 2026-11-23 14:49 UTC\n\n| a |\n"
    assert render_docs.provenance(page).date == "2026-11-23 14:49 UTC"


def test_a_page_measured_before_a_data_fix_says_so_and_a_rerun_must_leave_the_registry(tmp_path, monkeypatch):
    fix = render_docs.DataFix("f1x0000", "2026-12-02 09:00", "labels within their split")
    monkeypatch.setitem(render_docs.MEASURED_BEFORE, "topk", fix)
    results = tmp_path / "results"
    _write(str(results), "topk", [{"model": "two_tower", "ndcg_at_10": 0.1851}], "# Protocol K\n" + FOOTER)
    [result] = render_docs.results_files(str(results))
    page = render_docs.render_page(result)
    assert "## Measured before a fix of its data" in page and "predate f1x0000 (2026-12-02 09:00 UTC)" in page
    assert "(before f1x0000's data fix)" in render_docs.render_index([result])
    table = render_docs.render_family_table([result], [("two_tower", "towers", "rating", "recommend")])
    assert "(docs/benchmarks/topk.md), measured before f1x0000's data fix |" in table
    # Re-run after the fix (its date is later): the stale entry is an error, not a silent warning.
    monkeypatch.setitem(render_docs.MEASURED_BEFORE, "topk", render_docs.DataFix("f1x0000", "2026-12-01 09:00", "x"))
    with pytest.raises(ValueError, match="topk.md is dated 2026-12-01 10:00, not before f1x0000.*remove it"):
        render_docs.render_page(result)


def test_the_index_counts_goals_whatever_their_case():
    goals = ["- MET: a", "- NOT MET: b", "- not met: not shown, c", "- met", "- a note"]
    assert render_docs._goal_state(goals) == "2 met, 2 not met"

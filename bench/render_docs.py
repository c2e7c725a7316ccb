"""Renders docs/benchmarks/ and the README's family table from bench/results/.

A results file is the pair `<name>.json` (the rows) and `<name>.md` (the tables, goal lines and
footer that the benchmark command wrote with `bench.common.write_results` or its own
`render_markdown`). Each page of docs/benchmarks/ is that markdown under a header that states
the command, commit, machine and date that produced it and the goal lines first; files named
`<name>_runs.json`, `_tuning.json`, `_gates.json` or `_slices.json` are the extra rows of
`<name>` and are linked from its page. The README's family table (between the FAMILY_TABLE
markers) takes each family's headline figure from a results file's rows. After a page's goals
comes its "Paired comparisons" section: the comparisons of its `_runs.json` over seeds, or why its
results allow no paired interval (`paired_section`). `make docs` runs this;
tests/test_docs.py checks that the checked-in pages are what it renders.

    python -m bench.render_docs [--results bench/results] [--docs docs/benchmarks] [--readme README.md]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
DOCS_DIR = os.path.join(REPO_ROOT, "docs", "benchmarks")
README = os.path.join(REPO_ROOT, "README.md")
AUXILIARY = ("_runs", "_tuning", "_gates", "_slices")
BEGIN, END = "<!-- FAMILY_TABLE: rendered by `make docs` from bench/results; do not edit -->", "<!-- /FAMILY_TABLE -->"
GOAL_HEADING = re.compile(r"^#+ Goal", re.IGNORECASE)


@dataclasses.dataclass
class Provenance:
    """Who produced a results file: its command, commit, machine and date (None when absent)."""

    command: Optional[str]
    commit: Optional[str]
    machine: Optional[str]
    date: Optional[str]

    def missing(self) -> List[str]:
        return [f.name for f in dataclasses.fields(self) if not getattr(self, f.name)]


def _last(pattern: str, text: str) -> Optional[str]:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    return found[-1].strip() if found else None


def _machine(value: str) -> Tuple[str, Optional[str]]:
    """`Machine: {...}` as `cpu, N cores, load L` and its date (text after the record, such as
    bench.catalogue's load at the end, is dropped); other forms as written."""
    braces = re.match(r"^(\{.*\})", value)
    if braces:
        value = braces.group(1)
    try:
        record = json.loads(value)
    except ValueError:
        try:
            record = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value, None
    if not isinstance(record, dict):
        return value, None
    text = f"{record.get('cpu', '?')}, {record.get('cores', '?')} cores, Python {record.get('python', '?')}, " \
           f"1-minute load {record.get('load_average_1m', '?')} at the start"
    return text, record.get("date")


def provenance(markdown: str) -> Provenance:
    """The command, commit, machine and date a benchmark wrote into its markdown: the footer
    of `write_results` (`Produced by:`, `Commit:`, `Machine: {...}`) or the bullet lists of
    bench.serving / bench.reliability / bench.ingest (`- command:`, `- machine:`, `- date:`);
    the last of each wins (a joined file ends with the command that joined it)."""
    command = _last(r"^Produced by: `(.+)`\s*$", markdown) or _last(r"^- [Cc]ommand: `([^`]+)`", markdown)
    commit = _last(r"^Commit: (.+)$", markdown) or _last(r"^- [Cc]ommit: (.+?)\.?$", markdown)
    machine_line = _last(r"^Machine: (.+)$", markdown)
    date = None
    if machine_line:
        machine, date = _machine(machine_line)
    else:
        machine = _last(r"^- [Mm]achine: (.+)$", markdown)
    date = date or _last(r"^- date: ([^;\n]+)", markdown) or _last(r"\(started (\S+?)\)", markdown)
    return Provenance(command, commit, machine, date)


def _is_footer(line: str) -> bool:
    return bool(re.match(r"^(Produced by: `|Commit: |Machine: )", line))


def split_page(markdown: str) -> Tuple[str, List[str], List[str]]:
    """A benchmark's markdown as (title, goal lines, the rest without the footer lines)."""
    lines = markdown.rstrip("\n").splitlines()
    title = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else ""
    body = lines[1:] if title else lines
    goals: List[str] = []
    rest: List[str] = []
    in_goals = False
    for line in body:
        if line.startswith("#"):
            in_goals = bool(GOAL_HEADING.match(line))
            if in_goals:
                continue
        if _is_footer(line):
            continue
        if in_goals:
            if line.strip():
                goals.append(line)
        else:
            rest.append(line)
    while rest and not rest[0].strip():
        rest.pop(0)
    collapsed: List[str] = []
    for line in rest:
        if not line.strip() and collapsed and not collapsed[-1].strip():
            continue
        collapsed.append(line)
    while collapsed and not collapsed[-1].strip():
        collapsed.pop()
    return title, goals, collapsed


@dataclasses.dataclass
class ResultsFile:
    """One results file: its name (relative to the results directory, no suffix), rows and markdown."""

    name: str
    rows: Any
    markdown: str
    extras: List[str]
    directory: str = ""

    @property
    def provenance(self) -> Provenance:
        return provenance(self.markdown)


def results_files(results_dir: str = RESULTS_DIR) -> List[ResultsFile]:
    """Every results file under `results_dir` (sub-directories too), sorted by name; an error
    names a `.json` whose `.md` is missing."""
    found = []
    for root, _, names in os.walk(results_dir):
        for file_name in sorted(names):
            if not file_name.endswith(".json"):
                continue
            stem = file_name[:-len(".json")]
            if stem.endswith(AUXILIARY):
                continue
            name = os.path.relpath(os.path.join(root, stem), results_dir).replace(os.sep, "/")
            md_path = os.path.join(root, stem + ".md")
            if not os.path.exists(md_path):
                raise FileNotFoundError(f"{os.path.join(root, file_name)} has no {stem}.md beside it: a results "
                                        "file is the rows and the markdown its command wrote")
            with open(os.path.join(root, file_name)) as f:
                rows = json.load(f)
            with open(md_path) as f:
                markdown = f.read()
            extras = sorted(n for n in names if n.endswith(".json") and n != file_name
                            and any(n == stem + suffix + ".json" for suffix in AUXILIARY))
            found.append(ResultsFile(name, rows, markdown, extras, root))
    return sorted(found, key=lambda r: r.name)


def _goal_state(goals: Sequence[str]) -> str:
    met = sum(1 for g in goals if re.search(r"\bmet\b", g, re.I) and not re.search(r"not met", g, re.I))
    not_met = sum(1 for g in goals if re.search(r"not met", g, re.I))
    if not goals:
        return "no goal"
    return f"{met} met, {not_met} not met" if met + not_met else f"{len(goals)} lines"


def render_page(result: ResultsFile) -> str:
    """The docs page of one results file."""
    title, goals, rest = split_page(result.markdown)
    source = "../" * (result.name.count("/") + 2) + "bench/results/" + result.name
    p = result.provenance
    lines = [f"# {title or result.name}", "",
             f"<!-- Rendered by `make docs` (bench/render_docs.py) from bench/results/{result.name}.json and "
             ".md; edit those (run the command again), not this page. -->", "",
             "| | |", "|---|---|",
             f"| command | `{p.command}` |" if p.command else "| command | not recorded |",
             f"| commit | {p.commit or 'not recorded'} |",
             f"| machine | {p.machine or 'not recorded'} |",
             f"| date | {p.date or 'not recorded'} |",
             f"| rows | [{result.name}.json]({source}.json)"
             + "".join(f", [{e}]({os.path.dirname(source)}/{e})" for e in result.extras) + " |", ""]
    lines += stale_section(result)
    if goals:
        lines += ["## Goals", ""] + goals + [""]
    lines += paired_section(result)
    lines += rest
    return "\n".join(lines).rstrip() + "\n"


def render_index(results: Sequence[ResultsFile]) -> str:
    """docs/benchmarks/README.md: every page with its title, date and goals."""
    lines = ["# Benchmarks", "",
             "<!-- Rendered by `make docs` (bench/render_docs.py) from bench/results; do not edit. -->", "",
             "One page per results file in `bench/results/`, each with the command, commit, machine and "
             "date that produced it. Rerun a page's command to reproduce it (the `make bench-*` targets "
             "of the Makefile run the usual ones), then `make docs`. Files superseded by a later run of the "
             "same benchmark leave `bench/results/`; git keeps them.", "",
             "| page | what it measures | date | goals |", "|---|---|---|---|"]
    for r in results:
        title, goals, _ = split_page(r.markdown)
        fix = measured_before(r)
        date = (r.provenance.date or "n/a") + (f" (before {fix.commit}'s data fix)" if fix else "")
        lines.append(f"| [{r.name}]({r.name}.md) | {title.replace('|', '/')} | {date} | "
                     f"{_goal_state(goals)} |")
    return "\n".join(lines) + "\n"


# --- Paired comparisons ------------------------------------------------------------------------
# Every comparison on a page shows each model's mean ± std over seeds and a paired interval of the
# difference; "beats" only where that interval excludes 0 and the difference exceeds the larger
# seed std (bench.common.PairedVerdict). Pages whose results keep a value per
# seed for every model are compared over seeds here (bench.common.seed_paired); pages whose
# benchmark already writes a paired bootstrap over test rows need nothing here; the others say
# that they have no paired interval and what a re-measure needs.

PAIRED_OVER_SEEDS_TEXT = (
    "Over seeds: the two models of a row ran with the same seeds on the same split; `diff` is the mean "
    "of the per-seed differences A - B and the interval its 95% t interval over those seeds (for RMSE "
    "lower is better). A row says \"beats\" only where the interval excludes 0 and the difference exceeds "
    "the larger of the two seed stds (the rule of every comparison in these pages), otherwise \"no "
    "difference\"; a goal line above compares means, and where it reads otherwise this table's verdict "
    "holds.")


def _runs_file(result: ResultsFile, name: str) -> Dict[str, Any]:
    path = os.path.join(result.directory, f"{name}_runs.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"the paired comparisons of {result.name} read {path}, which is missing")
    with open(path) as f:
        return json.load(f)


def _per_seed(entry: Dict[str, Any], key: str, where: str) -> Dict[int, float]:
    if key not in entry or "seeds" not in entry:
        raise KeyError(f"{where} has no per-seed {key!r} (keys {sorted(entry)})")
    if len(entry[key]) != len(entry["seeds"]):
        raise ValueError(f"{where}: {len(entry[key])} values of {key!r} for {len(entry['seeds'])} seeds")
    return dict(zip(entry["seeds"], entry[key]))


Row = Tuple[str, str, str, Any]  # dataset, task, metric, bench.common.SeedPaired


def dtrn_pairs(runs: Dict[str, Any]) -> List[Row]:
    """bench.dtrn's comparisons (a `_runs.json`): each DTRN variant against MMoE and against PLE,
    each ablation against dtrn, per dataset and task."""
    from bench.common import seed_paired

    out = []
    for dataset, per in runs["results"].items():
        pairs = [(v, ref) for v in ("dtrn", "dtrn_mmoe", "dtrn_ple") for ref in ("mmoe", "ple")]
        pairs += [(v, "dtrn") for v in ("no_refine", "no_hyper", "untyped")]
        for task, metric in runs["metrics"][dataset].items():
            for a, b in pairs:
                if a in per and b in per:
                    key = f"test/{task}"
                    out.append((dataset, task, metric, seed_paired(
                        a, _per_seed(per[a], key, f"{dataset}/{a}"), b, _per_seed(per[b], key, f"{dataset}/{b}"),
                        higher_is_better=metric != "rmse")))
    return out


def takd_pairs(runs: Dict[str, Any]) -> List[Row]:
    """bench.takd's comparisons (a `_runs.json`): the student against its teacher and against the
    student trained alone, every other student variant against the student and every other teacher
    variant against the teacher, per task of the pair and metric."""
    from bench.common import seed_paired

    out = []
    for dataset, tasks in runs["pairs"].items():
        per = runs["results"][dataset]
        teacher = next(k for k in per if k.endswith("/teacher"))
        student = next(k for k in per if k.endswith("/student"))
        alone = next(k for k in per if k.endswith("/student_alone"))
        pairs = [(student, teacher), (student, alone)]
        pairs += [(k, student) for k in per if k.startswith("takd_student/") and k not in (student, alone)]
        pairs += [(k, teacher) for k in per if not k.startswith("takd_student/") and k != teacher]
        for task in tasks:
            for metric in ("auc", "multi_auc"):
                key = f"test/{task}/{metric}"
                for a, b in pairs:
                    out.append((dataset, task, metric, seed_paired(
                        a.split("/", 1)[1], _per_seed(per[a], key, f"{dataset}/{a}"),
                        b.split("/", 1)[1], _per_seed(per[b], key, f"{dataset}/{b}"))))
    return out


def _seeds(seeds: Sequence[int]) -> str:
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(s) for s in ordered)


def paired_table(rows: Sequence[Row]) -> List[str]:
    """The rows as a markdown table: each model's mean ± std over the shared seeds, the mean
    per-seed difference with its interval, and the verdict."""
    lines = ["| dataset | task | metric | A | B | seeds | A mean ± std | B mean ± std | diff A - B | 95% t interval "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, task, metric, p in rows:
        lines.append(f"| {dataset} | {task} | {metric} | {p.a} | {p.b} | {_seeds(p.seeds)} | "
                     f"{p.a_mean:.4f} ± {p.a_std:.4f} | {p.b_mean:.4f} ± {p.b_std:.4f} | {p.diff:+.4f} | "
                     f"[{p.low:+.4f}, {p.high:+.4f}] | {p.verdict()} |")
    return lines


# page -> the runs files it compares over seeds and how to read their comparisons.
PAIRED_OVER_SEEDS: Dict[str, Tuple[Tuple[str, Callable[[Dict[str, Any]], List[Row]]], ...]] = {
    "dtrn": (("dtrn", dtrn_pairs),),
    "takd": (("takd", takd_pairs),),
    "takd_taobao": (("takd_taobao", takd_pairs),),
}

# page -> why its results allow no paired interval.
NO_PAIRED_INTERVAL: Dict[str, str] = {}  # none left: every page with a comparison keeps its paired values


@dataclasses.dataclass(frozen=True)
class DataFix:
    """A change of the data that models read (features or labels), after which earlier figures
    of the pages it touches are not today's: `date` is when it landed (UTC, `YYYY-MM-DD HH:MM`)."""

    commit: str
    date: str
    what: str


# page -> the data fix it predates: its models read what the fix changed, and it was not re-run since.
# None left: the last one, dtrn, was re-run after cd8c513 (out-of-fold item statistics, Taobao
# labels within a one-day horizon inside the row's split).
MEASURED_BEFORE: Dict[str, DataFix] = {}


def measured_before(result: ResultsFile) -> Optional[DataFix]:
    """The data fix `result` predates, or None; an error when its date is after the fix (it was
    re-run: the registry entry is stale and must go)."""
    fix = MEASURED_BEFORE.get(result.name)
    if fix is None:
        return None
    date = (result.provenance.date or "")[:16]
    if not date or date >= fix.date:
        raise ValueError(f"bench/results/{result.name}.md is dated {date or 'nowhere'}, not before {fix.commit} "
                         f"({fix.date}): remove it from MEASURED_BEFORE in bench/render_docs.py")
    return fix


def stale_section(result: ResultsFile) -> List[str]:
    """A warning at the top of a page measured before a data fix of what its models read."""
    fix = measured_before(result)
    if fix is None:
        return []
    return ["## Measured before a fix of its data", "",
            f"These figures predate {fix.commit} ({fix.date} UTC): {fix.what}. Its models read what that fix "
            "changed, so the figures are not those of today's code, and no comparison on this page holds for it "
            "until the command above is run again.", ""]


# page -> what it chose on the eval split: pages that read no test split, so they claim nothing
# on test and have no paired interval to show.
EVAL_ONLY: Dict[str, str] = {
    "review_text_alternatives_eval": "review_mt's training alternatives, seed 42",
    "review_text_adversarial_eval": "where review_mt's adversarial stage starts in the generator stage, seed 42",
    "review_text_adversarial_eval2": "the adversarial stage's start widened and its weight, seed 42",
    "review_text_adversarial_eval3": "the adversarial stage's weight widened, seed 42",
    "review_text_decoding_eval": "the generators' stopping rule and decoding, seed 42",
    "review_text_long_eval": "the generators stopped on the whole objective for up to 40 epochs, seed 42",
    "review_text_generator_stage_eval": "the generator stage after the rating's best epoch, and decoding, seed 42",
}


def paired_section(result: ResultsFile) -> List[str]:
    """The page's "Paired comparisons" section: its comparisons over seeds, or why it has none
    (and the command that produced it); no lines for a page in neither registry."""
    if result.name in PAIRED_OVER_SEEDS:
        lines = ["## Paired comparisons", "", PAIRED_OVER_SEEDS_TEXT, ""]
        for runs_name, pairs in PAIRED_OVER_SEEDS[result.name]:
            lines += [f"From `{runs_name}_runs.json`:", ""] + paired_table(pairs(_runs_file(result, runs_name))) + [""]
        return lines
    if result.name in EVAL_ONLY:
        return ["## Paired comparisons", "",
                f"None: this page reports the eval split only ({EVAL_ONLY[result.name]}), the values a setting is "
                "chosen by; it reads no test split and claims nothing on it.", ""]
    if result.name in NO_PAIRED_INTERVAL:
        command = result.provenance.command
        return ["## Paired comparisons", "",
                f"No paired interval exists for this page: {NO_PAIRED_INTERVAL[result.name]}. So no comparison "
                "on this page shows that one model beats another, whatever its means, goal lines or \"best\" "
                "say: read each as no difference shown. A paired interval needs a re-measure that keeps per-seed "
                "values on the same seeds (or per-user values on the same test users)"
                + (f"; this page came from `{command}`." if command else "."), ""]
    return []


# --- The README's family table ------------------------------------------------------------------

def _pick(rows: Sequence[Dict[str, Any]], **match: Any) -> Dict[str, Any]:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise ValueError(f"expected one row with {match}, found {len(found)}")
    return found[0]


def _value(value: float, std: Optional[float] = None) -> str:
    return f"{value:.4f}" + (f" ± {std:.4f}" if std else "")


@dataclasses.dataclass(frozen=True)
class Headline:
    """One family's headline figure: which results file, and how to read it from the rows."""

    family: str
    results: str
    figure: Callable[[Any], str]


def _mf_family(model: str) -> Callable[[Any], str]:
    def figure(rows):
        r = _pick(rows, model=model)
        return f"test RMSE {_value(r['rmse'], r.get('rmse_std'))} (protocol R)"
    return figure


def _topk(rows):
    r = _pick(rows, model="two_tower")
    return f"test NDCG@10 {_value(r['ndcg_at_10'], r.get('ndcg_std'))} (protocol K)"


def _sequential(model: str) -> Callable[[Any], str]:
    def figure(rows):
        r = _pick(rows, model=model, kind="family")
        return f"test NDCG@10 {_value(r['ndcg@10'], r.get('ndcg@10_std'))} (protocol S)"
    return figure


def _peterrec(rows):
    r = _pick(rows, kind="summary", task="next_like", mode="fine_all")
    return f"test next_like AUC {_value(r['test'], r.get('test_std'))}"


def _multitask(model: str, task: str = "buy", dataset: str = "taobao") -> Callable[[Any], str]:
    def figure(rows):
        r = _pick(rows, dataset=dataset, model=model, task=task, metric="auc")
        return f"test {task} AUC {_value(r['value'], r.get('std'))} ({dataset})"
    return figure


def _takd(variant: str) -> Callable[[Any], str]:
    def figure(rows):
        r = _pick(rows, dataset="movielens", variant=variant, task="loved", metric="auc")
        return f"test loved AUC {_value(r['value'], r.get('std'))} (movielens)"
    return figure


def _review_text(model: str) -> Callable[[Any], str]:
    def figure(results):
        r = _pick(results["rows"], model=model)
        return f"test RMSE {_value(r['rmse'], r.get('rmse_std'))} (Amazon reviews)"
    return figure


HEADLINES: Tuple[Headline, ...] = (
    Headline("mf", "mf_family", _mf_family("mf")),
    Headline("mf_history", "mf_family", _mf_family("mf_history")),
    Headline("mf_dnn", "mf_family", _mf_family("mf_dnn")),
    Headline("two_tower", "topk", _topk),
    Headline("sasrec", "sequential_all", _sequential("sasrec")),
    Headline("bert4rec", "sequential_all", _sequential("bert4rec")),
    Headline("nextitnet", "sequential_all", _sequential("nextitnet")),
    Headline("peterrec", "peterrec_mean_pooling", _peterrec),
    Headline("single_task", "multitask", _multitask("single_task")),
    Headline("shared_bottom", "multitask", _multitask("shared_bottom")),
    Headline("mmoe", "multitask", _multitask("mmoe")),
    Headline("ple", "multitask", _multitask("ple")),
    Headline("nmtr", "multitask", _multitask("nmtr")),
    Headline("dtrn", "multitask", _multitask("dtrn")),
    Headline("takd_teacher_dtrn", "takd", _takd("teacher")),
    Headline("takd_student", "takd", _takd("student")),
    Headline("semax", "review_text", _review_text("semax")),
    Headline("review_mt", "review_text", _review_text("review_mt")),
    Headline("nor_reviews", "review_text", _review_text("nor_reviews")),
)


def family_rows() -> List[Tuple[str, str, str, str]]:
    """(family, summary, tasks on MovieLens, served signatures) of every registered family."""
    from contract.datasets import dataset_spec
    from models.registry import FAMILIES

    movielens = dataset_spec("movielens")
    out = []
    for family in FAMILIES.values():
        try:
            tasks = ", ".join(t.name for t in family.task_specs(movielens))
        except ValueError:
            tasks = "n/a on MovieLens"
        out.append((family.name, family.summary, tasks, ", ".join(sorted(family.capabilities))))
    return out


def render_family_table(results: Sequence[ResultsFile], families: Sequence[Tuple[str, str, str, str]]) -> str:
    """The README's table of families, each with its headline figure linked to its page."""
    by_name = {r.name: r for r in results}
    headlines = {h.family: h for h in HEADLINES}
    lines = [BEGIN, "", "| family | what it models | tasks (MovieLens) | serves | headline (linked to its benchmark) |",
             "|---|---|---|---|---|"]
    for name, summary, tasks, serves in families:
        h = headlines.get(name)
        if h is None:
            headline = "not benchmarked on its own"
        else:
            if h.results not in by_name:
                raise FileNotFoundError(f"the headline of {name} reads bench/results/{h.results}.json, which is missing")
            page = by_name[h.results]
            fix = measured_before(page)
            headline = f"[{h.figure(page.rows)}](docs/benchmarks/{h.results}.md)" + \
                (f", measured before {fix.commit}'s data fix" if fix else "")
        lines.append(f"| `{name}` | {summary.replace('|', '/')} | {tasks} | {serves} | {headline} |")
    return "\n".join(lines + ["", END])


def replace_block(text: str, block: str) -> str:
    """`text` with the FAMILY_TABLE block replaced by `block`; an error when the markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no family table markers ({BEGIN!r} ... {END!r})")
    return text[:start] + block + text[end + len(END):]


def render(results_dir: str = RESULTS_DIR, docs_dir: str = DOCS_DIR, readme: Optional[str] = README,
           families: Optional[Sequence[Tuple[str, str, str, str]]] = None) -> Dict[str, str]:
    """Renders every page, the index and (when `readme` is given) the README's family table;
    returns {path: text} of what it wrote and removes pages whose results file is gone."""
    from common.io_utils import atomic_write

    results = results_files(results_dir)
    pages = {os.path.join(docs_dir, r.name + ".md"): render_page(r) for r in results}
    pages[os.path.join(docs_dir, "README.md")] = render_index(results)
    if readme:
        with open(readme) as f:
            text = f.read()
        table = render_family_table(results, family_rows() if families is None else families)
        pages[readme] = replace_block(text, table)
    for root, _, names in os.walk(docs_dir) if os.path.isdir(docs_dir) else ():
        for file_name in names:
            path = os.path.join(root, file_name)
            if file_name.endswith(".md") and path not in pages:
                os.remove(path)
    for path, text in pages.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, text)
    return pages


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS_DIR)
    parser.add_argument("--docs", default=DOCS_DIR)
    parser.add_argument("--readme", default=README, help="README whose family table to render ('' for none)")
    args = parser.parse_args(argv)
    written = render(args.results, args.docs, args.readme or None)
    print(f"wrote {len(written)} files under {args.docs}" + (f" and {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

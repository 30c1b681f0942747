"""Reports of a zoo run (issue 16): backends grouped by family, ours before the peers (time,
memory, error), the fastest implementation of each pattern at a glance against the other side,
and the error against full attention per family and input distribution, on a synthetic run with
a peer backend (``implementation`` "transformers") and Gaussian and structured inputs."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from harness.analyse import families
from harness.cli.app import main
from harness.present.family_tables import error_table, family_tables, glance_table
from harness.present.summary import summary_tables
from harness.store import storage
from tests.synthetic_runs import LONGFORMER, PEER_LONGFORMER, Series, write_run, write_zoo_run


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_zoo_run(tmp_path_factory.mktemp("zoo") / "run")


@pytest.fixture(scope="module")
def rows(zoo):
    return storage.read_results(zoo)


@pytest.fixture(scope="module")
def md(zoo):
    assert main(["report", str(zoo)]) == 0
    return (zoo / "report.md").read_text()


def test_backends_go_family_by_family_ours_before_the_peers(rows):
    # written peer first: the order of a sweep's --backends is not the report's
    assert rows["backend"].drop_duplicates().tolist()[2:4] == ["hf-longformer", "longformer"]
    order = families.ordered(rows[rows["inputs"] == "gaussian"])
    names = list(dict.fromkeys(order["backend"]))
    assert names == ["full-naive", "full-sdpa", "longformer", "hf-longformer", "bigbird"]
    assert families.family_order(rows.iloc[::-1]) == ["full", "bigbird", "longformer"]


def test_the_fastest_implementation_of_each_family_against_the_other_side(rows):
    best = families.fastest(rows).set_index(["inputs", "family", "seq_len"])
    # ours is fastest at 1K: against the fastest peer, 45 ms / 30 ms, twice the memory
    one = best.loc[("gaussian", "longformer", 1024)]
    assert (one["label"], one["implementation"]) == (LONGFORMER.label, "ours")
    assert (one["against"], one["against_implementation"]) == (
        PEER_LONGFORMER.label,
        "transformers",
    )
    assert one["time_ratio"] == pytest.approx(1.5) and one["memory_ratio"] == pytest.approx(2.0)
    # the peer at 8K (45 x 8^0.75 = 214 ms against 240 ms): against our fastest
    eight = best.loc[("structured", "longformer", 8192)]
    assert (eight["label"], eight["implementation"]) == (PEER_LONGFORMER.label, "transformers")
    assert eight["against"] == LONGFORMER.label
    assert eight["time_ratio"] == pytest.approx(240 / (45 * 8**0.75))
    assert eight["memory_ratio"] == pytest.approx(0.5)
    # no peer: the family's runner-up; alone: nothing to compare
    full = best.loc[("gaussian", "full", 2048)]
    assert (full["label"], full["against"], full["time_ratio"]) == ("full-sdpa", "full-naive", 4.0)
    assert pd.isna(best.loc[("gaussian", "bigbird", 2048), "against"])
    assert len(best) == 2 * 3 * 4  # inputs x families x lengths
    assert best["pattern"].unique().tolist() == ["full", "longformer", "bigbird"]


def test_implementations_of_other_patterns_of_a_family_are_not_compared(tmp_path):
    """lucidrains' blocks are BigBird without global and random blocks: set against our BigBird
    of that pattern, never against the default one, which attends more pairs."""
    bigbird = {"block_size": 64, "global_blocks": 1, "random_blocks": 3, "shared_plan": False}
    window_only = {**bigbird, "global_blocks": 0, "random_blocks": 0}
    series = (
        Series("bigbird", "bigbird", bigbird, 1.0, 60.0, 1.0, 2**20, label="bigbird(default)"),
        Series("bigbird", "bigbird", window_only, 1.0, 20.0, 1.0, 2**20, label="bigbird(0, 0)"),
        Series(
            "lucidrains-blocks",
            "bigbird",
            {"block_size": 64},
            1.0,
            25.0,
            1.0,
            2**21,
            label="lucidrains-blocks(block_size=64)",
        ),
    )
    rows = storage.read_results(write_zoo_run(tmp_path / "run", series, inputs=("gaussian",)))
    names = families.pattern_names(rows)
    assert set(names) == {"bigbird(global_blocks=0, random_blocks=0)",
                          "bigbird(global_blocks=1, random_blocks=3)"}  # fmt: skip
    assert names[rows["backend"] == "lucidrains-blocks"].unique().tolist() == [
        "bigbird(global_blocks=0, random_blocks=0)"
    ]
    best = families.fastest(rows).set_index(["pattern", "seq_len"])
    blocks = best.loc[("bigbird(global_blocks=0, random_blocks=0)", 1024)]
    assert (blocks["label"], blocks["against"]) == ("bigbird(0, 0)", series[2].label)
    assert blocks["time_ratio"] == pytest.approx(25 / 20)
    default = best.loc[("bigbird(global_blocks=1, random_blocks=3)", 1024)]
    assert default["label"] == "bigbird(default)" and pd.isna(default["against"])


def test_at_a_glance_names_the_fastest_implementation_of_each_pattern(md):
    glance = md[md.index("## At a glance") : md.index("## Context")]
    assert "**Fastest implementation of each pattern**" in glance
    row = (
        r"\| structured +\| longformer +\| 8K +\| hf-longformer\(window=256\) +\| transformers +"
        r"\| 214 ms +\| 448 MiB +\| longformer\(window=256\) \(ours\) +\| 1\.12× +\| 0\.5× +\|"
    )
    assert re.search(row, glance), glance
    assert re.search(
        r"\| gaussian +\| longformer +\| 1K +\| longformer\(window=256\) +\| ours", glance
    )


def test_each_family_has_a_table_ours_beside_the_peers(md, rows):
    tables = dict(family_tables(rows))
    assert list(tables) == ["full", "longformer", "bigbird"]
    longformer = tables["longformer"]
    assert longformer["backend"].tolist() == [LONGFORMER.label, PEER_LONGFORMER.label] * 2
    assert longformer["implementation"].tolist() == ["ours", "transformers"] * 2
    assert longformer["shape"].tolist()[::2] == ["gaussian inputs", "structured inputs"]
    # time · memory · error against full attention, per length
    assert longformer.loc[0, "1K"] == "30 ms · 28 MiB · 0.6"
    assert longformer.loc[3, "8K"] == "214 ms · 448 MiB · 0.27"
    section = md[md.index("## Families: ours beside the peers") : md.index("## Scaling exponents")]
    assert (
        section.index("**full**") < section.index("**longformer**") < section.index("**bigbird**")
    )


def test_the_error_against_full_attention_per_family_and_input_distribution(md, rows):
    table = error_table(rows)
    assert table.columns.tolist() == ["family", "backend", "implementation", "inputs", "1K", "2K",
                                      "4K", "8K"]  # fmt: skip
    assert table["family"].tolist() == ["full"] * 4 + ["longformer"] * 4 + ["bigbird"] * 2
    longformer = table[table["family"] == "longformer"].set_index(["backend", "inputs"])["8K"]
    assert longformer.to_dict() == {
        (LONGFORMER.label, "gaussian"): "0.6",
        (LONGFORMER.label, "structured"): "0.25",
        (PEER_LONGFORMER.label, "gaussian"): "0.61",
        (PEER_LONGFORMER.label, "structured"): "0.27",
    }
    accuracy = md[md.index("## Accuracy") :]
    assert "| longformer | longformer(window=256)" in re.sub(r" +", " ", accuracy)
    assert "- **gaussian**: q, k and v i.i.d. standard normal." in accuracy
    assert "- **structured**: q, k and v drawn from the seed" in accuracy
    assert "correlation exp(-|i − j| / 32)" in accuracy and "4 heavy-hitter keys" in accuracy


def test_the_context_names_the_input_distributions(md):
    context = md[md.index("## Context") :]
    assert re.search(r"\| inputs +\| gaussian \(q, k and v i\.i\.d\. standard normal\) and "
                     r"structured \(described under Accuracy\)", context)  # fmt: skip


def test_the_terminal_summary_fits_and_puts_ours_first(rows):
    text = summary_tables(rows)
    assert max(map(len, text.splitlines())) <= 120
    table = text[text.index("[structured inputs, fwd]") :]
    assert table.index("\nlongformer ") < table.index("\nhf-longformer ")


def test_a_run_without_peers_or_before_format_5(tmp_path):
    run = write_run(tmp_path / "run", passes=("fwd",))
    df = storage.read_results(run).drop(columns=["implementation", "inputs", "pattern"])
    glance = glance_table(df)
    assert "inputs" not in glance.columns and "pass" not in glance.columns
    # no pattern recorded: one pattern per family
    longformer = glance[(glance["pattern"] == "longformer") & (glance["n"] == "1K")].iloc[0]
    assert (longformer["fastest"], longformer["implementation"]) == (
        "longformer(window=256)",
        "ours",
    )
    assert longformer["against"] == ""  # alone in its family, but full attention is not
    alone = glance_table(df[df["family"] == "longformer"])
    assert "against" not in alone.columns and alone["fastest"].nunique() == 1
    errors = error_table(df)
    assert set(errors["inputs"]) == {"gaussian"}
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Families: ours beside the peers" in md and "- **gaussian**:" in md

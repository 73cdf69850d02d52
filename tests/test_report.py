"""report.py against the paper: its reference tables digit for digit, Table 2's protocol, the anytime
claim and Figure 2, on fake runs whose answers are known."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
from conftest import REPO, call
from fake_runs import fake_run

import report
from sgdr.paper import ensembles
from sgdr.paper import report as paper_report

# The paper's Table 1 ("WRN (ours)"), typed in from arXiv 1608.03983 (ICLR 2017 version): test error %,
# WRN-28-10 (median of 5) on CIFAR-10 and CIFAR-100, then WRN-28-20 (median of 2) on both.
TABLE1 = """
default with eta_0 = 0.1 (lr x 0.2 at 60, 120, 160) | 4.24 20.33 | 4.08 19.53
default (lr x 0.2 at 60, 120, 160)                  | 4.13 20.21 | 3.96 19.67
T_0 = 50, T_mult = 1                                | 4.17 19.99 | 4.01 19.28
T_0 = 100, T_mult = 1                               | 4.07 19.87 | 3.77 19.24
T_0 = 200, T_mult = 1                               | 3.86 19.98 | 3.66 19.69
T_0 = 1, T_mult = 2                                 | 4.09 19.74 | 3.91 18.90
T_0 = 10, T_mult = 2                                | 4.03 19.58 | 3.74 18.70
"""
# Its Table 2: ensembles of N runs x M snapshots of WRN-28-10, T_0 = 10, T_mult = 2: CIFAR-10, CIFAR-100.
TABLE2 = {(1, 1): ("4.03", "19.57"), (1, 3): ("3.51", "17.75"), (3, 3): ("3.25", "16.64"), (16, 3): ("3.14", "16.21")}
SGDR_10_2 = {"warm_restart": True, "t_zero": 10, "t_mult": 2}
MULTISTEP = {"warm_restart": False, "milestones": [60, 120, 160]}


def typed_table1() -> dict[tuple[str, str], dict[str, str]]:
    """(network, data set) -> {schedule: the paper's test error}."""
    table: dict = {}
    for line in TABLE1.strip().splitlines():
        name, wide, wider = (cell.strip() for cell in line.split("|"))
        for model, cells in (("wrn-28-10", wide), ("wrn-28-20", wider)):
            for dataset, value in zip(("cifar10", "cifar100"), cells.split()):
                table.setdefault((model, dataset), {})[name] = value
    return table


def section(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the table under the first ``### heading`` of ``text``."""
    part = text.split(f"### {heading}")[1].split("\n### ")[0].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in part.splitlines() if line.startswith("|")]
    return rows[2:]


def run_report(root: Path, *flags: str) -> str:
    code, _, err = call(report.main, ["--runs", str(root), *flags])
    assert code == 0, err
    return (root / "report" / "report.md").read_text()


def test_table1_holds_every_number_of_the_papers_table_each_network_beside_its_own_column(tmp_path):
    for model, dataset in typed_table1():
        fake_run(tmp_path, f"{dataset}-{model}", 200, model=model, dataset=dataset, **MULTISTEP)
    text = run_report(tmp_path, "--skip-ensembles")
    for (model, dataset), expected in typed_table1().items():
        heading = f"## {dataset}, {model}, paper recipe, 200 epochs: the paper's setup"
        group = text.split(heading)[1].split("\n## ")[0]
        runs = {"wrn-28-10": 5, "wrn-28-20": 2}[model]
        assert f"| paper, {model.upper()} (median of {runs}) |" in group
        assert {row[0]: row[-1] for row in section(group, "Table 1")} == expected


def test_another_network_is_shown_wrn_28_10s_numbers_for_orientation(tmp_path):
    fake_run(tmp_path, "small", 200, model="wrn-16-4", **MULTISTEP)
    text = run_report(tmp_path, "--skip-ensembles")
    assert "model wrn-16-4 (the paper's: wrn-28-10)" in text and "for orientation only" in text
    assert {row[0]: row[-1] for row in section(text, "Table 1")} == typed_table1()[("wrn-28-10", "cifar10")]


def test_the_default_schedule_with_eta_0_0_1_is_its_own_row(tmp_path):
    fake_run(tmp_path, "a", 200, **MULTISTEP)
    fake_run(tmp_path, "b", 200, **MULTISTEP, lr=0.1, error=lambda e: 5.0)
    fake_run(tmp_path, "c", 200, **SGDR_10_2, lr=0.1, error=lambda e: 6.0)
    rows = {row[0]: row for row in section(run_report(tmp_path, "--skip-ensembles"), "Table 1")}
    assert rows["default with eta_0 = 0.1 (lr x 0.2 at 60, 120, 160)"][1:] == ["1 (1)", "200", "5.00", "5.00", "4.24"]
    assert rows["default (lr x 0.2 at 60, 120, 160)"][1:] == ["1 (1)", "200", "0.20", "0.20", "4.13"]
    assert rows["T_0 = 10, T_mult = 2, eta_max = 0.1"][1:] == ["1 (1)", "150", "6.00", "6.00", ""]  # not the paper's


class FakeOutputs:
    def __init__(self, *args, **kwargs):
        pass


def known_ensemble_error(members, test) -> float:
    """A stand-in for the ensembles' test error that says which snapshots were pooled: the mean over them of
    seed + epoch / 1000 (%), each snapshot's run folder naming its seed."""
    values = [int(p.parents[3].name.removeprefix("seed")) + int(p.stem.split("_")[1]) / 1000 for p in members]
    return statistics.mean(values) / 100


def fake_grid(root: Path, seeds, dataset: str = "cifar10") -> None:
    for seed in seeds:
        fake_run(root, f"seed{seed}", 200, seed=seed, dataset=dataset, snapshot_epochs=(10, 30, 70, 150), **SGDR_10_2)


def test_table2_gives_the_papers_n_1_3_16_and_says_how_it_pools_more_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(ensembles, "SnapshotOutputs", FakeOutputs)
    monkeypatch.setattr(ensembles, "ensemble_error", known_ensemble_error)
    for dataset in ("cifar10", "cifar100"):
        fake_grid(tmp_path / dataset, range(1, 17), dataset)  # Table 2.s 16 runs, folders seed1 .. seed16
    text = run_report(tmp_path)
    for k, dataset in enumerate(("cifar10", "cifar100")):
        rows = {row[1]: row[2:] for row in section(text.split(f"## {dataset}, ")[1], "Table 2")}
        assert list(rows) == [f"{n} run{'s' * (n > 1)}, M = {m}" for n in (1, 3, 16) for m in (1, 2, 3)]
        # One run, M = 1: the epoch-150 snapshot of each run, seed + 0.15; the median over 16 runs, 8.5 + 0.15.
        assert rows["1 run, M = 1"] == ["8.65 (1.15-16.15)", TABLE2[(1, 1)][k], "median of 16 runs"]
        # M = 3: epochs 150, 70, 30 (not 10), a mean of 0.0833 on the seed.
        assert rows["1 run, M = 3"] == ["8.58 (1.08-16.08)", TABLE2[(1, 3)][k], "median of 16 runs"]
        # Three runs: seeds 1-3, 4-6, ..., 13-15 (means 2, 5, 8, 11, 14); seed 16 left over.
        assert rows["3 runs, M = 3"] == [
            "8.08 (2.08-14.08)",
            TABLE2[(3, 3)][k],
            "median of 5 disjoint groups of 3 runs, in seed order; 1 run left over",
        ]
        assert rows["16 runs, M = 3"] == ["8.58", TABLE2[(16, 3)][k], "all 16 runs"]
        assert rows["16 runs, M = 2"] == ["8.61", "", "all 16 runs"]  # the paper gives M = 1 and 3 only
    assert "these from 16" not in text


def test_table2_says_when_a_row_has_fewer_runs_than_the_papers(tmp_path, monkeypatch):
    monkeypatch.setattr(ensembles, "SnapshotOutputs", FakeOutputs)
    monkeypatch.setattr(ensembles, "ensemble_error", known_ensemble_error)
    fake_grid(tmp_path, range(1, 6))  # the grid's 5 seeds
    text = run_report(tmp_path)
    rows = {row[1]: row[2:] for row in section(text, "Table 2")}
    assert list(rows) == [f"{n} run{'s' * (n > 1)}, M = {m}" for n in (1, 3, 5) for m in (1, 2, 3)]
    assert rows["3 runs, M = 3"] == ["2.08", "3.25", "seeds 1, 2, 3; 2 runs left over"]
    assert rows["5 runs, M = 3"] == ["3.08", "3.14", "all 5 runs (fewer than the paper's 16)"]
    assert "The paper's ensembles are drawn from 16 runs of T_0 = 10, T_mult = 2, these from 5" in text
    assert 'TABLE2_SEEDS="$(seq 1 16)" MODEL=wrn-28-10 DATASET=cifar10 RECIPE=paper sh grid.sh' in text
    assert "| paper's Table 2, WRN-28-10, T_0 = 10, T_mult = 2, from 16 runs |" in text  # not Table 1's median of 5


@pytest.mark.parametrize(
    ("runs", "rows"),
    [
        # One run: the paper's N = 1 rows; a row of 2 runs stands for the paper's 3, the nearest.
        (1, {"1 run, M = 3": ["1.08", "3.51", "1 run (seed 1)"]}),
        (2, {"1 run, M = 3": ["1.58 (1.08-2.08)", "3.51", "median of 2 runs"],
             "2 runs, M = 3": ["1.58", "3.25", "all 2 runs (fewer than the paper's 3)"]}),
        (3, {"3 runs, M = 3": ["2.08", "3.25", "all 3 runs"]}),
    ],
)  # fmt: skip
def test_table2_rows_with_few_runs_stand_beside_the_nearest_of_the_papers(runs, rows, tmp_path, monkeypatch):
    monkeypatch.setattr(ensembles, "SnapshotOutputs", FakeOutputs)
    monkeypatch.setattr(ensembles, "ensemble_error", known_ensemble_error)
    fake_grid(tmp_path, range(1, runs + 1))
    got = {row[1]: row[2:] for row in section(run_report(tmp_path), "Table 2")}
    assert len(got) == 3 * min(runs, 2) and {name: got[name] for name in rows} == rows


def descending(start: float, per_epoch: float, floor: float, offset: float = 0.0):
    return lambda epoch: max(floor, start - epoch * per_epoch) + offset


def anytime_grid(root: Path) -> None:
    """Two seeds a schedule, 0.1 either side of a known curve: medians are the curves themselves."""
    curves = {
        "default": (MULTISTEP, descending(12, 1 / 20, 0)),  # 2.00 after 200 epochs
        "t10": (SGDR_10_2, descending(12, 1 / 10, 1)),  # cycle ends 10, 30, 70, 150: 11, 9, 5, 1
        "t50": ({"warm_restart": True, "t_zero": 50, "t_mult": 1}, descending(12, 1 / 8, 0.5)),  # 100: 0.5
        "t200": (
            {"warm_restart": True, "t_zero": 200, "t_mult": 1},
            descending(12.05, 1 / 16, 0.5),
        ),  # 2.05 at 160, 1.99 at 161
        "t1": ({"warm_restart": True, "t_zero": 1, "t_mult": 2}, lambda e: 5.0),  # never
    }
    for name, (schedule, curve) in curves.items():
        for seed, offset in ((1, -0.1), (2, 0.1)):
            fake_run(root, f"{name}-{seed}", 200, seed=seed, error=lambda e, c=curve, o=offset: c(e) + o, **schedule)


def test_the_anytime_rows_measure_the_papers_claim_of_fewer_epochs(tmp_path):
    anytime_grid(tmp_path)
    text = run_report(tmp_path, "--skip-ensembles")
    assert "the default schedule's median test error after its 200 epochs is 2.00%" in text
    assert "2x to 4x fewer epochs" in text
    rows = {row[0]: row[1:] for row in section(text, "Anytime performance")}
    assert rows["default (lr x 0.2 at 60, 120, 160)"] == ["(no restarts)", "epoch 200 (2.00)", "1.00x"]
    assert rows["T_0 = 10, T_mult = 2"] == ["10: 11.00; 30: 9.00; 70: 5.00; 150: 1.00", "epoch 150 (1.00)", "1.33x"]
    # Before its first restart the recommended solution is the current network: T_0 = 50 is read at every
    # epoch to 50 (5.75 there), then at 100.
    assert rows["T_0 = 50, T_mult = 1"] == ["50: 5.75; 100: 0.50; 150: 0.50; 200: 0.50", "epoch 100 (0.50)", "2.00x"]
    assert rows["T_0 = 200, T_mult = 1"] == ["200: 0.50", "epoch 161 (1.99)", "1.24x"]
    assert rows["T_0 = 1, T_mult = 2"][1:] == ["not reached in 200 epochs", ""]
    # The paper's medians are of 5 runs, these of 2: said under Table 1.
    assert "The paper's numbers are medians of 5 runs; these rows' are of other numbers of runs: default" in text


def test_the_anytime_ratio_counts_the_epochs_the_default_needed_to_its_result(tmp_path):
    """A default schedule that overfits reaches its final error before its last epoch: the ratios count from there."""
    fake_run(tmp_path, "default", 200, error=lambda e: 12 - e / 20 if e <= 160 else 4 + (e - 160) * 0.0055, **MULTISTEP)
    fake_run(tmp_path, "sgdr", 200, error=descending(12, 1 / 10, 1), **SGDR_10_2)  # 9 at 30, 5 at 70, 1 at 150
    text = run_report(tmp_path, "--skip-ensembles")
    # 4.00 at epoch 160, 4.22 at 200; on the way down 4.25 at 155, 4.20 at 156.
    assert "after its 200 epochs is 4.22%, which its median first reaches at epoch 156" in text
    rows = {row[0]: row[1:] for row in section(text, "Anytime performance")}
    assert rows["default (lr x 0.2 at 60, 120, 160)"][1:] == ["epoch 156 (4.20)", "1.00x"]
    assert rows["T_0 = 10, T_mult = 2"][1:] == ["epoch 150 (1.00)", "1.04x"]  # 156 / 150, not 200 / 150


def test_figure_2_draws_the_recommended_solutions_and_the_papers_table_1_points(tmp_path):
    anytime_grid(tmp_path)
    runs = [run for run in paper_report.find_runs(tmp_path)[0]]
    fig = paper_report.error_figure(runs, "cifar10", "wrn-28-10")
    lines = fig.axes[0].get_lines()
    stars = {(float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in lines if line.get_marker() == "*"}
    # Each paper entry at the epoch the paper reads it after 200 epochs: 150 for T_0 = 10, 127 for T_0 = 1.
    assert stars == {(200, 4.24), (200, 4.13), (200, 4.17), (200, 4.07), (200, 3.86), (127, 4.09), (150, 4.03)}
    curves = {line.get_label(): list(line.get_xdata()) for line in lines if line.get_marker() == "o"}
    assert curves["T_0 = 10, T_mult = 2"] == [*range(1, 11), 30, 70, 150]
    assert curves["default (lr x 0.2 at 60, 120, 160)"] == list(range(1, 201))
    # The star of a schedule in the colour of its curve; the eta_0 = 0.1 default, not run here, in black.
    colours = {line.get_label(): line.get_color() for line in lines}
    star_colours = {(float(line.get_xdata()[0]), float(line.get_ydata()[0])): line.get_color() for line in lines}
    assert star_colours[(150, 4.03)] == colours["T_0 = 10, T_mult = 2"] and star_colours[(200, 4.24)] == "black"
    text = run_report(tmp_path, "--skip-ensembles")
    assert "![test_error_cifar10_wrn-28-10_paper](test_error_cifar10_wrn-28-10_paper.png)" in text


@pytest.mark.parametrize(
    ("settings", "devices", "label"),
    [
        ({"amp": "bf16"}, ["cpu"], "bfloat16 autocast (--amp bf16; the paper's: float32)"),
        ({"tf32": "conv"}, ["cuda:0"], "TF32 convolutions on CUDA (--tf32 conv; the paper's: float32, --tf32 off)"),
        ({"tf32": "on"}, ["cpu", "cuda"], "TF32 convolutions and matrix products on CUDA (--tf32 on;"),
        ({"tf32": "conv"}, ["cpu"], None),  # TF32 does nothing on the CPU
        ({"tf32": "off"}, ["cuda:0"], None),
        ({"deterministic": True, "compile": True}, ["cuda:0"], None),  # float32 all the same, in another order
    ],
)
def test_the_papers_setup_label_names_every_setting_that_changes_the_precision(settings, devices, label, tmp_path):
    fake_run(tmp_path, "run", 200, devices=devices, **{"tf32": "off", **settings}, **MULTISTEP)
    text = run_report(tmp_path, "--skip-ensembles")
    if label is None:
        assert ": the paper's setup\n" in text
    else:
        assert ": not the paper's setup\n" in text and label in text


def test_the_docs_say_how_each_number_is_computed():
    paper = " ".join((REPO / "docs" / "paper.md").read_text().split())
    for phrase in (
        "disjoint groups of N runs",
        "at or below the default schedule's final median",
        "the paper's Table 1 entries as stars",
        "TABLE2_SEEDS",
    ):
        assert phrase in paper, phrase
    assert re.search(r"--tf32 off", paper)


def test_shaped_warm_restarts_are_rows_of_their_own_read_at_their_own_cycle_ends(tmp_path):
    fake_run(tmp_path, "plain-1", 200, **SGDR_10_2)
    fake_run(tmp_path, "plain-2", 200, **SGDR_10_2, seed=2)
    fake_run(tmp_path, "decay", 200, **SGDR_10_2, cycle_decay=0.5)
    fake_run(tmp_path, "warm", 200, **SGDR_10_2, warmup_epochs=5, warmup_start_lr=0.01, cycle_limit=2)
    fake_run(tmp_path, "default", 200, **MULTISTEP)
    text = run_report(tmp_path, "--skip-ensembles")
    assert text.count("\n## ") == 1  # one experiment: the schedules are rows of it, never pooled
    rows = {row[0]: row[1:] for row in section(text, "Table 1")}
    assert rows["T_0 = 10, T_mult = 2"] == ["2 (1, 2)", "150", "0.15 (0.15-0.15)", "0.20 (0.20-0.20)", "4.03"]
    decayed = "T_0 = 10, T_mult = 2; cycle decay 0.5 (not the paper's schedule)"
    assert rows[decayed] == ["1 (1)", "150", "0.15", "0.20", ""]  # the paper has no such row
    # Cycles end 5 epochs later after a warmup of 5, and only 2 of them: epochs 15 and 35.
    warmed = "T_0 = 10, T_mult = 2; warmup 5 epochs from lr 0.01, 2 cycles (not the paper's schedule)"
    assert rows[warmed] == ["1 (1)", "35", "0.04", "0.20", ""]
    assert list(rows)[-2:] == [decayed, warmed]  # after the paper's rows
    anytime = {row[0]: row[1] for row in section(text, "Anytime performance")}
    assert anytime[warmed] == "15: 0.01; 35: 0.04"


def test_shaping_options_a_record_could_not_hold_leave_the_run_out(tmp_path):
    fake_run(tmp_path, "good", 200, **MULTISTEP)
    fake_run(tmp_path, "odd", 200, **SGDR_10_2, cycle_decay=2.0)
    fake_run(tmp_path, "multistep", 200, **MULTISTEP, warmup_epochs=3, seed=2)
    code, _, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0 and "cycle_decay 2.0 on a warm-restart run" in err and "warmup_epochs 3 on a multistep run" in err


def test_runs_that_name_a_file_are_said_to_be_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine")
    code, _, err = call(report.main, ["--runs", str(tmp_path / "afile"), "--skip-ensembles"])
    assert code == 1 and "Traceback" not in err
    assert f"--runs {tmp_path / 'afile'} is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "mine"

"""SWA over a run's snapshots: the average AveragedModel makes is the plain mean of the snapshots' parameters,
BatchNorm's statistics are recomputed over the run's training images (and nothing else changes), and
ensemble.py prints it beside the ensembles, refusing what it cannot average."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL, TINY, call

import ensemble
import train
from sgdr.paper import averages, ensembles
from sgdr.run import layout
from sgdr.testing.cifar_files import use_checksums_of
from sgdr.training.networks import build_network

# Snapshots at the ends of epochs 1, 3 and 7.
WARM = ["-e", "7", "-wr", "-t0", "1", "-tm", "2", *SMALL, *TINY]


@pytest.fixture(scope="module")
def runs(tiny_cifar: Path, tmp_path_factory) -> dict[str, Path]:
    """Two warm-restart runs trained once for this module: a plain one (snapshots at epochs 1, 3, 7) and one
    with --recompute-bn (its snapshots hold BatchNorm statistics recomputed from the training images)."""
    out = tmp_path_factory.mktemp("averages")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        use_checksums_of(tiny_cifar, patch.setattr)
        for name, more in (("plain", []), ("recompute", ["--recompute-bn"])):
            argv = [*WARM, "--seed", "5", *more, "--data-dir", str(tiny_cifar), "--output-dir", str(out / name)]
            code, _, err = call(train.main, argv)
            assert code == 0, err
            found[name] = out / name / "runs" / "wr_s1_m2"
    return found


def parameters_of(state: dict[str, torch.Tensor], model_name: str) -> dict[str, torch.Tensor]:
    names = {name for name, _ in build_network(model_name, 10).named_parameters()}
    return {name: value for name, value in state.items() if name in names}


def test_swa_of_m_snapshots_is_the_mean_of_their_parameters(runs):
    snapshots = ensembles.run_snapshots(runs["plain"])
    assert [layout.snapshot_epoch(p) for p in snapshots] == [1, 3, 7]
    saved = [torch.load(p, weights_only=True)["model"] for p in snapshots]
    for m in (2, 3):
        average = averages.averaged_snapshot(snapshots[-m:])["model"]
        by_hand = {name: sum(state[name] for state in saved[-m:]) / m for name in parameters_of(saved[0], "wrn-10-1")}
        assert by_hand  # the network has parameters, and every one of them is averaged
        for name, value in by_hand.items():
            torch.testing.assert_close(average[name], value, rtol=1e-6, atol=1e-7)
            assert not torch.equal(average[name], saved[-1][name])  # the members differ: an average is new
        # Buffers (BatchNorm's statistics) are not averaged: AveragedModel keeps the last member's, until
        # they are recomputed.
        for name in saved[0].keys() - by_hand.keys():
            assert torch.equal(average[name], saved[-1][name]), name


def test_swa_of_one_snapshot_is_that_snapshot_but_for_recomputed_batch_norm(runs, cifar_dir):
    path = ensembles.run_snapshots(runs["plain"])[-1]
    saved = torch.load(path, weights_only=True)["model"]
    average = averages.averaged_snapshot([path])
    assert average["model"].keys() == saved.keys()
    for name, value in parameters_of(saved, "wrn-10-1").items():
        assert torch.equal(average["model"][name], value), name
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    # Without the recomputation, the network evaluates exactly as the snapshot does.
    assert torch.equal(test.evaluate(average, path), test.logits(path))

    # The recomputation replaces the running means and variances (the training's momentum averages) by each
    # BatchNorm's batch statistics averaged over the training images' batches, in order, unaugmented.
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    after: dict[str, torch.Tensor] = {}

    def prepare(model, loader):
        def record(name):
            def hook(module, inputs, output):
                x = inputs[0].float()
                seen.setdefault(name, []).append((x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)))

            return hook

        handles = [
            module.register_forward_hook(record(name))
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.BatchNorm2d)
        ]
        averages.recompute_batch_norm(average, cifar_dir)(model, loader)
        for handle in handles:
            handle.remove()
        after.update({k: v.clone() for k, v in model.state_dict().items()})

    test.evaluate(average, path, prepare)
    assert seen and all(len(batches) == 3 for batches in seen.values())  # 40 images: batches of 16, 16, 8
    for name, batches in seen.items():
        mean = torch.stack([b[0] for b in batches]).mean(0)
        var = torch.stack([b[1] for b in batches]).mean(0)
        torch.testing.assert_close(after[f"{name}.running_mean"], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after[f"{name}.running_var"], var, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(after[f"{name}.running_mean"], saved[f"{name}.running_mean"])
    for name, value in parameters_of(saved, "wrn-10-1").items():  # the weights stay the snapshot's
        assert torch.equal(after[name], value), name


def test_swa_recomputes_batch_norm_as_a_run_with_recompute_bn_does(runs, cifar_dir):
    """A --recompute-bn run's snapshot already holds statistics recomputed from its training images, in order:
    SWA of that one snapshot, its statistics first wiped, recomputes the same, and gives its test outputs."""
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    for path in ensembles.run_snapshots(runs["recompute"]):
        average = averages.averaged_snapshot([path])
        for name, value in average["model"].items():
            if name.endswith(("running_mean", "running_var")):
                value.fill_(0.5)
        assert not torch.allclose(test.evaluate(average, path), test.logits(path), rtol=1e-3, atol=1e-3)
        recomputed = test.evaluate(average, path, averages.recompute_batch_norm(average, cifar_dir))
        torch.testing.assert_close(recomputed, test.logits(path), rtol=1e-5, atol=1e-5)


def test_ensemble_py_prints_swa_beside_the_ensemble(runs, cifar_dir):
    run = runs["plain"]
    code, out, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert code == 0, err
    rows = re.findall(r"^\| (\d) \| ([\d, ]+) \| ([\d.]+)% \| ([\d.]+)% \|$", out, re.M)
    assert [(m, epochs) for m, epochs, _, _ in rows] == [("1", "7"), ("2", "3, 7"), ("3", "1, 3, 7")]
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    outputs = averages.AverageOutputs(test)
    snapshots = ensembles.run_snapshots(run)
    for m, _, ensemble_error, swa_error in rows:
        members = snapshots[-int(m) :]
        assert float(ensemble_error) == pytest.approx(100 * ensembles.ensemble_error(members, test), abs=0.005)
        assert float(swa_error) == pytest.approx(100 * averages.swa_error([members], outputs), abs=0.005)
    assert "networks at test time: the ensemble M x 1, SWA 1" in out and "EMA" not in out  # trained without
    code, out, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir), "--largest-m", "2"])
    assert code == 0, err
    assert re.findall(r"^\| (\d) \|", out, re.M) == ["1", "2"]


def test_with_several_runs_each_run_is_averaged_alone_and_their_swa_networks_ensembled(runs, cifar_dir):
    folders = [runs["plain"], runs["recompute"]]  # two runs, each with snapshots at epochs 1, 3, 7
    code, out, err = call(ensemble.main, [*map(str, folders), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert code == 0, err
    rows = re.findall(r"^\| (\d) \| [\d, ;]+ \| [\d.]+% \| ([\d.]+)% \|$", out, re.M)
    assert [m for m, _ in rows] == ["1", "2", "3"]
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    outputs = averages.AverageOutputs(test)
    snapshots = [ensembles.run_snapshots(folder) for folder in folders]
    for m, swa in rows:
        members = [s[-int(m) :] for s in snapshots]
        logits = [outputs.logits(run) for run in members]
        by_hand = ensembles.error_rate(ensembles.average_softmax(logits), test.labels())
        assert float(swa) == pytest.approx(100 * by_hand, abs=0.005)
        assert averages.swa_error(members, outputs) == by_hand
    assert "networks at test time: the ensemble M x 2, SWA 2" in out


def test_ensemble_py_gives_a_runs_ema_beside_its_snapshots(cifar_dir, tmp_path):
    argv = [*WARM, "--seed", "5", "--ema", "0.5", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, argv)[0] == 0
    run = tmp_path / "runs" / "wr_s1_m2"
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[6])  # epoch 7, the last snapshot's
    code, out, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir)])
    assert code == 0, err
    assert f"{run}: EMA of the weights (--ema) at epoch 7: {last['ema_test_error']:.2%}" in out


def test_ensemble_py_refuses_more_snapshots_than_a_run_has(runs, cifar_dir):
    code, out, err = call(ensemble.main, [str(runs["plain"]), "--data-dir", str(cifar_dir), "--largest-m", "4"])
    assert code == 1 and "Traceback" not in err and out == ""
    assert f"--largest-m 4 is more snapshots than {runs['plain']} has (3): give --largest-m 3 or less" in err


def test_ensemble_py_refuses_a_run_without_snapshots(runs, tmp_path):
    shutil.copytree(runs["plain"], tmp_path / "run", ignore=shutil.ignore_patterns("snapshots"))
    code, _, err = call(ensemble.main, [str(tmp_path / "run")])
    assert code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'run'} has no snapshots" in err and "--warm-restart" in err


def test_swa_refuses_a_snapshot_of_another_network(runs, cifar_dir, tmp_path):
    """A snapshot of another network in a run's snapshots/ (with no record to name its owner): the ensemble
    may average its outputs, but its weights cannot join the others'."""
    other = tmp_path / "other"
    argv = ["-e", "1", "-wr", "-t0", "1", "--model", "wrn-16-1", *TINY, "--seed", "5"]
    assert call(train.main, [*argv, "--data-dir", str(cifar_dir), "--output-dir", str(other)])[0] == 0
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    layout.record_of(run).unlink()
    stranger = run / "snapshots" / "epoch_0008.pt"
    shutil.copy(other / "runs" / "wr_s1_m1" / "snapshots" / "epoch_0001.pt", stranger)
    code, out, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert code == 1 and "Traceback" not in err
    assert f"the snapshot {stranger} holds a wrn-16-1 (10 classes)" in err
    assert "weights of different networks cannot be averaged" in err

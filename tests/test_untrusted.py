"""Files a user did not write: pickles, checkpoints and snapshots are read without running code from
them, and files in a run folder that this project did not name are neither read nor removed."""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import joblib
import pytest
import torch
from conftest import TINY, call

import ensemble
import plot
import train
from sgdr import storage
from sgdr.cli import UserError
from sgdr.run import checkpoint, layout


class Payload:
    """Unpickled by a full unpickler, creates ``marker``: the shape of an attack through ``__reduce__``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def crafted_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps([0.5, Payload(marker)]))
    joblib.load(path).pop().close()  # the payload is live: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()


def test_the_loss_pickle_format_is_joblibs_and_reads_back(tmp_path):
    values = [0.5, 2.25, 1e-300]
    storage.save_floats(tmp_path / "a.pkl", values)
    expected = io.BytesIO()
    joblib.dump(values, expected)
    assert (tmp_path / "a.pkl").read_bytes() == expected.getvalue()  # the tutorial's format, byte for byte
    assert storage.load_floats(tmp_path / "a.pkl") == values


@pytest.mark.parametrize("content", [{"a": 1.0}, [1.0, "2"], [1, 2], 3.0])
def test_only_a_list_of_floats_is_accepted(content, tmp_path):
    path = tmp_path / "x.pkl"
    joblib.dump(content, path)
    with pytest.raises(UserError, match=f"{path} cannot be read"):
        storage.load_floats(path)


def test_a_numpy_pickle_is_refused_without_importing_anything(tmp_path):
    import numpy as np

    path = tmp_path / "x.pkl"
    joblib.dump(np.arange(3.0), path)
    with pytest.raises(UserError, match=r"it names .*; only plain data is read"):
        storage.load_floats(path)


def test_plot_runs_no_code_from_a_crafted_pickle(tmp_path):
    marker = tmp_path / "marker"
    for name in ["val_loss.pkl", "wr_val_loss_s50_m1.pkl", "wr_val_loss_s200_m1.pkl"]:
        storage.save_floats(tmp_path / name, [1.0, 0.5])
    crafted_pickle(tmp_path / "val_loss.pkl", marker)
    code, _, err = call(plot.main, ["--output-dir", str(tmp_path)])
    assert not marker.exists(), "code in the pickle ran"
    assert code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'val_loss.pkl'} cannot be read (UnpicklingError: it names io.open;" in err
    assert "Nothing in it was run." in err
    assert not (tmp_path / "loss_plot_combined.jpg").exists()


@pytest.mark.parametrize("read", [checkpoint.load, checkpoint.load_snapshot])
def test_checkpoints_and_snapshots_run_no_code(read, tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "checkpoint.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "payload": Payload(marker)}, path)
    torch.load(path, weights_only=False)["payload"].close()  # live for a full unpickler
    marker.unlink()
    with pytest.raises(UserError, match=f"{path} cannot be read"):
        read(path)
    assert not marker.exists()


def test_files_in_snapshots_that_train_py_did_not_name_are_ignored_and_kept(cifar_dir, tmp_path):
    run_args = [
        "-e",
        "2",
        "-wr",
        "-t0",
        "1",
        "--train-subset",
        "16",
        "--seed",
        "2",
        "--model",
        "wrn-10-1",
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    assert call(train.main, run_args)[0] == 0
    snapshots = tmp_path / "runs" / "wr_s1_m1" / "snapshots"
    mine = snapshots / "epoch_best.pt"
    shutil.copy(snapshots / "epoch_0002.pt", mine)  # a user's own "best" network, in the project's format
    (snapshots / "epoch_00003.pt").write_bytes(b"notes")  # not a name train.py gives
    kept = mine.read_bytes()
    assert [p.name for p in layout.snapshots_in(snapshots.parent)[0]] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert mine not in layout.RunFiles.all(layout.run_files(tmp_path, True, 1, 1))
    code, log, err = call(ensemble.main, [str(snapshots.parent), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert code == 0, err
    assert "snapshots per run: 2" in log and "| 2 | 1, 2 |" in log
    assert err.count("epoch_best.pt") == 1 and "epoch_00003.pt" in err
    code, log, err = call(train.main, [*run_args, "--overwrite"])
    assert code == 0, err
    assert mine.read_bytes() == kept
    assert f"Kept {snapshots / 'epoch_00003.pt'}, {mine}: not files of this project." in log

"""Run folders: one run per folder at a time, unwritable or full disks, and --overwrite that checks
before it removes anything."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from conftest import argv, call, files_of, harness, start_until

import train
from sgdr.data import cifar
from sgdr.run import lock


def everything(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` with its bytes, run records included."""
    return {**files_of(out), **{str(p): p.read_bytes() for p in out.rglob("run.json")}}


def test_a_running_run_holds_its_folder_against_every_other_process(cifar_dir, tmp_path):
    out = tmp_path / "out"
    run_dir = out / "runs" / "multistep"
    first = start_until(
        harness(cifar_dir, "pause:4", argv("multistep", cifar_dir, out)), "harness: paused", stderr=subprocess.DEVNULL
    )  # stopped in the middle of epoch 2, its folder held
    try:
        before = everything(out)
        holder = f"pid {first.pid} on {socket.gethostname()}, python train.py -e 4"
        second = subprocess.run(
            harness(cifar_dir, "none", argv("multistep", cifar_dir, out)), capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 75, second.stderr[-2000:]  # EX_TEMPFAIL: busy, not failed
        assert second.stderr.startswith(f"error: {run_dir} belongs to a run that is still going: {holder}")
        assert "Traceback" not in second.stderr and "Epoch" not in second.stdout
        for again in ("--resume", "--overwrite"):
            code, log, err = call(train.main, argv("multistep", cifar_dir, out, again))
            assert code == 75 and holder in err and "nothing was changed" in err, err
            assert "Epoch" not in log
        assert everything(out) == before
        assert lock.who_runs(run_dir).startswith(holder)  # what grid.sh --status shows; a look changes nothing
        assert everything(out) == before
    finally:
        first.kill()  # as kill -9: the system lets go of the lock
        first.wait(timeout=60)
    assert (run_dir / ".lock").exists() and lock.who_runs(run_dir) is None  # left behind, held by no one
    code, log, err = call(train.main, argv("multistep", cifar_dir, out, "--resume"))
    assert code == 0, err
    assert "Resuming after epoch 1" in log
    assert not (run_dir / ".lock").exists()


def test_an_unwritable_output_folder_is_refused_before_the_data_is_loaded(cifar_dir, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(cifar, "load_splits", lambda *args, **kwargs: loaded.append(args))
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "out"
    code, log, err = call(train.main, argv("multistep", cifar_dir, out))
    assert code == 1 and "Traceback" not in err
    assert err.startswith(
        f"error: cannot write in {out / 'runs' / 'multistep'} (Not a directory): choose an output "
        "folder you can write to (--output-dir)."
    )
    assert loaded == [] and "Epoch" not in log


def test_a_refused_run_leaves_no_folder_behind(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(train.main, ["-e", "1", "--output-dir", "new/out"])
    assert code == 1 and "CIFAR-10 is not in" in err
    assert not (tmp_path / "new").exists()  # the folders made to hold the run's lock are gone


def test_overwrite_checks_every_path_before_it_removes_any(cifar_dir, tmp_path):
    out = tmp_path / "out"
    short = argv("multistep", cifar_dir, out, "-e", "1")
    assert call(train.main, short)[0] == 0
    (out / "val_loss.pkl").unlink()
    (out / "val_loss.pkl").mkdir()  # in the way, and not this project's to remove
    before = everything(out)
    code, log, err = call(train.main, [*short, "--overwrite"])
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (
        f"error: --overwrite cannot remove {out / 'val_loss.pkl'} (a folder): move it away or remove "
        "it yourself, or use another --output-dir. Nothing was removed."
    )
    assert everything(out) == before and "Epoch" not in log


def test_a_folder_where_the_lock_file_goes_is_named(cifar_dir, tmp_path):
    out = tmp_path / "out"
    (out / "runs" / "multistep" / ".lock").mkdir(parents=True)
    code, log, err = call(train.main, argv("multistep", cifar_dir, out, "-e", "1"))
    assert code == 1 and "Epoch" not in log
    assert (
        err.strip()
        == f"error: {out / 'runs' / 'multistep' / '.lock'} is a folder, where this run keeps its lock file: move it."
    )


def test_a_damaged_run_record_is_kept_aside_and_named_when_the_run_resumes(cifar_dir, tmp_path):
    """Its sessions are history: a resume that starts a new record keeps the damaged one beside it, and says so."""
    out = tmp_path / "out"
    assert call(train.main, argv("multistep", cifar_dir, out, "-e", "1"))[0] == 0
    record = out / "runs" / "multistep" / "run.json"
    record.write_text('{"config": ')
    code, _, err = call(train.main, argv("multistep", cifar_dir, out, "-e", "2", "--resume"))
    assert code == 0, err
    aside = record.with_name("run.json.damaged")
    assert aside.read_text() == '{"config": ' and f"kept as {aside}, and a new record starts with this session" in err
    assert len(json.loads(record.read_text())["sessions"]) == 1


def test_a_lock_file_that_cannot_be_opened_is_named_not_its_folder(cifar_dir, tmp_path, monkeypatch):
    """A lock file left without permissions (the tests run as root, which ignores them: the refusal is
    what the system would say to a user)."""
    import errno
    import os

    out = tmp_path / "out"
    path = out / "runs" / "multistep" / ".lock"
    path.parent.mkdir(parents=True)
    path.write_text("")
    real_open = os.open

    def refused(name, *args, **kwargs):
        if Path(name) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(lock.os, "open", refused)
    code, log, err = call(train.main, argv("multistep", cifar_dir, out, "-e", "1"))
    assert code == 1 and "Epoch" not in log
    assert err.strip() == (
        f"error: cannot open this run's lock file {path} (Permission denied): give it back its permissions "
        "(chmod u+rw), or remove it when no run of this folder is going."
    )

"""Run a script in a fresh process on tiny CIFAR-10 data, optionally SIGKILLing it at a chosen point.

    python sgdr/testing/harness.py DATA_DIR POINT SCRIPT [ARGS...]

torchvision is made to accept the checksums of the files under DATA_DIR (see cifar_files).
POINT is a comma-separated list of
    none         run normally
    batch:N      SIGKILL right after the N-th optimiser step of the run
    pause:N      print "harness: paused" right after the N-th optimiser step, then wait (for a signal)
    writing:N    SIGKILL halfway through writing the N-th checkpoint of this process
    written:N    SIGKILL with the N-th checkpoint complete in its temporary file, not yet renamed
    replaced:N   SIGKILL right after the N-th checkpoint is renamed into place
    nan:N        the N-th training loss becomes NaN
    bn-eval      BatchNorm layers always normalise with their running statistics
    no-data      this process finds no data set under DATA_DIR and no network to download it
    url=URL      torchvision downloads CIFAR-10 from URL (the archive under DATA_DIR has its md5)
each optionally ending in @R: only in the process of rank R (under torchrun).

Everything is patched here, in the process it starts; the training code has no test hooks. The tests and
gpu_check.py use it.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the project's folder, for the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from sgdr.testing.cifar_files import use_checksums_of  # noqa: E402
from sgdr.training import schedules  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def apply(points: str) -> None:
    for point in points.split(","):
        point, _, rank = point.partition("@")
        if not rank or rank == os.environ.get("RANK", "0"):
            crash_at(point)


def crash_at(point: str) -> None:
    if point == "none":
        return
    if point.startswith("url="):
        from torchvision.datasets import CIFAR10

        CIFAR10.url = point.removeprefix("url=")
        return
    if point == "no-data":
        import urllib.error
        import urllib.request

        from torchvision.datasets import CIFAR10

        def refuse(*args, **kwargs):
            raise urllib.error.URLError("[Errno -2] Name or service not known")

        CIFAR10.base_folder = "missing-cifar-10-batches-py"
        urllib.request.urlopen = refuse
        return
    if point == "bn-eval":
        from torch.nn.modules.batchnorm import _BatchNorm

        train = _BatchNorm.train
        _BatchNorm.train = lambda self, mode=True: train(self, False)
        return
    where, n = point.split(":")
    n = int(n)
    if where == "nan":
        import torch.nn.functional as F

        cross_entropy, calls = F.cross_entropy, [0]

        def poisoned(logits, labels, **kwargs):
            loss = cross_entropy(logits, labels, **kwargs)
            if kwargs.get("reduction", "mean") == "mean":  # training batches
                calls[0] += 1
                if calls[0] == n:
                    return loss * float("nan")
            return loss

        F.cross_entropy = poisoned
        return
    if where in ("batch", "pause"):
        after_batch, steps = schedules.Schedule.after_batch, [0]

        def counting(self, *args):
            after_batch(self, *args)
            steps[0] += 1
            if steps[0] == n and where == "batch":
                die()
            if steps[0] == n:
                print("harness: paused", flush=True)
                signal.pause()

        schedules.Schedule.after_batch = counting
        return
    real_save, real_replace, saves = torch.save, os.replace, [0]

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "rng" in obj:  # a checkpoint
            saves[0] += 1
            if saves[0] == n and where == "writing":
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()
        real_save(obj, f, *args, **kwargs)
        if saves[0] == n and where == "written":
            f.flush()
            die()

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if str(dst).endswith("checkpoint.pt") and saves[0] == n and where == "replaced":
            die()

    torch.save, os.replace = save, replace


if __name__ == "__main__":
    import runpy

    data_dir, point, script, *args = sys.argv[1:]
    use_checksums_of(Path(data_dir))
    apply(point)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")

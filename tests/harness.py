"""Run a script in a fresh process on tiny CIFAR-10 data, optionally SIGKILLing it at a chosen point.

    python tests/harness.py DATA_DIR POINT SCRIPT [ARGS...]

torchvision is made to accept the checksums of the files under DATA_DIR (see cifar_format).
POINT is one of
    none         run normally
    batch:N      right after the N-th optimiser step of the run
    writing:N    halfway through writing the N-th checkpoint of this process
    written:N    with the N-th checkpoint complete in its temporary file, not yet renamed
    replaced:N   right after the N-th checkpoint is renamed into place

Everything is patched here, in the test's process; the product has no test hooks.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import schedules  # noqa: E402
from cifar_format import use_checksums_of  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def crash_at(point: str) -> None:
    if point == "none":
        return
    where, n = point.split(":")
    n = int(n)
    if where == "batch":
        after_batch, steps = schedules.Schedule.after_batch, [0]

        def counting(self, *args):
            after_batch(self, *args)
            steps[0] += 1
            if steps[0] == n:
                die()

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
    crash_at(point)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")

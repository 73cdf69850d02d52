"""The project's first-day check on one GPU: one line per check, every step time-boxed.

    python gpu_check.py                 on a machine with one CUDA GPU, from a fresh clone
    python gpu_check.py --smoke         the same steps, tiny, on the CPU (the test suite runs this)

No CIFAR-10 needed: it writes a synthetic one of the real size (50,000 + 10,000 images) in the real
on-disk format, and runs train.py on it through sgdr/testing/harness.py (which makes torchvision accept
the files' checksums and can kill a run at a chosen batch). Steps, most valuable first: the
versions; the default ResNet34 run (seconds an epoch, peak GPU memory); a run killed inside its
second epoch and resumed with --deterministic, compared bit for bit with the same run uninterrupted;
one process under torchrun, and the multi-process code over a one-process NCCL group; a paper-recipe
WRN-28-10 epoch; ResNet34 with --amp bf16 --compile; bench.py on the device. Each step runs in its
own process group, killed at its cap or when the whole budget (--budget, default 400 s) is spent;
a step that no longer fits says SKIP. Logs go to --out (default gpu_check_out/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from sgdr.cli import Parser, number_in
from sgdr.run import layout

REPO = Path(__file__).resolve().parent
HARNESS = REPO / "sgdr" / "testing" / "harness.py"


def log_of(out: Path, name: str) -> Path:
    return out / "logs" / f"{name}.log"


class Steps:
    """Runs commands, each in its own session, killed with its group at its cap or at the deadline."""

    def __init__(self, out: Path, budget: float):
        self.out, self.deadline = out, time.monotonic() + budget
        self.failed = 0
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cap: float, command: Sequence[str]) -> tuple[int | None, str, float]:
        """(exit status, or None when it ran out of time; its output; seconds)."""
        limit = min(cap, self.deadline - time.monotonic())
        if limit < 5:
            return None, "no time left", 0.0
        start = time.monotonic()
        with open(log_of(self.out, name), "a") as log:
            log.write(f"$ {shlex.join(map(str, command))}\n")
            log.flush()
            proc = subprocess.Popen(
                list(map(str, command)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                output, _ = proc.communicate(timeout=limit)
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                code = None
            log.write(output)
        return code, output, time.monotonic() - start

    def say(self, name: str, ok: bool | None, text: str) -> None:
        word = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
        self.failed += ok is False
        print(f"{word} {name}: {text}", flush=True)
        with open(self.out / "summary.txt", "a") as summary:
            summary.write(f"{word} {name}: {text}\n")


def train_command(data: Path, point: str, *args: str) -> list[str]:
    """train.py on the synthetic data, through this script's inner mode (checksums, a kill point, and
    the peak GPU memory printed at exit)."""
    return [sys.executable, __file__, "--inner-train", str(data), point, "--", *args]


def epoch_times(output: str) -> list[float]:
    return [float(s) for s in re.findall(r"^Epoch time: ([\d.]+) s$", output, re.M)]


def peak(output: str) -> str:
    found = re.findall(r"^gpu_check: peak GPU memory ([\d.]+) GiB$", output, re.M)
    return f"peak {found[-1]} GiB" if found else "no GPU memory used"


def timed_run(steps: Steps, name: str, cap: float, data: Path, out: Path, *args: str) -> None:
    code, output, seconds = steps.run(name, cap, train_command(data, "none", *args, "--output-dir", str(out)))
    if code is None:
        timed_out = output != "no time left"
        steps.say(name, False if timed_out else None, f"{'killed at its time cap' if timed_out else output}")
        return
    times = epoch_times(output)
    if code != 0 or not times:
        steps.say(name, False, f"exit status {code}; see {log_of(steps.out, name)}")
        return
    later = f", then {times[-1]:.2f} s" if len(times) > 1 else ""
    steps.say(name, True, f"first epoch {times[0]:.2f} s{later}; {peak(output)} ({seconds:.0f} s in all)")


def same_files(a: Path, b: Path) -> list[str]:
    """The files that differ between two output folders (run records aside: they hold times)."""
    names = sorted({p.relative_to(root) for root in (a, b) for p in root.rglob("*") if p.is_file()})
    differ = []
    for name in names:
        if name.name == layout.RECORD:
            continue
        x, y = a / name, b / name
        if not (x.is_file() and y.is_file()):
            differ.append(f"{name} (only in one)")
        elif name.suffix == ".pt":
            if not _same(torch.load(x, weights_only=True), torch.load(y, weights_only=True)):
                differ.append(str(name))
        elif x.read_bytes() != y.read_bytes():
            differ.append(str(name))
    return differ


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    return x == y


def check(args: argparse.Namespace) -> int:
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU here; python gpu_check.py --smoke runs the steps on the CPU.", file=sys.stderr)
        return 2
    out = Path(args.out)
    steps = Steps(out, args.budget)
    # The versions, and what PyTorch starts with.
    gpu = torch.cuda.get_device_name(0) if not smoke else "none (smoke mode, CPU)"
    steps.say(
        "env",
        True,
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {gpu}, "
        f"NCCL {'.'.join(map(str, torch.cuda.nccl.version())) if not smoke else 'n/a'}, "
        f"bf16 {torch.cuda.is_bf16_supported() if not smoke else 'n/a'}",
    )
    # The data: full size on a GPU, a few batches in smoke mode.
    data = out / "data"
    per_file, test = (16, 32) if smoke else (10_000, 10_000)
    code, output, seconds = steps.run(
        "data",
        120,
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO)!r}); from sgdr.testing import cifar_files; "
            f"cifar_files.write_cifar10({str(data)!r}, {per_file}, {test})",
        ],
    )
    if code != 0:
        steps.say("data", False, f"could not write the synthetic CIFAR-10; see {log_of(out, 'data')}")
        return 1
    steps.say("data", True, f"{5 * per_file:,} + {test:,} synthetic images in CIFAR-10's format ({seconds:.0f} s)")
    base = ["--data-dir", str(data), "--device", device, "--seed", "1"]
    small = ["--model", "wrn-10-1", "-b", "16", "--workers", "0"] if smoke else []
    runs = out / "runs"
    # 1. The default ResNet34 run, as run.sh starts it: 2 epochs.
    timed_run(steps, "resnet34", 150, data, runs / "resnet34", "-e", "2", *base, *small)
    # 2. Killed inside epoch 2 and resumed, --deterministic, against the same run uninterrupted.
    resume = ["-e", "2", "--deterministic", *base, *small]
    kill_at = 5 + 2 if smoke else 391 + 100
    whole, killed = runs / "deterministic", runs / "killed"
    results = [
        steps.run("resume", 150, train_command(data, "none", *resume, "--output-dir", str(whole))),
        steps.run("resume", 150, train_command(data, f"batch:{kill_at}", *resume, "--output-dir", str(killed))),
        steps.run("resume", 150, train_command(data, "none", *resume, "--resume", "--output-dir", str(killed))),
    ]
    if any(code is None for code, _, _ in results):
        steps.say("resume", None, "no time left")
    elif results[0][0] != 0 or results[1][0] != -signal.SIGKILL or results[2][0] != 0:
        codes = ", ".join(str(code) for code, _, _ in results)
        steps.say("resume", False, f"exit statuses {codes} (want 0, -9, 0); see {log_of(out, 'resume')}")
    else:
        differ = same_files(whole, killed)
        detail = "bit for bit the uninterrupted run" if not differ else f"differs: {', '.join(differ[:5])}"
        steps.say("resume", not differ, f"killed at batch {kill_at}, resumed: {detail}")
    # 3. One GPU, several-process code: torchrun with one process, and the multi-process paths
    # (DDP, sums, buffer broadcast, the Gloo control group) as rank 0 of 2 over a one-process group.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(HARNESS)]
    one = [*torchrun, str(data), "none", str(REPO / "train.py"), "-e", "1", *base, *small]
    code, output, seconds = steps.run("ranks", 120, [*one, "--output-dir", str(runs / "torchrun")])
    group = [sys.executable, __file__, "--inner-group", str(data), "--", "-e", "1", *base, *small]
    code2, output2, seconds2 = steps.run("ranks", 120, [*group, "--output-dir", str(runs / "group")])
    if code is None or code2 is None:
        steps.say("ranks", None, "no time left")
    else:
        ok = code == 0 and code2 == 0 and "gpu_check: group epoch done" in output2
        steps.say("ranks", ok, f"torchrun, 1 process: exit {code}; rank 0 of 2 over a 1-process group: exit {code2}")
    # 4. A paper-recipe WRN-28-10 epoch (781 batches of 128), or a small one in smoke mode.
    wrn = ["--model", "wrn-10-1", "-b", "16", "--workers", "0"] if smoke else ["--model", "wrn-28-10"]
    timed_run(steps, "wrn", 150, data, runs / "wrn", "-e", "1", "--recipe", "paper", *base, *wrn)
    # 5. bf16 autocast and torch.compile (smoke mode: bf16 alone; inductor's C++ build takes minutes on a CPU).
    fast = ["--amp", "bf16"] + ([] if smoke else ["--compile"])
    timed_run(steps, "bf16-compile", 200, data, runs / "fast", "-e", "2", *fast, *base, *small)
    # 6. bench.py on the device.
    code, output, seconds = steps.run("bench", 120, [sys.executable, "bench.py", "--quick", "--device", device])
    if code is None:
        steps.say("bench", None, "no time left")
    else:
        rows = [line for line in output.splitlines() if line.startswith("| ")]
        steps.say("bench", code == 0 and bool(rows), f"exit {code}, {len(rows)} table rows ({seconds:.0f} s)")
    print(json.dumps({"failed": steps.failed, "out": str(out)}))
    return 1 if steps.failed else 0


def inner_train(data: str, point: str, argv: list[str]) -> None:
    """train.py in this process, on the synthetic data, killed at ``point``; the peak GPU memory at exit."""
    import atexit
    import runpy

    from sgdr.testing import harness

    harness.use_checksums_of(Path(data))
    harness.apply(point)

    def report_peak() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            print(f"gpu_check: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)

    atexit.register(report_peak)
    sys.argv = [str(REPO / "train.py"), *argv]
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")


def inner_group(data: str, argv: list[str]) -> None:
    """One epoch of the multi-process code as rank 0 of 2, over a one-process group: NCCL on a GPU,
    Gloo on the CPU, with the Gloo control group; every collective returns at once."""
    import torch.distributed as dist

    from sgdr.parallel.distributed import Team
    from sgdr.run import experiment, settings, stopping
    from sgdr.testing.cifar_files import use_checksums_of

    use_checksums_of(Path(data))
    args = settings.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        control = dist.new_group(backend="gloo") if cuda else None
        team = Team(rank=0, world=2, control=control)
        exp = experiment.setup(args, team, torch.device("cuda", 0) if cuda else torch.device("cpu"))
        guard = stopping.Guard(team=team)
        exp.train_epoch(0, guard)
        exp.validate(guard)
        print("gpu_check: group epoch done", flush=True)
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--inner-train"]:
        inner_train(argv[1], argv[2], argv[4:])
        return 0
    if argv[:1] == ["--inner-group"]:
        inner_group(argv[1], argv[3:])
        return 0
    parser = Parser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--smoke", action="store_true", help="the same steps, tiny, on the CPU (default: off)")
    parser.add_argument(
        "--budget", type=number_in(10.0), default=400, help="seconds for all the steps, 10 or more (default: 400)"
    )
    parser.add_argument("--out", default="gpu_check_out", help="logs and summary.txt (default: gpu_check_out)")
    return check(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""The project's first-day check on one GPU: one line per check, every step time-boxed.

    python gpu_check.py                 on a machine with one CUDA GPU, from a fresh clone
    python gpu_check.py --smoke         the same steps, tiny, on the CPU (the test suite runs this)

No CIFAR-10 needed: it writes a synthetic one of the real size (50,000 + 10,000 images) in the real
on-disk format, and runs train.py on it through sgdr/testing/harness.py (which makes torchvision accept
the files' checksums and can kill a run at a chosen batch). Steps, most valuable first, each with a
cap (CAPS): the versions; the default ResNet34 run (seconds an epoch, peak GPU memory); a run killed
inside its second epoch and resumed with --deterministic, compared bit for bit with the same run
uninterrupted; one process under torchrun, and the multi-process code over a one-process NCCL group;
a paper-recipe WRN-28-10 epoch; bench.py on the device; ResNet34 with --amp bf16 --compile. Each step
runs in its own session and is stopped, with every process it started (torchrun's workers included),
at its cap (FAIL: killed at its time cap) or when the whole budget (--budget, default 270 s, with the
install about 6 minutes) is spent (SKIP: skipped for time). The caps of the steps up to the ranks
fit the default budget, so those always come back. Logs go to --out (default gpu_check_out/).
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
from dataclasses import dataclass
from pathlib import Path

import torch

from sgdr.cli import Parser, number_in
from sgdr.run import layout

REPO = Path(__file__).resolve().parent
HARNESS = REPO / "sgdr" / "testing" / "harness.py"


def log_of(out: Path, name: str) -> Path:
    return out / "logs" / f"{name}.log"


# The steps, most valuable first, each with its cap in seconds on a GPU (three times that in smoke mode).
# The first five together fit the default budget, so they always come back whatever the later ones
# would take; the later ones get what is left, and what they cannot have is said as skipped for time.
CAPS = {
    "env": 30,  # the versions, asked in a child
    "data": 30,  # the synthetic CIFAR-10 (about 4 s on a CPU)
    "resnet34": 60,  # the default run: seconds an epoch, peak memory
    "resume": 90,  # three runs of a 10,000-image subset: whole, killed, resumed
    "ranks": 60,  # two one-epoch runs of the subset: torchrun, and a one-process group
    "wrn": 90,  # a paper-recipe WRN-28-10 epoch
    "bench": 60,  # bench.py --quick on the device
    "bf16-compile": 150,  # --amp bf16 --compile: inductor's compilation alone may take 100-200 s
}
# About 6 minutes for the first GPU session with the install (pip install of torch: about 90 s).
BUDGET = 270

# How long a step stopped at its cap has to end after SIGTERM (torchrun passes it to its workers)
# before it and every process it started are killed.
GRACE = 10.0


@dataclass
class Result:
    """What became of a step's command: ``code`` is its exit status, None when it did not end by itself."""

    code: int | None
    output: str
    seconds: float
    cut: str = ""  # "" (it ended), "cap" (stopped at its own cap), "budget" (stopped when the budget ran out)
    cap: float = 0.0  # the step's own cap, in seconds

    @property
    def skipped(self) -> bool:
        """Never started, or stopped because the whole check's time was spent: skipped for time."""
        return self.code is None and self.cut != "cap"


def children_of(pids: set[int]) -> set[int]:
    """``pids`` and every process started under them, from /proc (empty where there is none). torchrun
    starts its workers in sessions of their own, so a process group misses them; the parent links don't."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    tree, grown = set(pids), True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return tree


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the command and everything it started (torchrun passes it on to its workers and
    waits for them), then, after ``grace`` seconds, SIGKILL to whatever of the tree is left."""
    tree = children_of({proc.pid})  # before anything ends: an orphan loses its parent link
    signal_all(tree, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    tree |= children_of(tree)
    signal_all(tree, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in tree - {proc.pid}):
        time.sleep(0.05)  # the killed workers, reaped by init


class Steps:
    """Runs commands, each in its own session, stopped with all it started at its cap or at the deadline.

    A command writes to its log file, not to a pipe: a worker that outlives its parent cannot hold
    the check up by keeping the pipe open."""

    def __init__(self, out: Path, budget: float, grace: float = GRACE, stretch: float = 1.0):
        """``stretch`` multiplies every cap: the smoke mode's CPUs differ far more in speed than GPUs do."""
        self.out, self.deadline, self.grace, self.stretch = out, time.monotonic() + budget, grace, stretch
        self.failed = 0
        self.skipped: list[str] = []  # the steps said as skipped for time
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cap: float, command: Sequence[str]) -> Result:
        cap *= self.stretch
        left = self.deadline - time.monotonic()
        limit = min(cap, left)
        if limit < 5:
            return Result(None, "no time left", 0.0, "budget", cap)
        start = time.monotonic()
        path = log_of(self.out, name)
        with open(path, "a") as log:
            log.write(f"$ {shlex.join(map(str, command))}\n")
            log.flush()
            begin = log.tell()
            proc = subprocess.Popen(
                list(map(str, command)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                code: int | None = proc.wait(timeout=limit)
                cut = ""
            except subprocess.TimeoutExpired:
                stop_tree(proc, self.grace)
                code, cut = None, "cap" if cap <= left else "budget"
        with open(path, errors="replace") as log:
            log.seek(begin)
            output = log.read()
        return Result(code, output, time.monotonic() - start, cut, cap)

    def say(self, name: str, ok: bool | None, text: str) -> None:
        word = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
        self.failed += ok is False
        print(f"{word} {name}: {text}", flush=True)
        with open(self.out / "summary.txt", "a") as summary:
            summary.write(f"{word} {name}: {text}\n")

    def say_unfinished(self, name: str, result: Result) -> None:
        """The line for a step that did not end by itself: FAIL at its cap, SKIP for time."""
        if result.cut == "cap":
            self.say(name, False, f"killed at its time cap of {result.cap:.0f} s; see {log_of(self.out, name)}")
        elif result.seconds:
            self.skipped.append(name)
            self.say(name, None, f"skipped for time: the budget ran out {result.seconds:.0f} s into the step")
        else:
            self.skipped.append(name)
            self.say(name, None, "skipped for time: no time left")


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
    result = steps.run(name, cap, train_command(data, "none", *args, "--output-dir", str(out)))
    if result.code is None:
        steps.say_unfinished(name, result)
        return
    times = epoch_times(result.output)
    if result.code != 0 or not times:
        steps.say(name, False, f"exit status {result.code}; see {log_of(steps.out, name)}")
        return
    later = f", then {times[-1]:.2f} s" if len(times) > 1 else ""
    steps.say(name, True, f"first epoch {times[0]:.2f} s{later}; {peak(result.output)} ({result.seconds:.0f} s in all)")


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
            # Read onto the CPU: a CUDA context here would lock later steps out of an exclusive-process GPU.
            if not _same(load_on_cpu(x), load_on_cpu(y)):
                differ.append(str(name))
        elif x.read_bytes() != y.read_bytes():
            differ.append(str(name))
    return differ


def load_on_cpu(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    return x == y


ENVIRONMENT = """
import json, torch
cuda = torch.cuda.is_available()
print("gpu_check:", json.dumps({
    "torch": torch.__version__, "cuda": torch.version.cuda, "available": cuda,
    "gpu": torch.cuda.get_device_name(0) if cuda else None,
    "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
    "bf16": torch.cuda.is_bf16_supported() if cuda else None,
}))
"""


def describe(steps: Steps, smoke: bool) -> dict | None:
    """The env line, from a child process; None when the check cannot go on (no GPU, or the child failed)."""
    asked = steps.run("env", CAPS["env"], [sys.executable, "-c", ENVIRONMENT])
    if asked.code is None:
        steps.say_unfinished("env", asked)
        return None
    found = re.findall(r"^gpu_check: (\{.*\})$", asked.output, re.M)
    if asked.code != 0 or not found:
        steps.say("env", False, f"could not ask PyTorch about the GPU; see {log_of(steps.out, 'env')}")
        return None
    env = json.loads(found[-1])
    if not smoke and not env["available"]:
        print("gpu_check.py: no CUDA GPU here; python gpu_check.py --smoke runs the steps on the CPU.", file=sys.stderr)
        return None
    gpu, nccl, bf16 = ("none (smoke mode, CPU)", "n/a", "n/a") if smoke else (env["gpu"], env["nccl"], env["bf16"])
    steps.say("env", True, f"torch {env['torch']}, CUDA {env['cuda']}, GPU {gpu}, NCCL {nccl}, bf16 {bf16}")
    return env


def check(args: argparse.Namespace) -> int:
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    out = Path(args.out)
    steps = Steps(out, args.budget, stretch=3.0 if smoke else 1.0)
    # The versions, and what PyTorch starts with: asked in a child, so that this process holds no
    # CUDA context while the steps run (on an exclusive-process GPU every step would be refused).
    if describe(steps, smoke) is None:
        return 2 if not steps.failed else 1
    # The data: full size on a GPU, a few batches in smoke mode.
    data = out / "data"
    per_file, test = (16, 32) if smoke else (10_000, 10_000)
    made = steps.run(
        "data",
        CAPS["data"],
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO)!r}); from sgdr.testing import cifar_files; "
            f"cifar_files.write_cifar10({str(data)!r}, {per_file}, {test})",
        ],
    )
    if made.code is None:
        steps.say_unfinished("data", made)
        return 1
    if made.code != 0:
        steps.say("data", False, f"could not write the synthetic CIFAR-10; see {log_of(out, 'data')}")
        return 1
    steps.say("data", True, f"{5 * per_file:,} + {test:,} synthetic images in CIFAR-10's format ({made.seconds:.0f} s)")
    base = ["--data-dir", str(data), "--device", device, "--seed", "1"]
    small = ["--model", "wrn-10-1", "-b", "16", "--workers", "0"] if smoke else []
    runs = out / "runs"
    # A subset for the steps whose value is in what they check rather than in their times: 79 batches.
    subset = [] if smoke else ["--train-subset", "10000"]
    # 1. The default ResNet34 run, as run.sh starts it: 2 epochs.
    timed_run(steps, "resnet34", CAPS["resnet34"], data, runs / "resnet34", "-e", "2", *base, *small)
    # 2. Killed inside epoch 2 and resumed, --deterministic, against the same run uninterrupted.
    resume = ["-e", "2", "--deterministic", *base, *small, *subset]
    kill_at = 5 + 2 if smoke else 79 + 40
    whole, killed = runs / "deterministic", runs / "killed"
    each = CAPS["resume"] / 3
    results = [
        steps.run("resume", each, train_command(data, "none", *resume, "--output-dir", str(whole))),
        steps.run("resume", each, train_command(data, f"batch:{kill_at}", *resume, "--output-dir", str(killed))),
        steps.run("resume", each, train_command(data, "none", *resume, "--resume", "--output-dir", str(killed))),
    ]
    if any(result.cut == "cap" for result in results):
        steps.say_unfinished("resume", next(result for result in results if result.cut == "cap"))
    elif any(result.skipped for result in results):
        steps.say_unfinished("resume", next(result for result in results if result.skipped))
    elif [result.code for result in results] != [0, -signal.SIGKILL, 0]:
        codes = ", ".join(str(result.code) for result in results)
        steps.say("resume", False, f"exit statuses {codes} (want 0, -9, 0); see {log_of(out, 'resume')}")
    else:
        differ = same_files(whole, killed)
        detail = "bit for bit the uninterrupted run" if not differ else f"differs: {', '.join(differ[:5])}"
        steps.say("resume", not differ, f"killed at batch {kill_at}, resumed: {detail}")
    # 3. One GPU, several-process code: torchrun with one process, and the multi-process paths
    # (DDP, sums, buffer broadcast, the Gloo control group) as rank 0 of 2 over a one-process group.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(HARNESS)]
    one = [*torchrun, str(data), "none", str(REPO / "train.py"), "-e", "1", *base, *small, *subset]
    alone = steps.run("ranks", CAPS["ranks"] / 2, [*one, "--output-dir", str(runs / "torchrun")])
    group = [sys.executable, __file__, "--inner-group", str(data), "--", "-e", "1", *base, *small, *subset]
    grouped = steps.run("ranks", CAPS["ranks"] / 2, [*group, "--output-dir", str(runs / "group")])
    unfinished = [result for result in (alone, grouped) if result.code is None]
    if unfinished:
        steps.say_unfinished("ranks", unfinished[0])
    else:
        ok = alone.code == 0 and grouped.code == 0 and "gpu_check: group epoch done" in grouped.output
        steps.say(
            "ranks",
            ok,
            f"torchrun, 1 process: exit {alone.code}; rank 0 of 2 over a 1-process group: exit {grouped.code}",
        )
    # 4. A paper-recipe WRN-28-10 epoch (781 batches of 128), or a small one in smoke mode.
    wrn = ["--model", "wrn-10-1", "-b", "16", "--workers", "0"] if smoke else ["--model", "wrn-28-10"]
    timed_run(steps, "wrn", CAPS["wrn"], data, runs / "wrn", "-e", "1", "--recipe", "paper", *base, *wrn)
    # 5. bench.py on the device.
    bench = steps.run("bench", CAPS["bench"], [sys.executable, "bench.py", "--quick", "--device", device])
    if bench.code is None:
        steps.say_unfinished("bench", bench)
    else:
        rows = [line for line in bench.output.splitlines() if line.startswith("| ")]
        steps.say(
            "bench",
            bench.code == 0 and bool(rows),
            f"exit {bench.code}, {len(rows)} table rows ({bench.seconds:.0f} s)",
        )
    # 6. bf16 autocast and torch.compile (smoke mode: bf16 alone; inductor's C++ build takes minutes on a CPU).
    fast = ["--amp", "bf16"] + ([] if smoke else ["--compile"])
    timed_run(steps, "bf16-compile", CAPS["bf16-compile"], data, runs / "fast", "-e", "2", *fast, *base, *small)
    print(json.dumps({"failed": steps.failed, "skipped_for_time": steps.skipped, "out": str(out)}))
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
        "--budget",
        type=number_in(10.0),
        default=BUDGET,
        help=f"seconds for all the steps, 10 or more (default: {BUDGET}, with the install about 6 minutes)",
    )
    parser.add_argument("--out", default="gpu_check_out", help="logs and summary.txt (default: gpu_check_out)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"argument --out: {args.out} is a file; name a folder for the logs (it is made if missing)")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())

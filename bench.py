"""Benchmark: the reference data pipeline and training step against this project's, in one run.

Synthetic data in CIFAR-10's shape, so no data set is needed. Prints one table: images per
second of each pipeline and each training step with their ratios, the step's GFLOP/s as a
fraction of this machine's measured matrix-product rate (labelled fp32 or tf32), a whole epoch on a subset through
the functions train.py runs (sgdr/run/epoch.py), and (without --quick) every CPU option tried.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from sgdr import storage
from sgdr.cli import Parser, int_at_least, reports_user_errors
from sgdr.data import cifar, loaders
from sgdr.paper.grid import DEFAULTS as GRID_DEFAULTS
from sgdr.parallel import devices, distributed
from sgdr.run import checkpoint, experiment, settings, stopping
from sgdr.run.epoch import train_epoch
from sgdr.training import recipes
from sgdr.training.networks import build_network, count_parameters
from sgdr.training.schedules import build_schedule

# The paper's grid as grid.sh trains it by default: its schedules x its seeds (35 runs of 200 epochs).
GRID_RUNS = len(GRID_DEFAULTS["SCHEDULES"].split()) * len(GRID_DEFAULTS["SEEDS"].split())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return (
        f"{device.type} ({name}), {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, Python {platform.python_version()}"
    )


def precision(kind: str, device: torch.device) -> str:
    """The precision ``kind`` of work ("matmul" or "conv") computes fp32 products in, as the flags stand:
    TF32 on CUDA where they allow it (on Ampere and newer GPUs), fp32 on the CPU."""
    allowed = torch.backends.cuda.matmul.allow_tf32 if kind == "matmul" else torch.backends.cudnn.allow_tf32
    return "tf32" if device.type == "cuda" and allowed else "fp32"


def matmul_gflops(device: torch.device, n: int, seconds: float) -> dict[str, tuple[float, str]]:
    """Measured rates (GFLOP/s, with the precision each ran in) of n x n by n x n products of fp32 tensors,
    the machine's practical peak for this kind of work: through torch.matmul (the BLAS library) and as a
    1x1 convolution (the convolution library, which runs the network's convolutions too, in their
    precision). On some CPUs one library is twice as fast as the other, so both are measured.

    Products are timed in batches between two synchronisations, each batch twice as long as the last
    until one lasts ``seconds``: a single small product between two syncs would time the launch and
    the sync rather than the arithmetic."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    # the same product as a convolution: n output channels, n input channels, n pixels
    image = a.t().reshape(1, n, n // 32, 32).contiguous(memory_format=torch.channels_last)
    kernel = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    products = {
        "torch.matmul": (lambda: torch.matmul(a, b), "matmul"),
        "1x1 convolution": (lambda: F.conv2d(image, kernel), "conv"),
    }

    def run(product: Callable[[], object], repeats: int) -> None:
        for _ in range(repeats):
            product()

    rates = {}
    for name, (product, kind) in products.items():
        product()
        repeats = 1
        while (elapsed := timed(device, partial(run, product, repeats))) < seconds:
            repeats *= 2
        rates[name] = 2 * n**3 * repeats / elapsed / 1e9, precision(kind, device)
    return rates


def synthetic(images: int, seed: int = 0) -> cifar.InMemoryCIFAR:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    return cifar.InMemoryCIFAR(data, [int(x) for x in rng.integers(0, 10, images)])


def data_rate(loader, device: torch.device) -> float:
    """Images per second through one epoch of ``loader``, from the first batch to the last
    (worker start-up excluded, which favours the reference)."""
    batches = iter(loader)
    first, _ = next(batches)
    count = 0

    def drain():
        nonlocal count
        for images, _ in batches:
            count += len(images)

    elapsed = timed(device, drain)
    return count / elapsed


Stepper = Callable[[int], float]  # steps -> images per second


def reference_stepper(model, images, labels, device: torch.device) -> Stepper:
    """The tutorial's training step: contiguous tensors, fp32, and ``loss.item()`` every batch."""
    optimizer = recipes.reference_optimizer(model)

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    def rate(steps: int) -> float:
        step()  # a warm-up step right before each measurement (see paired)
        return steps * len(labels) / timed(device, lambda: [step() for _ in range(steps)])

    step()
    return rate


def our_stepper(
    net,
    model,
    images,
    labels,
    device: torch.device,
    autocast=nullcontext,
    make_optimizer: Callable = recipes.reference_optimizer,
) -> Stepper:
    """``train_epoch``, the one train.py runs, over copies of one batch (with the
    tutorial's optimiser, or ``make_optimizer``'s)."""
    optimizer = make_optimizer(model)
    schedule = build_schedule(optimizer, True, 50, 1, [])

    def epoch(batches: int):
        train_epoch(net, [(images, labels)] * batches, optimizer, schedule, 0, device, autocast)

    def rate(steps: int) -> float:
        epoch(1)  # a warm-up step right before each measurement (see paired)
        return steps * len(labels) / timed(device, lambda: epoch(steps))

    epoch(2)  # a compiled network needs a second call to settle
    return rate


@dataclass
class Paired:
    """A variant against the reference, measured in ABBA rounds (reference, variant, variant,
    reference) so that the machine's drift cancels inside each round; the ratio is taken per round."""

    reference: list[float]
    variant: list[float]

    @property
    def ratios(self) -> list[float]:
        return [v / r for v, r in zip(self.variant, self.reference)]

    def ratio(self) -> str:
        ratios = self.ratios
        middle = f"{statistics.median(ratios):.2f}x"
        return middle if len(ratios) == 1 else f"{middle} ({min(ratios):.2f}-{max(ratios):.2f})"


def paired(reference: Stepper, variant: Stepper, steps: int, rounds: int, variant_steps: int | None = None) -> Paired:
    """Images/s of ``reference`` and ``variant`` in ``rounds`` ABBA rounds (see ``Paired``).

    Each stepper warms up right before it is timed: on the CPU a step's speed depends on
    what ran just before it (the allocator's state after another network's steps).
    """
    result = Paired([], [])
    for _ in range(rounds):
        a1 = reference(steps)
        b1, b2 = variant(variant_steps or steps), variant(variant_steps or steps)
        a2 = reference(steps)
        result.reference.append((a1 + a2) / 2)
        result.variant.append((b1 + b2) / 2)
    return result


def step_flops(model, images, labels) -> float:
    """Floating-point operations of one training step (forward and backward), counted by torch."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def variant(model_name: str, device: torch.device, batch_size: int, channels_last: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = build_network(model_name, 10).to(device)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model, images, labels


def run_setup(model_name: str, device: torch.device, data, folder: str, *flags: str) -> experiment.Experiment:
    """A run built by ``experiment.setup``, as train.py builds it, from train.py's flags (its defaults,
    the reference run's, unless ``flags`` say otherwise), on ``data`` (training and test sets), with its
    folder in ``folder``. Every row is timed as train.py runs: ``setup`` sets its precision (TF32
    convolutions by default) and, on CUDA, cuDNN's autotuning."""
    args = settings.parse_args(["--model", model_name, "--seed", "0", "--output-dir", folder, *flags])
    return experiment.setup(args, device=device, data=data)


def epoch_seconds(
    kind: str,
    train_set,
    test_set,
    model_name: str,
    batch_size: int,
    device: torch.device,
    workers: int,
    channels_last: bool,
) -> tuple[float, float]:
    """(seconds of one epoch - training and validation - of a run set up as train.py sets it up,
    with warm restarts (T_0 = 50), ``kind`` of loader and memory format; seconds of the data
    pipeline alone over the same batches).

    On CUDA an untimed epoch runs first: the network's first calls autotune cuDNN for every
    convolution shape and load kernels lazily, once a run, not once an epoch. (On the CPU there is
    no autotuning; its rows stay comparable with those measured before.)"""
    layout = "--channels-last" if channels_last else "--no-channels-last"
    flags = ["-wr", "-b", str(batch_size), "--loader", kind, "--workers", str(workers), layout]
    with tempfile.TemporaryDirectory(prefix=".bench-epoch-") as folder:  # setup reads it; nothing is written
        run = run_setup(model_name, device, (train_set, test_set), folder, *flags)
        data_only = timed(device, lambda: [None for loader in (run.train_loader, run.test_loader) for _ in loader])

        def epoch():
            run.train_epoch(0, stopping.Guard())
            run.validate(stopping.Guard())

        if device.type == "cuda":
            epoch()
        return timed(device, epoch), data_only


def row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations of everything, no option sweep (seconds)"
    )
    # The same checks as train.py's flags: a bad value is a parser error, not a traceback.
    parser.add_argument(
        "--model",
        type=settings.model_name,
        default="resnet34",
        help="network, as train.py's --model (default: resnet34)",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=128, help="images per batch (default: 128)")
    parser.add_argument("--device", type=devices.device_name, default=devices.AUTO, help="as train.py's --device")
    parser.add_argument(
        "--models",
        type=settings.model_name,
        nargs="+",
        metavar="MODEL",
        help="instead: time train.py's training step and checkpoint for each network and estimate an epoch",
    )
    parser.add_argument(
        "--stop-agreement",
        action="store_true",
        help="instead: what the stop check costs a batch with 2 processes over Gloo on this machine, agreeing "
        f"at every batch against every {stopping.AGREE_EVERY} (train.py's)",
    )
    return parser


def _agreeing_process(rank: int, port: int, batches: int, every: int, results) -> None:
    """One of two processes: ``batches`` batch boundaries of a Guard that agrees every ``every``."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        guard = stopping.Guard(team=distributed.Team(rank, 2, rank), every=every)
        guard.check()  # both ready
        start = time.perf_counter()
        for batch in range(batches):
            guard.after_batch(batch)
        guard.check()
        if rank == 0:
            results.put((time.perf_counter() - start) / batches)
    finally:
        dist.destroy_process_group()


def stop_agreement(batches: int) -> None:
    """Microseconds a batch that two processes (Gloo, this machine) spend agreeing on stopping."""
    import multiprocessing
    import socket

    context = multiprocessing.get_context("spawn")
    print(f"| agreement | per batch, 2 processes over Gloo ({batches} batches) |\n| --- | --- |")
    for every in (1, stopping.AGREE_EVERY):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results = context.Queue()
        processes = [
            context.Process(target=_agreeing_process, args=(rank, port, batches, every, results)) for rank in (0, 1)
        ]
        for process in processes:
            process.start()
        seconds = results.get(timeout=300)
        for process in processes:
            process.join()
        print(row([f"every {every} batch{'es' * (every > 1)}", f"{seconds * 1e6:,.1f} us"]))


def compare_models(names: Sequence[str], device: torch.device, batch: int, steps: int, repeats: int) -> None:
    """train.py's training step (channels_last, the default) for each network under each recipe,
    what that makes one training epoch (validation not included): the tutorial's 50,000 images
    in 391 batches, the paper's 100,000 samples in 781; the paper's grid of GRID_RUNS runs of 200 such
    epochs; and what the checkpoint written at the end of every epoch costs beside an epoch."""
    batches = {}
    for recipe in recipes.RECIPES.values():
        samples = cifar.TRAIN_IMAGES * (2 if recipe.mirrored_epoch else 1)
        batches[recipe.name] = loaders.epoch_batches(samples, batch, recipe.drop_last)
    print(
        row(
            [
                "network",
                "parameters",
                "GFLOP a step",
                "images/s, tutorial",
                f"tutorial epoch ({batches['tutorial']} batches)",
                "images/s, paper",
                f"paper epoch ({batches['paper']} batches)",
                f"paper grid ({GRID_RUNS} x 200 epochs)",
                "checkpoint",
                "checkpoint write (read)",
                "write / epoch",
            ]
        )
    )
    print(row(["---"] * 11))
    for name in names:
        model, images, labels = variant(name, device, batch, channels_last=True)
        flops = step_flops(model, images, labels)
        rates = {
            recipe.name: our_stepper(model, model, images, labels, device, make_optimizer=recipe.optimizer)(steps)
            for recipe in recipes.RECIPES.values()
        }
        seconds = {k: batches[k] * batch / rates[k] for k in rates}
        size, write, read = checkpoint_cost(name, device, batch, repeats)
        print(
            row(
                [
                    name,
                    f"{count_parameters(model)[0]:,}",
                    f"{flops / 1e9:,.1f}",
                    f"{rates['tutorial']:,.1f}",
                    f"{seconds['tutorial'] / 60:,.1f} min",
                    f"{rates['paper']:,.1f}",
                    f"{seconds['paper'] / 60:,.1f} min",
                    f"{GRID_RUNS * 200 * seconds['paper'] / 3600:,.0f} h",
                    f"{size / 1e6:,.1f} MB",
                    f"{write:.2f} s ({read:.2f} s)",
                    f"{write / seconds['tutorial']:.2%}",
                ]
            ),
            flush=True,
        )
    sync = folder_sync_seconds(repeats * 3)
    print(
        f"\nThe checkpoint's write includes syncing its folder after the rename, so that a power cut cannot undo "
        f"it: {sync * 1e3:.2f} ms a sync here (median of {repeats * 3}), twice an epoch (checkpoint and run record)."
    )


def folder_sync_seconds(repeats: int) -> float:
    """Median seconds of syncing a folder after a rename into it, as each epoch does twice (its checkpoint and its
    run record; see storage.atomic_write), in a folder under the working directory, then removed."""
    seconds = []
    with tempfile.TemporaryDirectory(prefix=".bench-sync-", dir=os.getcwd()) as folder:
        for k in range(repeats):
            storage.save_json(Path(folder) / "run.json", {"epoch": k})  # a rename, not yet synced
            start = time.perf_counter()
            storage.sync_folder(folder)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def checkpoint_cost(model_name: str, device: torch.device, batch: int, repeats: int) -> tuple[int, float, float]:
    """Size, median write and median read seconds of train.py's checkpoint of ``model_name`` at the
    end of a 200-epoch run of the reference settings (full histories, momentum buffers): the run is set
    up by ``experiment.setup`` and saved by its ``save`` (a temporary file, fsync, rename), as in
    train.py, into a folder under the working directory, then removed."""
    with tempfile.TemporaryDirectory(prefix=".bench-checkpoint-", dir=os.getcwd()) as folder:
        run = run_setup(model_name, device, (synthetic(batch), synthetic(batch, 1)), folder, "-b", str(batch))
        images, labels = next(iter(run.train_loader))
        F.cross_entropy(run.net(images), labels).backward()
        run.optimizer.step()  # the optimiser's state (momentum buffers) now exists, as in any checkpoint
        epochs, batches = 200, loaders.epoch_batches(cifar.TRAIN_IMAGES, batch, drop_last=False)
        run.history = {key: [0.5] * epochs for key in ("train_loss", "test_loss", "train_acc", "test_acc")}
        run.history["lr"] = [0.05] * (epochs * batches)
        run.epochs_done = epochs
        writes, reads = [], []
        for _ in range(repeats):
            writes.append(timed(device, run.save))
            reads.append(timed(device, lambda: checkpoint.load(run.files.checkpoint)))
        return run.files.checkpoint.stat().st_size, statistics.median(writes), statistics.median(reads)


PRECISION = {
    "cuda": "train.py's default (--tf32 conv, PyTorch's own): cuDNN convolutions in TF32 on Ampere and newer "
    "GPUs, matrix products in fp32; cuDNN autotuning on",
    "cpu": "fp32 (train.py's default; TF32 does not exist on the CPU)",
}


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = devices.pick_device(args.device)
    quick = args.quick
    batch, steps, rounds = args.batch_size, 2 if quick else 3, 1 if quick else 5
    workers = settings.DECIDES["workers"].new_run(device)  # train.py's default for the reference loader
    pool = synthetic(batch * (4 if quick else 40))
    print(f"Machine: {machine(device)}")
    # As train.py runs by default, from the first row on: PyTorch's precision and, on CUDA, autotuning.
    devices.set_precision("conv")
    devices.set_determinism(False, device)
    print(f"Precision: {PRECISION[device.type]}")
    if args.stop_agreement:
        stop_agreement(200 if quick else 5000)
        return 0
    if args.models:
        print(f"Work: batch {batch}, {steps} steps each after warm-up, synthetic data\n")
        compare_models(args.models, device, batch, steps, 3 if quick else 7)
        return 0
    print(f"Work: {args.model}, batch {batch}, synthetic CIFAR-10-shaped data{' (quick mode)' if quick else ''}")

    matmul = matmul_gflops(device, 512 if quick else 2048, 0.2 if quick else 1.0)
    fastest = max(matmul, key=lambda name: matmul[name][0])
    peak = matmul[fastest][0]

    generator = torch.Generator().manual_seed(0)
    ref_loader, _ = loaders.make_loaders(pool, pool, "torchvision", batch, generator, device, workers)
    our_loader, _ = loaders.make_loaders(pool, pool, "device", batch, generator, device, channels_last=True)
    data = paired(lambda _: data_rate(ref_loader, device), lambda _: data_rate(our_loader, device), 0, rounds)

    model, images, labels = variant(args.model, device, batch, channels_last=False)
    flops = step_flops(model, images, labels)
    reference = reference_stepper(model, images, labels, device)
    model, images, labels = variant(args.model, device, batch, channels_last=True)
    step = paired(reference, our_stepper(model, model, images, labels, device), steps, rounds)
    ref_step, our_step = statistics.median(step.reference), statistics.median(step.variant)

    def gflops(rate: float) -> str:
        achieved = flops * rate / batch / 1e9
        return f"{achieved:,.0f} GFLOP/s = {achieved / peak:.2f} of matmul"

    subset_train, subset_val = synthetic(batch * (2 if quick else 8), 1), synthetic(batch * (1 if quick else 4), 2)
    ref_epoch, ref_epoch_data = epoch_seconds(
        "torchvision", subset_train, subset_val, args.model, batch, device, workers, False
    )
    our_epoch, _ = epoch_seconds("device", subset_train, subset_val, args.model, batch, device, workers, True)

    print()
    print(row(["measurement", "reference", "this project", "ratio (range over rounds)"]))
    print(row(["---"] * 4))
    print(
        row(
            [
                "data pipeline, images/s",
                f"{statistics.median(data.reference):,.0f} (DataLoader, PIL transforms, {workers} workers)",
                f"{statistics.median(data.variant):,.0f} (on-device loader)",
                data.ratio(),
            ]
        )
    )
    print(
        row(
            [
                "training step, images/s",
                f"{ref_step:,.1f} (contiguous, fp32, .item() every batch)",
                f"{our_step:,.1f} (channels_last, fp32, no per-batch sync)",
                step.ratio(),
            ]
        )
    )
    print(row(["training step, GFLOP/s", gflops(ref_step), gflops(our_step), step.ratio()]))
    print(
        row(
            [
                f"epoch: {len(subset_train):,} training + {len(subset_val):,} validation images, s",
                f"{ref_epoch:.2f} (data alone: {ref_epoch_data:.2f} = {ref_epoch_data / ref_epoch:.0%})",
                f"{our_epoch:.2f}",
                f"{ref_epoch / our_epoch:.2f}x",
            ]
        )
    )
    print(
        f"\nMatrix products of fp32 tensors: "
        f"{', '.join(f'{rate:,.0f} GFLOP/s through {name} ({kind})' for name, (rate, kind) in matmul.items())}; "
        f"fractions of matmul are of the faster ({fastest}). One training step: {flops / 1e9:,.1f} GFLOP."
    )
    print(
        f"Rates are medians over {rounds} round(s) of reference, variant, variant, reference; training: "
        f"{steps} steps each after a warm-up step. Ratios are taken within each round."
    )
    if not quick:
        print("\nOptions for the training step, each through train.py's loop, each paired with the reference step:\n")
        print(row(["option", "images/s", "vs reference (range over rounds)"]))
        print(row(["---"] * 3))
        print(row(["reference step again (the noise floor)", "", paired(reference, reference, steps, rounds).ratio()]))
        for name, (stepper, option_steps) in option_trials(args.model, device, batch, steps).items():
            result = paired(reference, stepper, steps, rounds, option_steps)
            print(row([name, f"{statistics.median(result.variant):,.1f}", result.ratio()]), flush=True)
    return 0


def option_trials(model_name: str, device: torch.device, batch: int, steps: int) -> dict[str, tuple[Stepper, int]]:
    """One stepper per option (and channels_last with compile), each through ``train_epoch`` (sgdr/run/epoch.py)."""
    threads = torch.get_num_threads()
    bf16 = partial(torch.autocast, device.type, dtype=torch.bfloat16)
    options = [
        ("contiguous (train.py's loop: no per-batch sync)", dict(channels_last=False)),
        ("channels_last, bf16 autocast", dict(channels_last=True, autocast=bf16, steps=1)),
        ("contiguous, torch.compile", dict(channels_last=False, compile=True)),
        ("channels_last, torch.compile", dict(channels_last=True, compile=True)),
    ]
    if device.type == "cpu":
        options += [
            (f"channels_last, 1 thread (instead of {threads})", dict(channels_last=True, threads=1)),
            ("channels_last, oneDNN off", dict(channels_last=True, mkldnn=False)),
        ]
    trials = {}
    for name, option in options:
        model, images, labels = variant(model_name, device, batch, option["channels_last"])
        net = torch.compile(model) if option.get("compile") else model
        stepper = our_stepper(net, model, images, labels, device, option.get("autocast", nullcontext))
        trials[name] = (
            _with_settings(stepper, option.get("threads", threads), option.get("mkldnn", True)),
            option.get("steps", steps),
        )
    return trials


def _with_settings(stepper: Stepper, threads: int, mkldnn: bool) -> Stepper:
    """``stepper`` run with a thread count and oneDNN setting, the previous ones restored after."""

    def run(steps: int) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.backends.mkldnn.flags(enabled=mkldnn):
                return stepper(steps)
        finally:
            torch.set_num_threads(before)

    return run


if __name__ == "__main__":
    sys.exit(main())

"""The name of every file a run writes: the reference's outputs in the output folder, and the run's own folder
(``<output folder>/runs/<schedule>``) with its checkpoint, record, metrics and snapshots. Nobody else builds
these paths."""

from __future__ import annotations

import re
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

OUTPUT_DIR = "outputs"  # where a run's files go, unless --output-dir says
COMBINED_FIGURE = "loss_plot_combined.jpg"
RUNS = "runs"  # in an output folder: the run folders
CHECKPOINT, RECORD, METRICS, SNAPSHOTS = "checkpoint.pt", "run.json", "metrics.jsonl", "snapshots"  # in a run folder
SNAPSHOT = re.compile(r"epoch_(\d{4,})\.pt")  # the only names of snapshots; anything else in snapshots/ is the user's


@dataclass(frozen=True)
class RunFiles:
    """Every file of one run: the reference's outputs, and the run's own folder for resuming."""

    loss_figure: Path
    train_loss: Path
    val_loss: Path
    run_dir: Path  # outputs/runs/<name>: checkpoint and record, beside the reference files
    lr_figure: Path | None = None
    lr_values: Path | None = None

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def record(self) -> Path:
        return record_of(self.run_dir)

    @property
    def metrics(self) -> Path:
        """Per-epoch losses and top-1 accuracies, one JSON object a line."""
        return metrics_of(self.run_dir)

    @property
    def log(self) -> Path:
        """The run's output as a job of a SLURM array writes it (``grid.sh --submit``), beside its folder."""
        return self.run_dir.with_name(f"{self.run_dir.name}.log")

    def snapshot(self, epoch: int) -> Path:
        """The network at the end of a warm-restart cycle (the paper's snapshot ensembles)."""
        return self.run_dir / SNAPSHOTS / f"epoch_{epoch:04d}.pt"

    def reference(self) -> list[Path]:
        """The reference's output files (plus the lr pickle beside the lr figure)."""
        return [p for p in (self.loss_figure, self.train_loss, self.val_loss, self.lr_figure, self.lr_values) if p]

    def all(self) -> list[Path]:
        """Every file of the run that exists or may: reference files, checkpoint, record, metrics, snapshots."""
        return [*self.reference(), self.checkpoint, self.record, self.metrics, *snapshots_in(self.run_dir)[0]]


def record_of(run_dir: str | Path) -> Path:
    """A run folder's record, ``run.json``."""
    return Path(run_dir) / RECORD


def damaged(path: Path) -> Path:
    """Where a damaged file of a run is kept when the run starts it again (``run.json.damaged``)."""
    return path.with_name(f"{path.name}.damaged")


def metrics_of(run_dir: str | Path) -> Path:
    """A run folder's per-epoch metrics, ``metrics.jsonl``."""
    return Path(run_dir) / METRICS


def records_under(root: str | Path) -> list[Path]:
    """The record of every run folder under ``root`` (``.../runs/<run>/run.json``), sorted."""
    return sorted(Path(root).rglob(f"{RUNS}/*/{RECORD}"))


def in_the_way(files: RunFiles) -> list[str]:
    """What stands where the run writes: a folder (or other non-file) where a file of it goes, a
    file where its snapshots' folder goes. Each as ``PATH is ..., where ...``."""
    wrong = [
        f"{path} is a {'folder' if path.is_dir() else 'special file'}, where this run writes a file"
        for path in [*files.reference(), files.checkpoint, files.record, files.metrics]
        if path.exists() and not path.is_file()
    ]
    snapshots = files.run_dir / SNAPSHOTS
    if snapshots.exists() and not snapshots.is_dir():
        wrong.append(f"{snapshots} is a file, where this run keeps its snapshots (a folder)")
    return wrong


def snapshots_in(run_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(the snapshots in ``run_dir``/snapshots, oldest first; the other entries there, which this project neither
    reads nor removes: a user's own ``epoch_best.pt``, a folder ...). Hidden files (temporaries) are in neither."""
    ours, others = [], []
    for path in sorted((Path(run_dir) / SNAPSHOTS).glob("*")):
        if path.name.startswith("."):
            continue
        match = SNAPSHOT.fullmatch(path.name)
        # Exactly the name RunFiles.snapshot gives (not epoch_00001.pt), and a file.
        if match and path.name == f"epoch_{int(match[1]):04d}.pt" and path.is_file():
            ours.append(path)
        else:
            others.append(path)
    return sorted(ours, key=snapshot_epoch), others


def snapshot_epoch(path: Path) -> int:
    """The epoch (from 1) whose end a snapshot holds the network of."""
    return int(SNAPSHOT.fullmatch(path.name)[1])


def run_files(output_dir: str | Path, warm_restart: bool, t_zero: int, t_mult: int, swa: bool = False) -> RunFiles:
    """``loss.jpg`` & co. for the multistep run; ``wr_*_s{T_0}_m{T_mult}`` for warm restarts; ``swa_*`` for
    SWA's schedule (``swa``), beside them."""
    out = Path(output_dir)
    if swa:
        return RunFiles(out / "swa_loss.jpg", out / "swa_train_loss.pkl", out / "swa_val_loss.pkl", out / RUNS / "swa")
    if not warm_restart:
        return RunFiles(out / "loss.jpg", out / "train_loss.pkl", out / "val_loss.pkl", out / RUNS / "multistep")
    tag = f"s{t_zero}_m{t_mult}"
    return RunFiles(
        loss_figure=out / f"wr_loss_{tag}.jpg",
        train_loss=out / f"wr_train_loss_{tag}.pkl",
        val_loss=out / f"wr_val_loss_{tag}.pkl",
        run_dir=out / RUNS / f"wr_{tag}",
        lr_figure=out / f"lr_schedule_{tag}.jpg",
        lr_values=out / f"lr_schedule_{tag}.pkl",
    )


def files_of(args: Namespace, output_dir: str | Path | None = None) -> RunFiles:
    """The files of the run train.py's parsed ``args`` name (in ``output_dir`` if given). The names follow
    the reference's, from the schedule's kind, T_0 and T_mult alone: a run with another --lr or shaping
    option in the same folder is another run's settings there, refused on resume (grid.sh gives such
    runs folders of their own)."""
    out = args.output_dir if output_dir is None else output_dir
    return run_files(out, args.warm_restart, args.t_zero, args.t_mult, getattr(args, "swa_start", None) is not None)


def combined_figure(output_dir: str | Path) -> Path:
    """Where ``plot.py`` writes the three validation-loss curves."""
    return Path(output_dir) / COMBINED_FIGURE


def train_command(warm_restart: bool, t_zero: int, t_mult: int, output_dir: str | Path) -> str:
    """The ``train.py`` flags that select a run's files (used in error messages; epochs are free)."""
    words = ["python train.py"]
    if warm_restart:
        words.append(f"--warm-restart -t0 {t_zero}" + (f" -tm {t_mult}" if t_mult != 1 else ""))
    if Path(output_dir) != Path("outputs"):
        words.append(f"--output-dir {output_dir}")
    return " ".join(words)

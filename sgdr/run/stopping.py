"""How a run stops early, the same way in every process: signals ask for a stop, a non-finite loss
is noticed without making the host wait, and the ``Guard`` decides at batch boundaries. With
several processes they agree every ``AGREE_EVERY`` batches (a small blocking collective) and at the
end of each epoch, not after every batch: every process stops at the same boundary, and the
checkpoint holds only complete epochs, so resume stays exact wherever in the epoch it stopped."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sgdr.parallel.distributed import Team

# With several processes, the batches between two agreements on stopping: a stop asked for by a
# signal waits at most this many batches less one; a lone process looks at every batch (for free).
AGREE_EVERY = 16
NONE = 2**62  # above any batch index


class Interrupted(Exception):
    """Raised at the first batch boundary after SIGINT or SIGTERM; SIGPIPE stands for a closed output."""

    def __init__(self, signum: int, why: str = ""):
        super().__init__(why or signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Set by a signal handler; ``Guard.check`` stops every process at the next batch boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM ask the run to stop at the next batch boundary.

    After the first, a second Ctrl-C raises KeyboardInterrupt at once. Previous handlers
    come back on exit (signals can only be handled from the main thread).
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        stop.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            f"\n{signal.Signals(signum).name}: stopping at the next batch boundary (Ctrl-C again aborts at once).",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"epoch {epoch + 1}, batch {batch + 1}")
        self.epoch, self.batch = epoch, batch


class NonFiniteWatch:
    """Notes the first batch whose loss is not finite, without making the host wait.

    The index is kept on the device; on CUDA a non-blocking copy to pinned memory lets
    the loop look at it every batch (a batch or two late) without a sync. On the CPU the
    look is immediate.
    """

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.host = self.first if device.type == "cpu" else torch.full((), -1, dtype=torch.long).pin_memory()

    def update(self, loss: torch.Tensor, batch: int) -> None:
        self.first.masked_fill_((self.first < 0) & ~torch.isfinite(loss), batch)
        if self.host is not self.first:
            self.host.copy_(self.first, non_blocking=True)

    def first_seen(self) -> int | None:
        first = int(self.host)
        return first if first >= 0 else None


class Guard:
    """Decides at batch boundaries whether the run goes on, the same way in every process: a stop
    request (a signal) or a non-finite loss in any process stops all of them at the same boundary."""

    def __init__(self, stop: StopRequest | None = None, team: Team | None = None, every: int = AGREE_EVERY):
        self.stop = stop or StopRequest()
        self.team = team or Team()
        self.every = every if self.team.world > 1 else 1

    def after_batch(self, batch: int, epoch: int = 0, bad_batch: int | None = None) -> None:
        """After batch ``batch`` (from 0) of an epoch: ``check`` every ``every`` batches. Every process
        counts the same batches, so all of them agree at the same ones."""
        if (batch + 1) % self.every == 0:
            self.check(epoch, bad_batch)

    def check(self, epoch: int = 0, bad_batch: int | None = None) -> None:
        """Stop now if any process was asked to or saw a non-finite loss (with several processes, a
        collective: every one of them must call it at the same point). The batch named is the first any
        process saw (the agreement takes the largest value, so batches are sent counted down from NONE)."""
        signum, countdown = self.team.agree([self.stop.signum or 0, 0 if bad_batch is None else NONE - bad_batch])
        if countdown:
            raise NonFiniteLoss(epoch, NONE - countdown)
        if signum:
            raise Interrupted(signum)

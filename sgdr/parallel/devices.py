"""Which device a run trains on, and the arithmetic it computes with there (TF32, determinism, autocast)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch

from sgdr.cli import UserError

AUTO = "auto"  # --device: CUDA when available, else the CPU


def visible_gpus(count: int) -> str:
    """The GPUs this process sees, for messages: their number and, when set, CUDA_VISIBLE_DEVICES."""
    seen = f"{count} GPU{'' if count == 1 else 's'} visible" + (f" (cuda:0 to cuda:{count - 1})" if count > 1 else "")
    if (mask := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        seen += f", CUDA_VISIBLE_DEVICES={mask}"
    return seen


def device_name(text: str) -> str:
    """A --device value (auto, cpu, cuda or cuda:N), as a flag's ``type``: another word is refused with the
    flags' own errors; whether that device is here is ``pick_device``'s to say."""
    if text in (AUTO, "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def channels_last_is_faster(device: torch.device) -> bool:
    """Whether channels-last is the faster memory format for a run on ``device``: on CUDA, yes (what its
    convolutions want); on the CPU, no where it has AVX-512 (6 to 9% slower on the AMD and Intel processors
    measured) and yes where it has not (12% faster on the AVX2-only one; docs/performance.md)."""
    return device.type == "cuda" or torch.backends.cpu.get_cpu_capability() != "AVX512"


def pick_device(name: str) -> torch.device:
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported.")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise UserError(
            f"--device {name}: there is no such GPU here: {visible_gpus(count)}. "
            f"Use --device cuda:N with N below {count}, or --device cuda."
        )
    if device.type == "cuda" and device.index is not None:
        # The current GPU is where pinned memory and the first CUDA calls open their context: on a
        # shared machine, the chosen GPU and not GPU 0.
        torch.cuda.set_device(device)
    return device


def set_precision(tf32: str) -> None:
    """fp32 arithmetic as ``--tf32`` asks. PyTorch's own default lets cuDNN convolutions round their
    inputs to TF32 (a 10-bit mantissa) on Ampere and newer GPUs while matrix products stay fp32,
    so a run that says nothing is not fp32 there. The CPU always computes in fp32.

    The legacy flags are set, not the newer ``fp32_precision`` ones: torch reads the legacy
    cuDNN flag in places (inductor's convolutions) and refuses to when the two APIs are mixed.
    """
    torch.backends.cudnn.allow_tf32 = tf32 in ("conv", "on")
    torch.backends.cuda.matmul.allow_tf32 = tf32 == "on"


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Without ``--deterministic``, cuDNN on CUDA picks its convolution algorithms by timing: faster,
    but the pick (and so the rounding) can differ from run to run. With it: no autotuning, only
    deterministic algorithms (an error names any operation that has none), and the cuBLAS workspace
    setting PyTorch requires for that, set before the first cuBLAS call. Process-wide, so set both ways."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def autocast_of(amp: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The autocast ``--amp`` asks for on ``device``: bf16, or none (fp32)."""
    return partial(torch.autocast, device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext


@contextmanager
def arithmetic(tf32: str, deterministic: bool, device: torch.device) -> Iterator[None]:
    """``set_precision`` and ``set_determinism`` for a stretch (a snapshot evaluated as its run trained),
    with the process's own settings back after it."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    algorithms = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    set_precision(tf32)
    set_determinism(deterministic, device)
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = before
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])

"""The CUDA paths, exercised on the CPU: fake GPUs (monkeypatched torch.cuda), tensors that say
they live on a GPU, and the precision flags, which can be set and read without one."""

from __future__ import annotations

import os
import types

import pytest
import torch
from conftest import call, documentation

import train
from sgdr.parallel import devices
from sgdr.parallel.devices import pick_device
from sgdr.run import checkpoint, experiment, settings
from sgdr.training.networks import build_network, deterministic_pooling

TINY_RUN = [
    "--train-subset",
    "16",
    "-b",
    "16",
    "--workers",
    "0",
    "--model",
    "wrn-10-1",
    "--seed",
    "3",
    "--device",
    "cpu",
]


class OnGpu(torch.Tensor):
    """Stands for a CUDA tensor on a machine without one: it says it is on cuda:0, ``.cpu()`` gives a
    plain CPU copy, and a file holding it cannot be read by ``torch.load(path)`` here, as a file
    holding CUDA tensors cannot be on a CPU-only machine."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0)

    @property
    def is_cuda(self) -> bool:
        return True

    def cpu(self, *args, **kwargs) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone()


def fake_gpus(monkeypatch, count: int) -> None:
    """torch.cuda reports ``count`` GPUs; asking for every GPU's random state is an error (it would
    open a CUDA context on each), and restoring more states than GPUs fails as torch does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    def get_all():
        raise AssertionError("read the random state of every GPU")

    def set_all(states):
        if len(states) > count:
            raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", get_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_a_checkpoint_from_a_machine_with_more_gpus_resumes(cifar_dir, tmp_path, monkeypatch):
    args = [*TINY_RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, ["-e", "1", *args])[0] == 0
    path = tmp_path / "runs" / "multistep" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(4)]  # as saved with 4 GPUs visible
    torch.save(state, path)
    fake_gpus(monkeypatch, 1)
    code, log, err = call(train.main, ["-e", "2", "--resume", *args])
    assert code == 0, err
    assert "Resuming after epoch 1" in log
    resumed = torch.load(path, weights_only=True)
    assert resumed["epoch"] == 2 and resumed["rng"]["cuda"] == []


def test_checkpoints_and_snapshots_hold_cpu_tensors(tmp_path):
    module = torch.nn.Linear(3, 2)
    module.register_buffer("running", torch.arange(4.0).as_subclass(OnGpu))
    checkpoint.save_snapshot(tmp_path / "snapshot.pt", module, {"model": "linear"}, 1, 2)
    momentum = torch.ones(3).as_subclass(OnGpu)
    checkpoint.save(
        tmp_path / "checkpoint.pt",
        {
            "model": module.state_dict(),
            "optimizer": {"state": {0: {"m": momentum}}},
            "history": {"lr": [0.05]},
            "rng": {"python": (3, (1, 2), None)},
        },
    )
    snapshot, state = torch.load(tmp_path / "snapshot.pt"), torch.load(tmp_path / "checkpoint.pt")  # no map_location
    tensors = [*snapshot["model"].values(), *state["model"].values(), state["optimizer"]["state"][0]["m"]]
    assert len(tensors) == 7
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in tensors)
    assert torch.equal(snapshot["model"]["running"], torch.arange(4.0))
    assert state["rng"]["python"] == (3, (1, 2), None) and state["history"] == {"lr": [0.05]}


@pytest.fixture
def precision():
    """The TF32 flags as they were before the test, restored after it."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize(("choice", "flags"), [(None, (True, False)), ("off", (False, False)), ("on", (True, True))])
def test_the_precision_is_set_from_tf32(choice, flags, cifar_dir, tmp_path, precision):
    torch.backends.cudnn.allow_tf32 = not flags[0]  # PyTorch's default is (True, False)
    torch.backends.cuda.matmul.allow_tf32 = not flags[1]
    more = [] if choice is None else ["--tf32", choice]
    code, _, err = call(
        train.main, ["-e", "1", *TINY_RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path), *more]
    )
    assert code == 0, err
    assert tf32_flags() == flags
    config = torch.load(tmp_path / "runs" / "multistep" / "checkpoint.pt", weights_only=True)["config"]
    assert config["tf32"] == (choice or "conv")  # PyTorch's own default unless told


def test_resuming_refuses_another_precision_and_older_runs_resume_as_they_trained(cifar_dir, tmp_path, precision):
    args = [*TINY_RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, ["-e", "1", "--tf32", "off", *args])[0] == 0
    code, _, err = call(train.main, ["-e", "2", "--resume", "--tf32", "on", *args])
    assert code == 1 and "tf32: 'off' in the checkpoint, 'on' now" in err
    # Without --tf32 a resumed run keeps its own, whatever the default for new runs.
    code, log, err = call(train.main, ["-e", "2", "--resume", *args])
    assert code == 0 and "Resuming after epoch 1" in log, err
    assert tf32_flags() == (False, False)
    path = tmp_path / "runs" / "multistep" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["tf32"]  # a checkpoint from before --tf32: PyTorch's default, TF32 convolutions
    torch.save(state, path)
    code, _, err = call(train.main, ["-e", "3", "--resume", "--tf32", "off", *args])
    assert code == 1 and "tf32: 'conv' in the checkpoint, 'off' now" in err
    code, log, err = call(train.main, ["-e", "3", "--resume", *args])
    assert code == 0 and "Resuming after epoch 2" in log, err
    assert tf32_flags() == (True, False)


@pytest.fixture
def determinism():
    """The process-wide determinism settings as they were before the test, restored after it."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    before += (torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
    if before[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def determinism_flags() -> tuple[bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )


def test_deterministic_mode_is_set_recorded_and_undone(cifar_dir, tmp_path, monkeypatch, determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    args = settings.parse_args(
        [*TINY_RUN, "--deterministic", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    )
    exp = experiment.setup(args, device=torch.device("cpu"))
    assert determinism_flags() == (True, True, False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # what cuBLAS needs for repeatable results
    assert exp.config["deterministic"] is True
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in exp.model.modules())
    # A run without it, in the same process, gets the defaults back (on CUDA: autotuning).
    devices.set_determinism(False, torch.device("cuda"))
    assert determinism_flags() == (False, False, True)
    devices.set_determinism(False, torch.device("cpu"))
    assert determinism_flags() == (False, False, False)
    # A checkpoint from before --deterministic was not made deterministically.
    assert settings.upgrade({})["deterministic"] is False


@pytest.mark.parametrize("name", ["resnet34", "wrn-10-2"])
def test_deterministic_pooling_gives_the_networks_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = build_network(name, 10)
    images = torch.randn(4, 3, 32, 32)
    plain = model(images)
    plain.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert deterministic_pooling(model) == 1
    assert model.state_dict().keys() == state.keys()
    # BatchNorm updated its running statistics in the first pass: put them back, then again.
    model.load_state_dict(state)
    swapped = model(images)
    swapped.sum().backward()
    torch.testing.assert_close(swapped, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip([p.grad for p in model.parameters()], grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_chosen_gpu_becomes_the_current_one(monkeypatch):
    fake_gpus(monkeypatch, 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda")  # the current GPU, whichever it is
    assert chosen == [torch.device("cuda", 1)]


def test_under_torchrun_a_gpu_other_than_the_local_ranks_is_refused(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 2)
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    # cuda:1 would put rank 0 on rank 1's GPU (and even cuda:0 would leave rank 1 none of its own).
    code, _, err = call(train.main, ["--device", "cuda:1", "--output-dir", str(tmp_path)])
    assert code == 1
    assert "--device cuda:1: under torchrun each process takes the GPU of its local rank (this one cuda:0)" in err
    assert "Use --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs." in err


def test_compile_gets_the_module_and_ddp_wraps_the_compiled_module(cifar_dir, tmp_path, monkeypatch):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from sgdr.parallel.distributed import Team

    given = []
    monkeypatch.setattr(torch, "compile", lambda module, *a, **k: given.append(module) or module)
    args = settings.parse_args([*TINY_RUN, "--compile", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)])
    # Rank 0 of two as far as setup can tell, over a one-process Gloo group: DDP's collectives return at once.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        exp = experiment.setup(args, Team(rank=0, world=2), torch.device("cpu"))
    finally:
        dist.destroy_process_group()
    assert given == [exp.model]
    assert isinstance(exp.net, DistributedDataParallel) and exp.net.module is exp.model and exp.eval_net is exp.model


def test_the_header_counts_the_compilations_a_static_compiler_makes(cifar_dir, tmp_path, monkeypatch):
    """A compiler that makes one graph per (mode, batch shape), as torch.compile(dynamic=False) does:
    the header's count and sizes are the graphs the run really asked for."""
    graphs, options = set(), []

    class StaticGraphs(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, images):
            graphs.add(("training" if self.training else "validation", images.shape[0]))
            return self.module(images)

    monkeypatch.setattr(torch, "compile", lambda module, **k: options.append(k) or StaticGraphs(module))
    # 40 training images in batches of 16 (16, 16 and 8), 16 validation images (one batch).
    args = ["-e", "2", *TINY_RUN, "--train-subset", "40", "--compile", "--data-dir", str(cifar_dir)]
    code, log, err = call(train.main, [*args, "--output-dir", str(tmp_path)])
    assert code == 0, err
    assert options == [{"dynamic": False}]
    assert graphs == {("training", 16), ("training", 8), ("validation", 16)}
    assert (
        "torch.compile: 3 compilations in the first epoch, one for each batch shape: "
        "training batches of 16 and 8, validation batches of 16 images." in log
    )


def test_compile_counts_the_batch_shapes_of_the_reference_loader_without_its_last_image(
    cifar_dir, tmp_path, monkeypatch
):
    """ResNet34 leaves out a last training batch of one image; with --loader torchvision the header still
    counts the compiled shapes (the loaders share one interface)."""
    monkeypatch.setattr(torch, "compile", lambda module, **k: module)
    args = ["-e", "1", "-b", "16", "--workers", "0", "--loader", "torchvision", "--train-subset", "17"]
    code, log, err = call(
        train.main,
        [*args, "--test-subset", "8", "--compile", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)],
    )
    assert code == 0, err
    assert "training batches of 16, validation batches of 8 images" in log
    assert "The last training batch, of one image, is left out of every epoch" in log


def test_compile_with_sync_bn_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = call(train.main, ["--sync-bn", "--compile"])
    assert code == 1 and "Traceback" not in err
    assert "--compile and --sync-bn do not go together: the compiled graph breaks at every SyncBatchNorm layer" in err


def test_a_gpu_index_beyond_the_visible_gpus_is_named(cifar_dir, monkeypatch):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    code, _, err = call(train.main, ["--device", "cuda:2", "--data-dir", str(cifar_dir)])
    assert code == 1
    assert err.strip() == (
        "error: --device cuda:2: there is no such GPU here: 2 GPUs visible (cuda:0 to cuda:1), "
        "CUDA_VISIBLE_DEVICES=4,6. Use --device cuda:N with N below 2, or --device cuda."
    )


def test_more_processes_than_gpus_is_named_once_per_machine(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    code, _, err = call(train.main, ["--output-dir", str(tmp_path)])
    assert code == 1
    assert err.strip() == (
        "error: torchrun started 4 processes on this machine, one per GPU, but there are "
        "2 GPUs visible (cuda:0 to cuda:1): use --nproc_per_node=2 or fewer (or --device cpu)."
    )
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert call(train.main, ["--output-dir", str(tmp_path)]) == (1, "", "")  # local rank 0 has said it


def fake_process_group(monkeypatch, uuids: list[str]) -> list[str]:
    """torch.distributed as far as ``join`` uses it, each process's GPU named by ``uuids``; returns the
    calls made, in order."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(f"set_device {device}"))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(f"init {backend}"))
    monkeypatch.setattr(dist, "new_group", lambda backend: calls.append(f"group {backend}") or "control")
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid=uuids[int(os.environ["RANK"])])
    )

    def all_gather_object(out, mine, group):
        assert mine == uuids[int(os.environ["RANK"])] and group == "control"
        out[:] = uuids

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    return calls


def torchrun_env(monkeypatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_a_task_bound_to_one_gpu_takes_it(monkeypatch):
    """SLURM's --gpus-per-task=1: each of a node's 4 tasks sees one GPU (its cuda:0), not the node's 4."""
    from sgdr.parallel import distributed

    fake_gpus(monkeypatch, 1)
    torchrun_env(monkeypatch, WORLD_SIZE="8", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="4", CUDA_VISIBLE_DEVICES="0")
    calls = fake_process_group(monkeypatch, [f"GPU-{n}" for n in range(8)])
    team, device = distributed.join("auto")
    assert device == torch.device("cuda", 0) and (team.rank, team.world, team.local_rank) == (0, 8, 0)
    assert calls == ["set_device cuda:0", "init nccl", "group gloo"]
    torchrun_env(monkeypatch, RANK="5", LOCAL_RANK="1", CUDA_VISIBLE_DEVICES="1")  # bound to the node's second GPU
    calls[:] = []
    team, device = distributed.join("cuda")
    assert device == torch.device("cuda", 0) and (team.rank, team.local_rank) == (5, 1)
    assert calls == ["set_device cuda:0", "init nccl", "group gloo"]


def test_processes_that_share_a_gpu_are_refused_in_every_process(monkeypatch):
    """Four processes on a machine with one GPU: each sees the same one; all refuse, none waits in NCCL."""
    from sgdr.cli import UserError
    from sgdr.parallel import distributed

    fake_gpus(monkeypatch, 1)
    torchrun_env(monkeypatch, WORLD_SIZE="4", RANK="2", LOCAL_RANK="2", LOCAL_WORLD_SIZE="4", CUDA_VISIBLE_DEVICES="0")
    calls = fake_process_group(monkeypatch, ["GPU-a", "GPU-a", "GPU-a", "GPU-a"])
    with pytest.raises(UserError) as refused:
        distributed.join("auto")
    assert str(refused.value) == (
        "ranks 0, 1, 2 and 3 run on one GPU: every process needs a GPU of its own. Start at most as many "
        "processes a machine as it has GPUs, or give each task one GPU of its own (sbatch --gpus-per-task=1)."
    )
    assert calls[-1] == "destroy"


def test_bench_times_in_train_pys_precision_and_says_which(capsys, tmp_path, monkeypatch, precision):
    import bench

    monkeypatch.chdir(tmp_path)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    assert bench.main(["--quick", "--batch-size", "4", "--models", "wrn-10-1"]) == 0
    assert tf32_flags() == (True, False) and torch.backends.cudnn.benchmark is False  # train.py's, on the CPU
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "Precision: fp32 (train.py's default; TF32 does not exist on the CPU)"


def test_the_docs_give_the_multi_node_interface_and_the_cuda_limit_of_seed():
    readme = documentation()
    multi_node = readme.index("torchrun --nnodes=2")
    assert "GLOO_SOCKET_IFNAME" in readme[multi_node : multi_node + 600]
    seed_row = next(line for line in readme.splitlines() if line.startswith("| `--seed` |"))
    assert (
        "on CUDA only to the last digits, because `cudnn.benchmark` picks convolution algorithms by timing" in seed_row
    )

"""--recipe paper: the SGDR authors' own training recipe, each part against an oracle written here."""

from __future__ import annotations

import json
import math

import joblib
import numpy as np
import pytest
import torch
from conftest import SMALL, TINY, call
from torch import nn

import train
from sgdr.data import cifar, loaders
from sgdr.run import settings
from sgdr.training import recipes
from sgdr.training.schedules import build_schedule

CPU = torch.device("cpu")


# The optimiser: eq. (3)-(4) and the script's penalty.


def test_eq3_4_momentum_with_a_rate_that_changes_every_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    start = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    optimizer = recipes.script_optimizer(model)
    decayed = {name for name, _ in model.named_parameters() if name.endswith("weight")}  # conv, BN scale, linear
    rates = [0.05, 0.04, 0.001, 0.03, 0.0]
    w, v = dict(start), {name: torch.zeros_like(p) for name, p in start.items()}
    for step, lr in enumerate(rates):
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step)
        x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = {name: p.grad.double() for name, p in model.named_parameters()}
        optimizer.step()
        for name in w:  # eq. (3)-(4): v <- 0.9 v - lr (g + 1e-3 w); w <- w + v
            g = grads[name] + (1e-3 * w[name] if name in decayed else 0)
            v[name] = 0.9 * v[name] - lr * g
            w[name] = w[name] + v[name]
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach().double(), w[name], rtol=1e-5, atol=1e-7, msg=name)


def test_eq3_4_differs_from_torchs_sgd_when_the_rate_changes():
    def train_with(make):
        torch.manual_seed(0)
        model = nn.Linear(8, 3)
        optimizer = make(model)
        for step, lr in enumerate([0.05, 0.01, 0.05]):
            optimizer.param_groups[0]["lr"] = lr
            torch.manual_seed(step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
            optimizer.step()
        return model.weight.detach()

    ours = train_with(lambda m: recipes.ClassicalMomentum(m.parameters(), lr=0.05, momentum=0.9))
    torchs = train_with(lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9))
    assert (ours - torchs).abs().max() > 1e-4


def test_the_penalty_covers_weights_and_bn_scales_only():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=True),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 1, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 30 * 30, 2),
    ).double()
    for p in model.parameters():
        nn.init.uniform_(p, 0.5, 1.5)
    optimizer = recipes.script_optimizer(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no loss gradient: a step moves each weight by -lr * penalty gradient
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    for name, p in model.named_parameters():
        moved = (before[name] - p.detach()) / recipes.LR
        penalised = name in ("0.weight", "1.weight", "2.weight", "4.weight")
        want = 1e-3 * before[name] if penalised else torch.zeros_like(p)
        torch.testing.assert_close(moved, want, rtol=1e-9, atol=1e-15, msg=name)


# The data: an epoch of every image plain and mirrored, zero-padded crops, the mean image subtracted.


def random_images(n: int, seed: int = 0) -> cifar.InMemoryCIFAR:
    rng = np.random.default_rng(seed)
    return cifar.InMemoryCIFAR(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).tolist())


def paper_loaders(dataset, batch_size: int = 128, seed: int = 0):
    return loaders.make_loaders(
        dataset, dataset, "device", batch_size, torch.Generator().manual_seed(seed), CPU, recipe=recipes.PAPER
    )


def test_an_epoch_is_every_image_plain_and_mirrored_zero_padded_minus_the_mean_image():
    """80 images: 160 samples, one batch of 128 (the last 32 dropped, as on full CIFAR-10). Each
    output is found among all 160 x 81 (sample, crop) candidates built here with numpy."""
    data = random_images(80)
    train_loader, _ = paper_loaders(data)
    assert len(train_loader) == 1
    [(images, labels)] = list(train_loader)
    assert images.shape == (128, 3, 32, 32)
    pixels = data.data.astype(np.float64) / 255  # N x 32 x 32 x 3
    mean = pixels.mean(axis=0)
    plain = (pixels - mean).transpose(0, 3, 1, 2)
    sources = np.concatenate([plain, plain[:, :, :, ::-1]])  # samples 0..79 plain, 80..159 mirrored
    padded = np.pad(sources, ((0, 0), (0, 0), (4, 4), (4, 4)))  # zeros: the mean pixel
    got = images.double().numpy()
    centres = np.stack([padded[:, 0, dy + 15, 15 : 15 + 9] for dy in range(9)], axis=1)  # (sample, dy, dx)
    found = []
    for k in range(128):
        matches = [
            (s, dy, dx)
            for s, dy, dx in np.argwhere(np.abs(centres - got[k, 0, 15, 15]) < 1e-6)
            if np.abs(padded[s, :, dy : dy + 32, dx : dx + 32] - got[k]).max() < 1e-6
        ]
        assert len(matches) == 1, (k, matches)
        found.append(matches[0])
        assert labels[k] == data.targets[matches[0][0] % 80]
    samples = [s for s, _, _ in found]
    assert len(set(samples)) == 128  # no sample twice; the other 32 are the dropped partial batch
    assert sum(s >= 80 for s in samples) > 40  # plain and mirrored shuffled together
    offsets = {(dy, dx) for _, dy, dx in found}
    assert {dy for dy, _ in offsets} == set(range(9)) and {dx for _, dx in offsets} == set(range(9))


def test_full_cifar10_gives_781_batches_holding_every_image_twice_once_mirrored():
    n = 50_000
    data = cifar.InMemoryCIFAR(np.zeros((n, 32, 32, 3), dtype=np.uint8), [0] * n)
    train_loader, val_loader = paper_loaders(data)
    assert (len(train_loader), train_loader.samples, len(val_loader)) == (781, 100_000, 100)  # test batches of 500
    index, _, _, flip = train_loader._draws()
    # The epoch's 100,000 draws: each image once plain and once mirrored; 781 x 128 = 99,968 are trained.
    pairs = index * 2 + flip.long()
    assert torch.equal(pairs.sort().values, torch.arange(2 * n))
    assert sum(labels.numel() for _, labels in train_loader) == 99_968


def test_test_inputs_are_the_images_minus_the_training_mean_image_without_augmentation():
    train_set, test_set = random_images(40, seed=1), random_images(30, seed=2)
    _, val_loader = loaders.make_loaders(
        train_set, test_set, "device", 16, torch.Generator(), CPU, recipe=recipes.PAPER
    )
    images = torch.cat([x for x, _ in val_loader]).double().numpy()
    mean = (train_set.data.astype(np.float64) / 255).mean(axis=0)
    want = (test_set.data.astype(np.float64) / 255 - mean).transpose(0, 3, 1, 2)
    assert np.abs(images - want).max() < 1e-6


# The learning rate: the script's per-sample stepping.


def script_rates(t_0: int, t_mult: int, epochs: int, batches: int, increment: float) -> list[float]:
    """The rate of each batch as the script sets it: T_cur += increment after each batch, the rate
    recomputed then (so it applies from the next batch), T_cur reset at the end of cycle-closing epochs."""
    lr, t_cur, t_i, restart = 0.05, 0.0, t_0, t_0
    rates = []
    for epoch in range(epochs):
        for _ in range(batches):
            rates.append(lr)
            t_cur += increment
            lr = 0.05 * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        if epoch + 1 == restart:
            t_cur, t_i = 0.0, t_i * t_mult
            restart += t_i
    return rates


@pytest.mark.parametrize(("t_0", "t_mult"), [(1, 2), (10, 2)])
def test_every_batch_of_200_epochs_follows_the_scripts_rule(t_0, t_mult):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    schedule = build_schedule(optimizer, True, t_0, t_mult, [], by_samples=(781, 128 / 100_000))
    got = []
    for epoch in range(200):  # the loop's calls: after every batch, then after the epoch
        for batch in range(781):
            got.append(optimizer.param_groups[0]["lr"])
            schedule.after_batch(epoch, batch, 781)
        schedule.after_epoch()
    want = script_rates(t_0, t_mult, 200, 781, 128 / 100_000)
    worst = max(range(len(want)), key=lambda k: abs(got[k] - want[k]))
    assert abs(got[worst] - want[worst]) < 1e-12, (divmod(worst, 781), got[worst], want[worst])
    ends = [10, 30, 70, 150] if t_0 == 10 else [1, 3, 7, 15, 31, 63, 127]
    for end in ends:  # the first batch after a restart still trains with the old cycle's last, near-zero rate
        assert got[end * 781] < 1e-6 and got[end * 781 + 1] > 0.0499


def test_a_subset_run_steps_with_its_own_epoch(cifar_dir, tmp_path):
    """36 images: an epoch of 72 samples, 4 batches of 16 and 8 dropped; T_cur grows by 16 / 72 per
    batch (not 1 / 4: the script counts samples)."""
    argv = [
        "-e",
        "4",
        "-wr",
        "-t0",
        "1",
        "-tm",
        "2",
        "--recipe",
        "paper",
        "--train-subset",
        "36",
        "--seed",
        "3",
        *SMALL,
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    assert "an epoch is 72 samples in 4 batches (8 dropped)" in log
    got = joblib.load(tmp_path / "lr_schedule_s1_m2.pkl")
    want = script_rates(1, 2, 4, 4, 16 / 72)
    assert len(got) == 16 and max(abs(g - w) for g, w in zip(got, want)) < 1e-12
    assert max(abs(g - w) for g, w in zip(got, script_rates(1, 2, 4, 4, 1 / 4))) > 1e-3
    snapshots = sorted(p.name for p in (tmp_path / "runs" / "wr_s1_m2" / "snapshots").iterdir())
    assert snapshots == ["epoch_0001.pt", "epoch_0003.pt"]
    rows = [json.loads(line) for line in (tmp_path / "runs" / "wr_s1_m2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_the_recipe_picks_its_network_and_refuses_the_torchvision_pipeline(capsys):
    assert settings.parse_args(["--recipe", "paper"]).model == "wrn-28-10"
    assert settings.parse_args(["--recipe", "paper", "--model", "resnet34"]).model == "resnet34"
    assert settings.parse_args([]).model == "resnet34" and settings.parse_args([]).recipe == "tutorial"
    with pytest.raises(SystemExit) as exit_:
        settings.parse_args(["--recipe", "paper", "--loader", "torchvision"])
    assert exit_.value.code == 2 and "--recipe paper runs on the default --loader device" in capsys.readouterr().err


def test_resuming_under_another_recipe_is_refused(cifar_dir, tmp_path):
    common = ["-e", "1", "--seed", "1", *SMALL, *TINY, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, common + ["--recipe", "paper"])[0] == 0
    code, _, err = call(train.main, [*common, "-e", "2", "--resume"])
    assert code == 1 and "recipe: 'paper' in the checkpoint, 'tutorial' now" in err


def test_a_subset_smaller_than_a_batch_is_refused_with_the_fix(cifar_dir, tmp_path):
    argv = [
        "--recipe",
        "paper",
        "--train-subset",
        "7",
        *SMALL,
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    code, _, err = call(train.main, argv)
    assert code == 1 and "give no full batch of 16" in err and "--train-subset" in err

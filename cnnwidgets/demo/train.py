"""Train the demo :class:`~cnnwidgets.demo.MnistCNN` on the embedded digits.

Usage::

    python -m cnnwidgets.demo.train [--epochs N] [--seed S] [--out PATH]

Trains on the first 8,000 images (split ``"train"``), reports accuracy on
the last 2,000 (split ``"val"``) after every epoch, and saves the final
``float32`` state dict to ``cnnwidgets/demo/data/mnist_cnn.pt`` by default.
Training is deterministic for a given seed and thread count (seeded
initialisation, a seeded generator for shuffling and augmentation, and
``torch.use_deterministic_algorithms``). It takes a few minutes on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import MEAN, N_TRAIN, STD, WEIGHTS_FILE, _to_tensors, load_mnist_arrays
from ._model import MnistCNN

__all__ = ["evaluate", "main", "random_shift", "train"]


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """Translate each image by a random integer offset, filling with background.

    Parameters
    ----------
    x : torch.Tensor
        Normalized images of shape ``(N, 1, 28, 28)``.
    max_shift : int
        Largest shift in pixels along each axis (uniform in
        ``[-max_shift, max_shift]``).
    generator : torch.Generator
        Source of randomness (keeps training reproducible).

    Returns
    -------
    torch.Tensor
        Shifted images, same shape as ``x``.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    background = (0.0 - MEAN[0]) / STD[0]
    padded = F.pad(x, (max_shift,) * 4, value=background)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]  # N, H, 1
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]  # N, 1, W
    batch = torch.arange(n)[:, None, None]  # N, 1, 1
    return padded[:, 0][batch, rows, cols].unsqueeze(1)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Classification accuracy of ``model`` (in eval mode) on ``images``.

    Parameters
    ----------
    model : torch.nn.Module
        Network mapping ``(B, 1, 28, 28)`` to ``(B, 10)`` logits.
    images : torch.Tensor
        ``(N, 1, 28, 28)`` float32 normalized images.
    labels : torch.Tensor
        ``(N,)`` int64 labels.
    batch_size : int, default 1000
        Images per forward pass.

    Returns
    -------
    float
        Fraction of correctly classified images, in ``[0, 1]``.
    """
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = model(images[i : i + batch_size]).argmax(dim=1)
        correct += int((pred == labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


def train(
    epochs: int = 15,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 2,
    verbose: bool = True,
) -> tuple[MnistCNN, float]:
    """Train a fresh :class:`MnistCNN` on the first 8,000 embedded images.

    Uses Adam with weight decay and a one-cycle learning-rate schedule, plus
    random shifts of up to ``max_shift`` pixels as augmentation.

    Parameters
    ----------
    epochs : int, default 15
        Passes over the 8,000 training images.
    seed : int, default 0
        Seed for initialisation, shuffling, augmentation and dropout.
    batch_size : int, default 64
        Mini-batch size.
    lr : float, default 2e-3
        Peak learning rate of the one-cycle schedule.
    max_shift : int, default 2
        Maximum random translation in pixels (0 disables augmentation).
    verbose : bool, default True
        Print train loss and val accuracy after each epoch.

    Returns
    -------
    model : MnistCNN
        The trained network, in eval mode.
    val_accuracy : float
        Accuracy on the 2,000 held-out images after the last epoch.
    """
    try:
        torch.use_deterministic_algorithms(True)
    except Exception:  # pragma: no cover - depends on the torch build
        pass
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    images, labels = load_mnist_arrays()
    x_all, y_all = _to_tensors(images, labels)
    x_train, y_train = x_all[:N_TRAIN], y_all[:N_TRAIN]
    x_val, y_val = x_all[N_TRAIN:], y_all[N_TRAIN:]

    model = MnistCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()

    val_acc = 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total_loss = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            xb = random_shift(x_train[idx], max_shift, gen)
            yb = y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
        val_acc = evaluate(model, x_val, y_val)
        if verbose:
            print(
                f"epoch {epoch:2d}/{epochs}  train loss {total_loss / len(x_train):.4f}"
                f"  val acc {val_acc:.4f}  ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    model.eval()
    return model, val_acc


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m cnnwidgets.demo.train",
        description="Train the cnnwidgets MNIST demo CNN on the embedded data.",
    )
    parser.add_argument("--epochs", type=int, default=15, help="default: 15")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_FILE, help=f"default: {WEIGHTS_FILE}"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model, val_acc = train(epochs=args.epochs, seed=args.seed)
    elapsed = time.perf_counter() - t0
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(f"final val accuracy {val_acc:.4f} after {elapsed:.0f} s; saved {args.out}")


if __name__ == "__main__":
    main()

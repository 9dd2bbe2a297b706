"""Shared pieces of the attribution methods: input and target checks, the final-softmax
bypass, :func:`_prepared` (the set-up every method runs under) and the gradient kernels."""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from ..model import check_model, model_device, model_dtype
from ..outputs import OutputSelector
from ..runner import logits_only  # noqa: F401 - re-exported by cnnwidgets.core.saliency
from ..runner import Scores, forward_errors, softmax_notice_off, using_model  # noqa: F401

#: A class index for every image, one per image, or None for the predicted class.
Target = Union[int, Sequence[int], np.ndarray, torch.Tensor, None]
#: With ``batch_size=None``, path or noisy images go through the model in batches of about this
#: many input values (128 images of 3 x 128 x 128): 41 images of 3 x 224 x 224 at a time, all 50
#: path images of an MNIST digit at once. Larger batches run faster on the CPU (on a
#: ResNet-18-shaped net, IG at 160 px took 1.4-1.8x longer in batches of 20 than of 100-400).
BATCH_VALUES: int = 128 * 3 * 128 * 128
#: The same for passes without gradients (occlusion, Score-CAM, Ablation-CAM, deletion and
#: insertion): a quarter, 10 images of 3 x 224 x 224. With no activations kept for a backward
#: pass, smaller batches stay in the CPU's caches: occlusion of 49 windows of a ResNet-18-shaped
#: net at 224 px took 0.74x the time in batches of 10 as in batches of 41 (tests/bench/run.py
#: --only occlusion prints it).
FORWARD_BATCH_VALUES: int = BATCH_VALUES // 4


def _batch_size(batch_size: int | None, x: torch.Tensor, *, forward_only: bool = False) -> int:
    if batch_size is None:
        values = FORWARD_BATCH_VALUES if forward_only else BATCH_VALUES
        return max(1, values // max(1, x[0].numel()))
    return batch_size


# ---------------------------------------------------------------- validation
def _check_batch(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or x.shape[0] == 0:
        desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a non-empty float tensor N x C x H x W, got {desc}. "
            "Hint: cnnwidgets.core.as_batch converts images to a batch; use x[None] for one image."
        )
    return x


# ---------------------------------------------------------------- what a call reports
class _Collector(threading.local):
    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None


_COLLECT = _Collector()


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Any]]:
    """Within the block, on this thread, the methods put what they found out into the yielded
    dict (``"rule"``: the :class:`~cnnwidgets.core.relu_rules.RuleReport`, ``"delta"``: the
    Integrated Gradients convergence delta, ``"scores"``: the :class:`Scores` used)."""
    before = _COLLECT.report
    _COLLECT.report = {}
    try:
        yield _COLLECT.report
    finally:
        _COLLECT.report = before


def _report(key: str, value: Any) -> None:
    if _COLLECT.report is not None:
        _COLLECT.report[key] = value


def _reporting() -> bool:
    return _COLLECT.report is not None


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are taken in: float32 at least."""
    return torch.promote_types(dtype, torch.float32)


def _finish(t: torch.Tensor) -> torch.Tensor:
    """Attributions are float32 whatever the model's dtype (display statistics and sums)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _given_targets(target: Target, n: int) -> torch.Tensor:
    """int64 (N,) from an int or one int per image; the range 0..K-1 is checked later, by
    :func:`_check_target_range`, against the logits the attribution pass computes anyway."""
    if isinstance(target, bool):
        raise TypeError(f"target must be an int or a sequence of ints, got bool {target!r}")
    try:
        t = torch.full((n,), operator.index(target), dtype=torch.long)  # type: ignore[arg-type]
    except TypeError:
        t = torch.as_tensor(np.asarray(target) if isinstance(target, (list, tuple)) else target)
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise TypeError(f"target must hold integers, got dtype {t.dtype}") from None
        t = t.reshape(-1) if t.dim() <= 1 else t
        if t.dim() != 1 or t.numel() not in (1, n):
            raise ValueError(
                f"target must be an int or hold one int per image (N = {n}), got shape {tuple(t.shape)}"
            ) from None
        t = t.to(torch.long).expand(n).clone()
    return t


def _check_target_range(t: torch.Tensor, k: int) -> None:
    bad = (t < 0) | (t >= k)
    if bool(bad.any()):
        bad_values = sorted(set(t[bad].tolist()))
        raise ValueError(f"target must be in 0..{k - 1} (the model has K = {k} classes), got {bad_values}")


# ---------------------------------------------------------------- set-up
@contextlib.contextmanager
def _prepared(
    model: nn.Module,
    x: Any,
    target: Target,
    *,
    logits: bool = True,
    output: OutputSelector = None,
    region: Any = None,
) -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor | None, Scores]]:
    """Validate, take this thread's private view of the model, bypass a final activation in it,
    resolve targets.

    Yields ``(run, x, targets, scores)``: ``run`` the module to run (:func:`using_model`), ``x``
    detached on the model's device and in its dtype (never the caller's tensor with
    ``requires_grad``), ``targets`` int64 (N,) or None when ``logits=False``, ``scores`` the
    :class:`~cnnwidgets.core.runner.Scores` reading the model's output (``output=``,
    ``region=``).
    """
    check_model(model)
    x = _check_batch(x)
    device = model_device(model)
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(using_model(model))
        x = x.detach().to(device=device, dtype=model_dtype(run))
        scores = Scores(run, output, region)
        _report("scores", scores)
        targets = None
        if logits:
            stack.enter_context(logits_only(run, "attribution"))
            if target is None:  # each image's top class: one pass to find it
                with torch.no_grad(), forward_errors(x, run):
                    s = scores(run(x.clone()))  # clone: a model may change its input in place
                targets = s.detach().argmax(dim=1)
            else:  # no extra pass: the attribution's own scores check the range
                targets = _given_targets(target, x.shape[0]).to(device)
        stack.enter_context(torch.enable_grad())
        yield run, x, targets, scores


# ---------------------------------------------------------------- gradient kernels (inside _prepared)
def _input_gradient(model: nn.Module, scores: Scores, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d score[i, targets[i]] / d x[i] for every image i, in one forward/backward pass."""
    xg = x.clone().requires_grad_(True)
    with forward_errors(x, model):
        s = scores(model(xg.clone()))  # a non-leaf copy: an in-place first layer is fine
    _check_target_range(targets, s.shape[1])
    score = s.gather(1, targets.view(-1, 1)).sum()
    if not score.requires_grad:  # the score does not depend on the input
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(score, xg, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def _batched_gradients(
    model: nn.Module,
    scores: Scores,
    targets: torch.Tensor,
    n_jobs: int,
    batch_size: int,
    make_inputs: Callable[[slice], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    like: torch.Tensor,
) -> torch.Tensor:
    """Sum ``weight * gradient`` per image over ``n_jobs`` inputs, ``batch_size`` at a time,
    in float32 at least (also for a float16 model; float64 stays float64).

    ``make_inputs(slice)`` returns ``(image_index, inputs, weights)`` for the jobs in the slice.
    """
    acc = _accumulator(like.dtype)
    total = torch.zeros_like(like, dtype=acc)
    for start in range(0, n_jobs, batch_size):
        idx, inputs, weights = make_inputs(slice(start, min(start + batch_size, n_jobs)))
        grad = _input_gradient(model, scores, inputs, targets[idx]).to(acc)
        total.index_add_(0, idx, grad * weights.view(-1, 1, 1, 1).to(acc))
    return total

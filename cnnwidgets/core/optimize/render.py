"""The optimization loop: :func:`optimize`, its result :class:`OIPResult` and its schedules.

Every step the image is transformed, run through the model (:mod:`._forward`), scored by the
objective minus the penalties, and moved uphill by the step rule (``"rms"`` or ``"adam"``);
image operations, snapshots and the callback follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .._validate import check_float as _check_float
from .._validate import check_int as _check_int
from ..model import check_model, get_layer, model_device
from ._common import INITS, PARAMS, STEP_RULES, InitName, ParamName, Shape, StepRule, _check_shape, _generator
from ..outputs import OutputSelector
from ._forward import _prepared
from .image_ops import ImageOp
from .objectives import Objective
from .param import fourier_param, gray_noise, multiscale, pixel_param
from .transforms import _apply


# ---------------------------------------------------------------- results and schedules
def log_steps(total: int, n: int | None = None) -> list[int]:
    """Logarithmically spaced snapshot steps: 9, 18, 36, 72, ... below ``total``, plus ``total - 1``.

    Steps are 0-based, so ``total - 1`` is the last step of a run of ``total`` steps (the
    classic study's "step 599 finalized" for 600 epochs).

    Parameters
    ----------
    total : int
        Number of steps of the run (>= 1).
    n : int, optional
        At most this many doubling steps before the last one (the classic study's 6
        intermediate reports); all below ``total - 1`` when None.

    Examples
    --------
    >>> log_steps(600)
    [9, 18, 36, 72, 144, 288, 576, 599]
    >>> log_steps(600, n=6)
    [9, 18, 36, 72, 144, 288, 599]
    >>> log_steps(5)
    [4]
    """
    total = _check_int(total, "total", 1)
    limit = None if n is None else _check_int(n, "n", 0)
    out = []
    s = 9
    while s < total - 1 and (limit is None or len(out) < limit):
        out.append(s)
        s *= 2
    out.append(total - 1)
    return out


@dataclass(eq=False)
class OIPResult:
    """Outcome of :func:`optimize`.

    Attributes
    ----------
    images : torch.Tensor
        B x C x H x W float in [0, 1], CPU: the images after the last step.
    history : list of float
        Mean objective over the batch at every step done (``len == steps_done``).
    per_image : torch.Tensor
        steps_done x B, CPU: the objective of every image at every step. Row ``k`` is the value
        of the image that entered step ``k`` (with that step's random transform), before its
        update.
    snapshots : dict of int to torch.Tensor
        Step ``k`` -> B x C x H x W (CPU): the images right after step ``k``'s update.
    steps_done : int
        Number of steps (updates) done.
    converged : bool
        The convergence criterion ended the run.
    stopped : bool
        ``stop.is_set()`` or the callback ended the run.
    initial : torch.Tensor
        B x C x H x W, CPU: the starting images.
    final_values : torch.Tensor
        (B,), CPU: the objective of ``images`` (without transforms or penalties).

    Examples
    --------
    >>> from cnnwidgets.core.optimize import channel
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> res = optimize(net, channel("0", 1), (1, 8, 8), steps=3)
    >>> res.steps_done, res.per_image.shape
    (3, torch.Size([3, 1]))
    """

    images: torch.Tensor
    history: list[float]
    per_image: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    steps_done: int
    converged: bool = False
    stopped: bool = False
    initial: torch.Tensor | None = None
    final_values: torch.Tensor | None = None
    objective: str = ""

    @property
    def dead(self) -> torch.Tensor:
        """(B,) bool: images whose objective was exactly 0 at every step (a dead target)."""
        if self.per_image.numel() == 0:
            return torch.zeros(self.images.shape[0], dtype=torch.bool)
        return (self.per_image == 0).all(dim=0)

    def __repr__(self) -> str:
        last = f"{self.history[-1]:.4g}" if self.history else "-"
        return (
            f"OIPResult(objective={self.objective!r}, images={tuple(self.images.shape)}, "
            f"steps_done={self.steps_done}, last_value={last}, converged={self.converged}, "
            f"stopped={self.stopped}, snapshots={sorted(self.snapshots)})"
        )


def _resolve_batch(batch: Any, objective: Objective, init: Any) -> int:
    batch = _check_int(batch, "batch", 1)
    sources = {}
    if batch != 1:
        sources["batch"] = batch
    if objective.batch_size is not None:
        sources["the objective's target list"] = objective.batch_size
    if isinstance(init, torch.Tensor) and init.dim() == 4 and init.shape[0] != 1:
        sources["init"] = init.shape[0]
    sizes = set(sources.values())
    if len(sizes) > 1:
        desc = ", ".join(f"{k} = {v}" for k, v in sources.items())
        raise ValueError(f"inconsistent batch sizes: {desc}")
    return sizes.pop() if sizes else 1


def _start_image(
    init: Any, shape: tuple[int, int, int], batch: int, seed: int, init_kw: Mapping[str, Any]
) -> torch.Tensor | None:
    if init is None:
        return None
    if isinstance(init, torch.Tensor):
        return init
    if init == "gray":
        return gray_noise(shape, batch, seed, **init_kw)
    if init == "multiscale":
        return multiscale(shape, batch, seed, **init_kw)
    raise ValueError(f"init must be None, a tensor or one of {', '.join(repr(i) for i in INITS)}; got {init!r}")


def _snapshot_steps(snapshots: Any, steps: int) -> tuple[set[int], bool]:
    """(steps to snapshot, whether to snapshot the last step done)."""
    if snapshots is None:
        return set(), False
    if isinstance(snapshots, str):
        if snapshots != "log":
            raise ValueError(f"snapshots must be 'log', a list of steps or None; got {snapshots!r}")
        return set(log_steps(steps)), True
    return {_check_int(s, "snapshot step", 0) for s in snapshots}, False


def _check_converge(converge: Any) -> tuple[int, float, float] | None:
    if converge is None:
        return None
    if not isinstance(converge, Mapping):
        raise TypeError(f"converge must be a dict like {{'window': 20, 'rtol': 1e-4}} or None, got {converge!r}")
    unknown = set(converge) - {"window", "rtol", "atol"}
    if unknown:
        raise ValueError(f"unknown converge keys {sorted(unknown)}; valid: 'window', 'rtol', 'atol'")
    window = _check_int(converge.get("window", 20), "converge window", 1)
    rtol = _check_float(converge.get("rtol", 1e-4), "converge rtol", nonneg=True)
    atol = _check_float(converge.get("atol", 1e-12), "converge atol", positive=True)
    return window, rtol, atol


def _rms_step(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
    """``p += lr * g / (rms(g) + 1e-8)``, with the RMS taken over each image's parameters."""
    if len(grads) == 1:  # the usual case: one tensor of pixels or coefficients
        rms = grads[0].pow(2).flatten(1).mean(1).sqrt()
    else:
        sumsq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        rms = (sumsq / sum(g[0].numel() for g in grads)).sqrt()
    for p, g in zip(params, grads):
        p.add_(g / (rms.view(-1, *([1] * (g.dim() - 1))) + 1e-8), alpha=lr)


class _Adam:
    """Adam ascent (``maximize=True``) through torch's functional ``torch.optim.adam.adam``.

    ``torch.optim.Adam(...)`` imports ``torch._dynamo`` on first construction, which takes
    seconds -- a freeze the first time a widget switches to Adam. The functional form is the
    same torch code without that import; if its (semi-private) signature ever changes, this
    falls back to ``torch.optim.Adam``.
    """

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.state_steps = [torch.tensor(0.0) for _ in params]
        self.fallback: torch.optim.Optimizer | None = None

    def step(self, grads: list[torch.Tensor]) -> None:
        if self.fallback is None:
            try:
                from torch.optim.adam import adam

                adam(
                    self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.state_steps,
                    foreach=False, capturable=False, differentiable=False, fused=None,
                    grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
                    beta1=0.9, beta2=0.999, lr=self.lr, weight_decay=0.0, eps=1e-8, maximize=True,
                )
                return
            except (ImportError, TypeError):
                if any(float(t) for t in self.state_steps):  # failed mid-run: cannot switch
                    raise
                self.fallback = torch.optim.Adam(self.params, lr=self.lr, maximize=True)
        for p, g in zip(self.params, grads):
            p.grad = g
        self.fallback.step()
        for p in self.params:
            p.grad = None


# ---------------------------------------------------------------- optimize
def optimize(
    model: nn.Module,
    objective: Objective,
    shape: Shape,
    *,
    batch: int = 1,
    steps: int = 200,
    lr: float = 0.05,
    step_rule: StepRule = "rms",
    param: ParamName = "pixel",
    init: torch.Tensor | InitName | None = None,
    transforms: Sequence[Callable[..., torch.Tensor]] = (),
    penalties: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
    image_ops: Sequence[ImageOp] = (),
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    seed: int = 0,
    snapshots: Literal["log"] | Sequence[int] | None = "log",
    converge: Mapping[str, float] | None = None,
    callback: Callable[[int, torch.Tensor, Callable[[], torch.Tensor]], bool | None] | None = None,
    stop: Any = None,
    init_kw: Mapping[str, Any] | None = None,
    output: OutputSelector = None,
) -> OIPResult:
    """Gradient ascent on the input image: find patterns that maximize ``objective``.

    Every step ``k`` (0-based): ``img = image_fn()``; the transforms (random each step) are
    applied; the model sees ``(t(img) - mean) / std``; the objective minus the penalties (on
    the untransformed ``img``) is differentiated with respect to the parameters, which move
    uphill by ``step_rule``; the pixels are projected back into [0, 1] and the image
    operations run (pixel parameterization); the snapshot is taken; ``callback`` is called.

    Parameters
    ----------
    model : nn.Module
        Any model; it runs on its own device, in eval mode, with frozen parameters, and only
        as deep as needed (the pass stops after the objective's last layer unless it needs
        logits).
    objective : Objective
        See :func:`channel`, :func:`neuron`, :func:`class_logit`; combine with ``+ - *``.
    shape : (C, H, W)
        Image size the model expects, e.g. ``(1, 28, 28)``.
    batch : int
        Number of images B optimized at once (independently). Left at 1, it is taken from a
        batch-mode objective's target list or from an ``init`` tensor with B rows.
    steps : int
        Maximum number of steps (> 0).
    lr : float
        Step size (> 0). ``"rms"``: each image moves by ``lr`` in RMS over its parameters
        (display units, 0..1, for pixels). ``"adam"``: Adam's learning rate.
    step_rule : {"rms", "adam"}
        ``"rms"``: ``x += lr * g / (sqrt(mean(g ** 2)) + 1e-8)`` per image, the gradient
        normalized by its RMS (the classic OIP update). ``"adam"``: torch's Adam
        (betas 0.9, 0.999; eps 1e-8) with ``maximize=True``.
    param : {"pixel", "fourier"}
        :func:`pixel_param` or :func:`fourier_param` (decorrelated colour for C == 3).
    init : None, "gray", "multiscale" or torch.Tensor
        Starting image: None = gray noise for pixels (:func:`gray_noise`) and a small random
        spectrum for Fourier; "gray" / "multiscale" with ``init_kw`` (e.g. ``amplitudes``);
        or a tensor B x C x H x W (or 1 x C x H x W) in display space [0, 1], e.g. dataset
        images un-normalized with ``img * std + mean``.
    transforms : sequence of callables
        ``fn(img) -> img``, applied in order every step (:func:`jitter`, :func:`scale`,
        :func:`rotate`, :func:`compose`); their random draws come from a generator seeded
        with ``seed``. They must keep the shape the model needs.
    penalties : sequence of callables
        ``pen(img) -> (B,)`` subtracted from the objective (:func:`l2`, :func:`lp`,
        :func:`total_variation`).
    image_ops : sequence of callables
        ``op(img, step, grad) -> img`` applied to the pixels after each update
        (:func:`blur_every`, :func:`clip_weak_pixels`); pixel parameterization only.
    mean, std : float or sequence of float, optional
        Per-channel normalization the model expects.
    seed : int
        Seeds the starting image and the transforms: the same seed gives the same result
        (bitwise on CPU).
    snapshots : "log", list of int or None
        Steps after which to keep a copy of the images: "log" = :func:`log_steps` (9, 18, 36,
        ...) plus the last step done.
    converge : dict, optional
        ``{"window": w, "rtol": r, "atol": a}`` (defaults 20, 1e-4, 1e-12): stop once, for
        every image, ``|v[k] - v[k - w]| <= r * w * max(|v[k]|, a)`` -- the relative change
        per step over the last ``w`` steps is below ``r``. (A target that stays exactly 0
        counts as converged.)
    callback : callable, optional
        ``callback(step, values, image_fn)`` after every step: ``values`` (B,) CPU objective
        values of the step, ``image_fn()`` the current images (B x C x H x W, CPU, in [0, 1],
        computed only when called). Return True to stop.
    stop : object with ``is_set()``, optional
        E.g. a ``threading.Event``; checked before every step, so setting it from another
        thread ends the run within one step.
    init_kw : dict, optional
        Keyword arguments for the named ``init`` (:func:`gray_noise` ``amplitude``;
        :func:`multiscale` ``scales``, ``amplitudes``, ``mode``).
    output : int, str, callable or None
        For class objectives on a model with a structured output: which part holds the class
        scores (:func:`~cnnwidgets.core.outputs.select_output`). Layer objectives never read
        the output and need none.

    Returns
    -------
    OIPResult

    Raises
    ------
    ValueError
        Unknown layer (the message lists valid names), a channel/unit/class out of range
        (the message names 0..K-1), ``steps <= 0``, ``lr <= 0``, bad choices or shapes.

    Notes
    -----
    Runs under :func:`~cnnwidgets.core.model.preserved_state`: the model's training flags
    and ``requires_grad`` flags are restored and no hook remains, also after an error.

    Examples
    --------
    >>> from cnnwidgets.core.optimize import class_logit
    >>> _ = torch.manual_seed(0)  # some random nets have every unit of class 2 dead at the start
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    >>> res = optimize(net, class_logit(2), (1, 8, 8), steps=5, snapshots=None)
    >>> res.history[-1] > res.history[0]
    True
    """
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be an Objective, got {type(objective).__name__}. "
            "Hint: build one with channel(), neuron() or class_logit()."
        )
    shape = _check_shape(shape)
    steps = _check_int(steps, "steps")
    if steps <= 0:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lr = _check_float(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {', '.join(repr(s) for s in STEP_RULES)}; got {step_rule!r}")
    if param not in PARAMS:
        raise ValueError(f"param must be one of {', '.join(repr(p) for p in PARAMS)}; got {param!r}")
    seed = _check_int(seed, "seed")
    for t in transforms:
        if not callable(t):
            raise TypeError(f"every transform must be callable, got {type(t).__name__}")
    for pen in penalties:
        if not callable(pen):
            raise TypeError(f"every penalty must be callable, got {type(pen).__name__}")
    for op in image_ops:
        if not callable(op):
            raise TypeError(f"every image op must be callable, got {type(op).__name__}")
    if image_ops and param != "pixel":
        raise ValueError("image_ops act on the pixels: use param='pixel'")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError("stop must have an is_set() method, e.g. a threading.Event")
    conv = _check_converge(converge)
    snap_steps, snap_last = _snapshot_steps(snapshots, steps)
    batch = _resolve_batch(batch, objective, init)
    if init_kw and not isinstance(init, str):
        raise ValueError("init_kw applies to init='gray' or 'multiscale'")
    start = _start_image(init, shape, batch, seed, init_kw or {})
    for name in objective.layers:
        get_layer(model, name)  # unknown layer: ValueError with the valid names, before any work

    device = model_device(model)
    if param == "pixel":
        params, image_fn = pixel_param(shape, batch, start, seed, device=device)
    else:
        params, image_fn = fourier_param(shape, batch, seed, init=start, device=device)
    pix = params[0]

    gen = _generator(seed + 1)  # transforms; not the start image's stream
    optimizer = _Adam(params, lr) if step_rule == "adam" else None

    def current() -> torch.Tensor:
        with torch.no_grad():
            return image_fn().detach().to("cpu", torch.float32).clone()

    per_image: list[torch.Tensor] = []
    snaps: dict[int, torch.Tensor] = {}
    converged = stopped = False
    done = 0
    initial = current()
    with _prepared(model, objective, shape[0], mean, std, output=output) as run, torch.enable_grad():
        for k in range(steps):
            if stop is not None and stop.is_set():
                stopped = True
                break
            img = image_fn()
            if (transforms or penalties) and img.is_leaf:
                img = img.clone()  # the pixels themselves: user code may change its input in place
            seen = img
            for t in transforms:
                seen = _apply(t, seen, gen)
            values = run(seen)
            if values.shape[0] != batch:
                raise ValueError(f"objective gave {values.shape[0]} values for a batch of {batch}")
            total = values
            for pen in penalties:
                total = total - pen(img)
            if total.requires_grad:
                grads = torch.autograd.grad(total.sum(), params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            else:  # the objective does not depend on the image
                grads = [torch.zeros_like(p) for p in params]
            with torch.no_grad():
                if optimizer is None:
                    _rms_step(params, grads, lr)
                else:
                    optimizer.step(grads)
                if param == "pixel":
                    pix.clamp_(0, 1)
                    for op in image_ops:
                        pix.copy_(op(pix.detach(), k, grads[0]).clamp(0, 1))
            done = k + 1
            vals = values.detach().to("cpu", torch.float32)
            per_image.append(vals)
            if k in snap_steps:
                snaps[k] = current()
            if callback is not None and callback(k, vals.clone(), current):
                stopped = True
                break
            if conv is not None and len(per_image) > conv[0]:
                w, rtol, atol = conv
                now, then = per_image[-1], per_image[-1 - w]
                if bool(((now - then).abs() <= rtol * w * now.abs().clamp(min=atol)).all()):
                    converged = True
                    break
        images = current()
        with torch.no_grad():
            final_values = run(image_fn()).detach().to("cpu", torch.float32)
    if snap_last and done > 0 and (done - 1) not in snaps:
        snaps[done - 1] = images.clone()
    table = torch.stack(per_image) if per_image else torch.zeros(0, batch)
    return OIPResult(
        images=images,
        history=table.mean(dim=1).tolist(),
        per_image=table,
        snapshots=dict(sorted(snaps.items())),
        steps_done=done,
        converged=converged,
        stopped=stopped,
        initial=initial,
        final_values=final_values,
        objective=objective.name,
    )

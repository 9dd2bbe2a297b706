"""Modified activation backward passes for deconvnet and guided backpropagation.

:func:`relu_rule` changes the backward pass of every rectifying activation the model calls
while the block runs, on the calling thread only: ``nn.ReLU`` modules (reused or in place)
and functional calls alike (``F.relu``, ``torch.relu``, ``x.relu_()``, ``F.relu6``,
``clamp(min=0)``, ...), found by a :class:`torch.overrides.TorchFunctionMode` rather than by
looking for modules, so a network that calls ``F.relu`` inside its ``forward`` (GoogLeNet,
DenseNet) gets the rule too. The forward values, in-place writes included, are those of the
model. Plain torch; no widget imports.

==============  ==============================================  ==========================
rule            backward of ``y = f(x)``                        reference
==============  ==============================================  ==========================
(plain grad)    ``grad_out * f'(x)``                            --
``deconvnet``   ``grad_out.clamp(min=0)``                       Zeiler & Fergus (2014)
``guided``      ``grad_out.clamp(min=0) * f'(x)``               Springenberg et al. (2015)
==============  ==============================================  ==========================

For ReLU, ``f'(x) = (x > 0)`` and the rules are the published ones. Other rectifiers
(ReLU6, LeakyReLU, PReLU, ELU, SELU, CELU, SiLU, GELU, Hardswish, Mish) get the same rules
with their own ``f'``: the positive-gradient rule the literature applies to them (guided
backpropagation keeps only positive gradient where the unit passes signal; deconvnet
rectifies the backward signal). Gates (Sigmoid, Hardsigmoid, Tanh, as in squeeze-excitation)
keep their ordinary gradient. :class:`RuleReport` counts, per activation, how many calls got
the rule and how many gates were left alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .model import check_model

__all__ = ["RELU_RULES", "ReluRule", "RuleReport", "relu_rule"]

ReluRule = Literal["deconvnet", "guided"]
#: Valid values of ``rule`` for :func:`relu_rule`.
RELU_RULES: tuple[str, ...] = ("deconvnet", "guided")


@dataclass
class RuleReport:
    """What one :func:`relu_rule` block did: calls that got the rule, and gates left alone,
    by activation name (e.g. ``{"ReLU": 17, "SiLU": 4}``)."""

    rule: str
    applied: Counter = field(default_factory=Counter)
    gates: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.applied.values())

    def describe(self) -> str:
        """One sentence, e.g. ``"guided rule on 17 ReLU and 4 SiLU calls"``."""
        if not self.applied:
            text = (f"no rectifying activation ran, so the {self.rule} rule changed nothing: "
                    "this map is the plain gradient")
        else:
            parts = [f"{n} {name}" for name, n in sorted(self.applied.items(), key=lambda kv: -kv[1])]
            text = f"{self.rule} rule on {_join(parts)} call(s)"
        if self.gates:
            parts = [f"{n} {name}" for name, n in sorted(self.gates.items(), key=lambda kv: -kv[1])]
            text += f"; {_join(parts)} gate(s) kept their ordinary gradient"
        return text


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------- the activations
def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _without_inplace(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def pure(x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        kw = dict(kwargs)
        kw.pop("inplace", None)
        return fn(x, *args[1:], **kw)
    return pure


@dataclass(frozen=True)
class _Activation:
    name: str
    pure: Callable[[torch.Tensor, tuple, dict], torch.Tensor]  # f(x), never in place
    inplace: Callable[[tuple, dict], bool]
    applies: Callable[[tuple, dict], bool] = lambda args, kwargs: True
    # f'(x) for the guided rule without recomputing f (None: by autograd on f)
    slope: Callable[[torch.Tensor, tuple, dict], torch.Tensor] | None = None


def _inplace_kw(pos: int) -> Callable[[tuple, dict], bool]:
    return lambda args, kwargs: bool(_arg(args, kwargs, pos, "inplace", False))


def _never(args: tuple, kwargs: dict) -> bool:
    return False


def _always(args: tuple, kwargs: dict) -> bool:
    return True


def _relu_pure(x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    return torch.relu(x)


def _relu_slope(x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def _clamp_min(args: tuple, kwargs: dict) -> Any:
    return _arg(args, kwargs, 1, "min", None)


def _is_relu_clamp(args: tuple, kwargs: dict) -> bool:
    lo, hi = _clamp_min(args, kwargs), _arg(args, kwargs, 2, "max", None)
    return hi is None and isinstance(lo, (int, float)) and not isinstance(lo, bool) and lo == 0


def _is_relu_clamp_min(args: tuple, kwargs: dict) -> bool:
    lo = _clamp_min(args, kwargs)
    return isinstance(lo, (int, float)) and not isinstance(lo, bool) and lo == 0


def _hardtanh_is_rectifier(args: tuple, kwargs: dict) -> bool:
    return _arg(args, kwargs, 1, "min_val", -1.0) == 0


def _hardtanh_slope(x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    hi = _arg(args, kwargs, 2, "max_val", 1.0)
    return ((x > 0) & (x < hi)).to(x.dtype)


def _hardtanh_name(args: tuple, kwargs: dict) -> str:
    return "ReLU6" if _arg(args, kwargs, 2, "max_val", 1.0) == 6 else "Hardtanh"


def _table() -> tuple[dict[Any, _Activation], dict[Any, str]]:
    T = torch.Tensor
    relu = _Activation("ReLU", _relu_pure, _inplace_kw(1), slope=_relu_slope)
    relu_ = _Activation("ReLU", _relu_pure, _always, slope=_relu_slope)
    clamp = _Activation("ReLU", _relu_pure, _never, _is_relu_clamp, _relu_slope)
    clamp_ = _Activation("ReLU", _relu_pure, _always, _is_relu_clamp, _relu_slope)
    clamp_min = _Activation("ReLU", _relu_pure, _never, _is_relu_clamp_min, _relu_slope)
    clamp_min_ = _Activation("ReLU", _relu_pure, _always, _is_relu_clamp_min, _relu_slope)
    hardtanh = _Activation("ReLU6", _without_inplace(F.hardtanh), _inplace_kw(3), _hardtanh_is_rectifier, _hardtanh_slope)
    table: dict[Any, _Activation] = {
        F.relu: relu, torch.relu: relu, T.relu: relu,
        torch.relu_: relu_, T.relu_: relu_,
        F.relu6: _Activation("ReLU6", _without_inplace(F.relu6), _inplace_kw(1),
                             slope=lambda x, a, k: ((x > 0) & (x < 6)).to(x.dtype)),
        F.hardtanh: hardtanh,
        torch.clamp: clamp, T.clamp: clamp, torch.clip: clamp, T.clip: clamp,
        torch.clamp_: clamp_, T.clamp_: clamp_, T.clip_: clamp_,
        torch.clamp_min: clamp_min, T.clamp_min: clamp_min,
        torch.clamp_min_: clamp_min_, T.clamp_min_: clamp_min_,
        F.leaky_relu: _Activation("LeakyReLU", _without_inplace(F.leaky_relu), _inplace_kw(2)),
        F.prelu: _Activation("PReLU", lambda x, a, k: F.prelu(x, *a[1:], **k), _never),
        F.elu: _Activation("ELU", _without_inplace(F.elu), _inplace_kw(2)),
        F.selu: _Activation("SELU", _without_inplace(F.selu), _inplace_kw(1)),
        F.celu: _Activation("CELU", _without_inplace(F.celu), _inplace_kw(2)),
        F.silu: _Activation("SiLU", _without_inplace(F.silu), _inplace_kw(1)),
        F.gelu: _Activation("GELU", lambda x, a, k: F.gelu(x, *a[1:], **k), _never),
        F.hardswish: _Activation("Hardswish", _without_inplace(F.hardswish), _inplace_kw(1)),
        F.mish: _Activation("Mish", _without_inplace(F.mish), _inplace_kw(1)),
    }
    if getattr(torch, "prelu", None) is not None and torch.prelu is not F.prelu:
        table[torch.prelu] = table[F.prelu]
    gates = {
        torch.sigmoid: "Sigmoid", T.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", torch.sigmoid_: "Sigmoid",
        T.sigmoid_: "Sigmoid", F.hardsigmoid: "Hardsigmoid", torch.tanh: "Tanh", T.tanh: "Tanh",
        F.tanh: "Tanh",
    }
    return table, gates


_ACTIVATIONS, _GATES = _table()


class _Rule(torch.autograd.Function):
    """``f(x)`` forward (in place when the call was); the rule's backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor], act: _Activation,
                args: tuple, kwargs: dict, guided: bool, inplace: bool) -> torch.Tensor:
        ctx.guided = guided
        if guided:
            if act.slope is not None:
                ctx.save_for_backward(act.slope(x, args, kwargs))
                ctx.recompute = None
            else:  # f'(x) by autograd in the backward pass: keep x as it was
                ctx.save_for_backward(x.clone() if inplace else x)
                ctx.recompute = (act, args, kwargs)
        y = call()
        if inplace:
            ctx.mark_dirty(x)
            return x
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        g = grad_out.clamp(min=0)
        if ctx.guided:
            (saved,) = ctx.saved_tensors
            if ctx.recompute is None:
                g = g * saved
            else:
                act, args, kwargs = ctx.recompute
                with _passthrough(), torch.enable_grad():
                    xx = saved.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(act.pure(xx, args, kwargs), xx, g)
        return g, None, None, None, None, None, None


class _RuleMode(TorchFunctionMode):
    """Applies the innermost :func:`relu_rule` of this thread to every activation call."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[RuleReport] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if _STATE.passthrough or not self.reports:
            return func(*args, **kwargs)
        act = _ACTIVATIONS.get(func)
        if act is None:
            gate = _GATES.get(func)
            if gate is not None and torch.is_grad_enabled():
                self.reports[-1].gates[gate] += 1
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if (not isinstance(x, torch.Tensor) or not torch.is_grad_enabled() or not x.requires_grad
                or not x.is_floating_point() or not act.applies(args, kwargs)):
            return func(*args, **kwargs)
        if not args:
            kwargs = dict(kwargs)
            args = (kwargs.pop("input"),)
        report = self.reports[-1]
        name = _hardtanh_name(args, kwargs) if func is F.hardtanh else act.name
        report.applied[name] += 1
        # in place as the model asked, except on a leaf that requires grad (autograd forbids it)
        inplace = act.inplace(args, kwargs) and not x.is_leaf
        call = (lambda: func(*args, **kwargs)) if inplace else (lambda: act.pure(x, args, kwargs))
        return _Rule.apply(x, call, act, args, kwargs, report.rule == "guided", inplace)


class _State(threading.local):
    def __init__(self) -> None:
        self.mode: _RuleMode | None = None
        self.passthrough = False


_STATE = _State()


@contextlib.contextmanager
def _passthrough() -> Iterator[None]:
    before = _STATE.passthrough
    _STATE.passthrough = True
    try:
        yield
    finally:
        _STATE.passthrough = before


@contextlib.contextmanager
def relu_rule(model: nn.Module, rule: ReluRule) -> Iterator[RuleReport]:
    """Context manager: every rectifying activation run on this thread back-propagates by ``rule``.

    For the duration of the block, and on the calling thread only (other threads see the usual
    gradients), each call of a rectifying activation (see the module docstring), whether by
    an ``nn.ReLU``-type module or a functional call inside a ``forward``, records a custom
    autograd node: the forward value (and an in-place write, for ``inplace=True`` and
    ``relu_``) is the model's, the backward follows ``rule``. A module called several times in
    one pass records one node per call. Nothing of ``model`` is changed: the rule applies to
    whatever runs in the block (``model`` is checked, and names the block's purpose).

    Parameters
    ----------
    model : nn.Module
    rule : {"deconvnet", "guided"}
        ``"deconvnet"``: backward is ``grad_out.clamp(min=0)``, ignoring where the forward
        input was positive (Zeiler & Fergus). ``"guided"``: ``grad_out.clamp(min=0) * f'(x)``
        (guided backpropagation, Springenberg et al.).

    Yields
    ------
    RuleReport
        Filled as the block runs: which activations got the rule, how often.

    Raises
    ------
    ValueError
        If ``rule`` is not one of the names above (raised on entering the block).

    Notes
    -----
    Nested blocks: the innermost rule applies. Only activations running as torch functions
    are seen: TorchScript modules, and activations written out by hand (``x * (x > 0)``),
    keep their ordinary gradient (the report then counts fewer calls).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))
    >>> x = torch.randn(1, 2, requires_grad=True)
    >>> with relu_rule(net, "guided") as report:
    ...     net(x).sum().backward()
    >>> report.applied["ReLU"]
    1
    """
    check_model(model)
    if rule not in RELU_RULES:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in RELU_RULES)}; got {rule!r}")
    report = RuleReport(rule)
    mode = _STATE.mode
    with contextlib.ExitStack() as stack:
        if mode is None:
            mode = _RuleMode()
            stack.enter_context(mode)
            _STATE.mode = mode
            stack.callback(setattr, _STATE, "mode", None)
        mode.reports.append(report)
        stack.callback(mode.reports.pop)
        yield report

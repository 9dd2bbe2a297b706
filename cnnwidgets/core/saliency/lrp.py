"""Layer-wise Relevance Propagation (Bach et al., 2015) for ReLU CNNs: :func:`lrp`.

LRP hands the explained class score back down the network layer by layer: each layer splits the
relevance of its outputs among its inputs by a rule, so the input relevance adds up to the score
(up to what biases and the stabilizer absorb). It is computed as a modified gradient times the
input (Montavon et al., 2019, "Layer-wise relevance propagation: an overview"): the forward
values are the model's own, the backward pass of every convolution and linear layer is replaced
by its rule, every other operation keeps its ordinary gradient, and the relevance of an input
value is ``x * grad``. With zero biases and ``epsilon -> 0`` the epsilon rule gives exactly the
gradient times the input.

Which operation gets which treatment (found as the model runs, by a
:class:`torch.overrides.TorchFunctionMode`, so functional calls count as modules do):

=============================================  ================================================
operation                                      relevance
=============================================  ================================================
convolution, transposed convolution, linear    the chosen ``rule`` (:func:`lrp`)
first conv / linear call of the pass           ``first_rule`` if given, else ``rule``
BatchNorm right after a conv / linear          folded into that layer's weights (private copies)
BatchNorm after anything else                  epsilon rule as a per-channel affine layer
ReLU                                           passed on where the unit is on (its gradient)
max pooling                                    winner takes all (its gradient)
average pooling (also adaptive)                in proportion to the inputs (sum pooling, LRP-0)
residual addition, concatenation               in proportion to the summands (their gradient)
flatten, reshape, dropout (eval), padding      unchanged
=============================================  ================================================

Other nonlinear operations (GELU, SiLU, Hardswish, sigmoid and other gates, LayerNorm,
GroupNorm, softmax inside the network, attention, products of two input-dependent tensors) have
no rule here: :func:`lrp` refuses the model with a ValueError naming the modules that compute
them. A final Softmax/Sigmoid is bypassed as for the other methods. Plain torch; no widget imports.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .._validate import check_float
from ..outputs import OutputSelector
from ..runner import forward_errors
from ._common import Target, _accumulator, _check_target_range, _finish, _prepared, _report

__all__ = ["FIRST_RULES", "LRP_RULES", "FirstRule", "LRPReport", "LrpRule", "lrp"]

LrpRule = Literal["epsilon", "gamma", "alpha_beta", "zplus"]
#: Valid values of ``rule`` for :func:`lrp` (the rule of every convolution and linear layer).
LRP_RULES: tuple[str, ...] = ("epsilon", "gamma", "alpha_beta", "zplus")
FirstRule = Literal["zbox", "flat"]
#: Valid values of ``first_rule`` for :func:`lrp` besides None (the rule of the input layer).
FIRST_RULES: tuple[str, ...] = ("zbox", "flat")
#: ``(low, high)`` of the input domain for the zbox rule: numbers, or tensors broadcastable
#: to the first layer's input (a tensor of C values is read per channel).
Bounds = tuple[Union[float, torch.Tensor], Union[float, torch.Tensor]]

_SCOPE = ("LRP here covers ReLU CNNs: convolutions, linear layers, BatchNorm, ReLU, max and average "
          "pooling, residual additions and concatenation")


# ---------------------------------------------------------------- what a call reports
@dataclass
class LRPReport:
    """What one :func:`lrp` call did (``explain(...).rule``).

    Attributes
    ----------
    rule : str
        The rule and its parameter, e.g. ``"epsilon rule (epsilon = 1e-06)"``.
    first_rule : str or None
        The rule asked for the first layer, None when it gets ``rule``.
    first_found : bool
        Whether a conv/linear call took the input, so that ``first_rule`` was used.
    layers : Counter
        Calls that got a rule, by kind: ``"convolution"``, ``"transposed convolution"``,
        ``"linear"``.
    folded : int
        BatchNorm calls folded into the convolution or linear layer before them.
    affine : int
        BatchNorm calls after anything else (epsilon rule as a per-channel affine layer).
    total : int
        The number of calls in ``layers`` (as :class:`~cnnwidgets.core.relu_rules.RuleReport` has).
    conservation : torch.Tensor or None
        Per image (N,): the sum of the input relevance divided by the explained score (NaN for a
        zero score). 1 up to what biases and the stabilizer absorb.
    """

    rule: str
    first_rule: str | None = None
    layers: Counter = field(default_factory=Counter)
    folded: int = 0
    affine: int = 0
    first_found: bool = False
    conservation: torch.Tensor | None = None

    @property
    def total(self) -> int:
        """Conv and linear calls that got a rule (0: the map is gradient x input)."""
        return sum(self.layers.values())

    def describe(self) -> str:
        """One sentence, e.g. ``"epsilon rule (epsilon = 1e-06) on 3 convolution and 1 linear
        calls, 2 BatchNorm folded in; input relevance sums to 0.97 x the score"``."""
        if not self.layers:
            text = f"{self.rule}: no convolution or linear layer ran, so this map is gradient x input"
        else:
            parts = [f"{n} {kind}" for kind, n in sorted(self.layers.items(), key=lambda kv: -kv[1])]
            text = f"{self.rule} on {_join(parts)} call{'s' if self.total > 1 else ''}"
        if self.first_rule is not None:
            text += (f", {self.first_rule} rule on the first layer" if self.first_found
                     else f", no layer took the input (the {self.first_rule} rule was not used)")
        if self.folded:
            text += f", {self.folded} BatchNorm folded in"
        if self.affine:
            text += f", {self.affine} BatchNorm on its own (epsilon rule)"
        if self.conservation is not None:
            c = self.conservation[torch.isfinite(self.conservation)]
            if c.numel():
                text += f"; input relevance sums to {float(c.mean()):.3g} x the score"
        return text


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class _Config:
    rule: str
    epsilon: float
    gamma: float
    alpha: float
    beta: float
    first_rule: str | None
    bounds: Bounds | None

    def label(self) -> str:
        if self.rule == "epsilon":
            return f"epsilon rule (epsilon = {self.epsilon:g})"
        if self.rule == "gamma":
            return f"gamma rule (gamma = {self.gamma:g})"
        if self.rule == "alpha_beta":
            return f"alpha-beta rule (alpha = {self.alpha:g}, beta = {self.beta:g})"
        return "z+ rule"


def _config(rule: Any, epsilon: Any, gamma: Any, alpha: Any, beta: Any, first_rule: Any, bounds: Any) -> _Config:
    if rule not in LRP_RULES:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in LRP_RULES)}; got {rule!r}")
    if first_rule is not None and first_rule not in FIRST_RULES:
        raise ValueError(f"first_rule must be None or one of {', '.join(repr(r) for r in FIRST_RULES)}; "
                         f"got {first_rule!r}")
    epsilon = check_float(epsilon, "epsilon", nonneg=True)
    gamma = check_float(gamma, "gamma", nonneg=True)
    alpha = check_float(alpha, "alpha", nonneg=True)
    beta = check_float(beta, "beta", nonneg=True)
    if rule == "alpha_beta" and not math.isclose(alpha - beta, 1.0, abs_tol=1e-9):
        raise ValueError(f"the alpha-beta rule needs alpha - beta = 1 (so relevance is conserved), got "
                         f"alpha = {alpha:g}, beta = {beta:g}; e.g. alpha=2, beta=1, or alpha=1, beta=0 (z+)")
    if bounds is not None:
        if first_rule != "zbox":
            raise ValueError("bounds= is the input domain of the zbox rule; pass it with first_rule='zbox'")
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}")
        for b in bounds:
            if not isinstance(b, torch.Tensor) and (isinstance(b, bool) or not isinstance(b, numbers.Real)):
                raise TypeError(f"bounds must hold numbers or tensors, got {type(b).__name__}")
        bounds = (bounds[0], bounds[1])
    return _Config(rule, epsilon, gamma, alpha, beta, first_rule, bounds)


# ---------------------------------------------------------------- the rules
def _den(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with sign(0) = +1 (zennit's stabilizer); zeros become 1 for eps = 0."""
    if eps == 0:
        return z.masked_fill(z == 0, 1)
    return torch.where(z >= 0, z + eps, z - eps)


class _EpsilonScale:
    """Tensor hook: the gradient into ``z`` times ``|z| / (|z| + eps)`` (= ``z / (z + eps sign z)``).
    With the plain backward of a linear layer below it, ``x * grad`` is the epsilon rule."""

    __slots__ = ("scale",)

    def __init__(self, z: torch.Tensor, eps: float) -> None:
        a = z.detach().abs()
        self.scale: torch.Tensor | None = a.div_(a + eps)
        z.register_hook(self)

    def off(self) -> None:
        self.scale = None

    def __call__(self, grad: torch.Tensor) -> torch.Tensor | None:
        return None if self.scale is None else grad * self.scale


Layer = Callable[[torch.Tensor, torch.Tensor, Union[torch.Tensor, None]], torch.Tensor]


def _clamp(t: torch.Tensor | None, lo: float | None = None, hi: float | None = None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=lo, max=hi)


def _rerouted(z: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """Forward value ``z`` exactly; gradient through ``mod``."""
    return z + (mod - mod.detach())


def _ruled(cfg: _Config, f: Layer, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, z: torch.Tensor,
           first: str | None, bounds: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The layer ``f(x, w, b)`` (forward value ``z``, detached) under a modified rule or a first
    rule: the tensor to hand on, and the leaves whose ``leaf * grad`` is the relevance of the
    layer's input (first rules; empty otherwise)."""
    eps = cfg.epsilon
    w = w.detach()
    b = None if b is None else b.detach()
    if first is not None:
        if first == "zbox":
            xin = x.detach().requires_grad_(True)
            lo, hi = bounds(xin)
            lo = lo.expand_as(xin).clone().requires_grad_(True)
            hi = hi.expand_as(xin).clone().requires_grad_(True)
            zm = f(xin, w, None) - f(lo, w.clamp(min=0), None) - f(hi, w.clamp(max=0), None)
            leaves = [xin, lo, hi]
        else:  # flat
            ones = torch.ones_like(x, requires_grad=True)
            zm = f(ones, torch.ones_like(w), None)
            leaves = [ones]
        return _rerouted(z, zm * (z / _den(zm.detach(), eps))), leaves
    signed = bool(x.detach().amin() < 0)
    xp, xn = (x.clamp(min=0), x.clamp(max=0)) if signed else (x, None)

    def both(w_pos: torch.Tensor, b_pos: torch.Tensor | None, w_neg: torch.Tensor) -> torch.Tensor:
        # f(x+, w_pos, b_pos) + f(x-, w_neg): zennit's generalized split for signed inputs
        out = f(xp, w_pos, b_pos)
        return out if xn is None else out + f(xn, w_neg, None)

    if cfg.rule == "gamma":
        g = cfg.gamma
        w_up, w_dn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_dn = None if b is None else b + g * b.clamp(max=0)
        zp, zn = both(w_up, b_up, w_dn), both(w_dn, b_dn, w_up)
        zero = z.new_zeros(())
        cp = torch.where(z > 0, z / _den(zp.detach(), eps), zero)
        cn = torch.where(z < 0, z / _den(zn.detach(), eps), zero)
        return _rerouted(z, zp * cp + zn * cn), []
    alpha, beta = (cfg.alpha, cfg.beta) if cfg.rule == "alpha_beta" else (1.0, 0.0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    zpos = both(wp, _clamp(b, lo=0), wn)
    mod = zpos * (alpha * z / _den(zpos.detach(), eps))
    if beta:
        zneg = both(wn, _clamp(b, hi=0), wp)
        mod = mod - zneg * (beta * z / _den(zneg.detach(), eps))
    return _rerouted(z, mod), []


# ---------------------------------------------------------------- which torch function is what
_LAYERS: dict[Any, str] = {
    torch.conv1d: "convolution", torch.conv2d: "convolution", torch.conv3d: "convolution",
    torch.conv_transpose1d: "transposed convolution", torch.conv_transpose2d: "transposed convolution",
    torch.conv_transpose3d: "transposed convolution", F.linear: "linear",
}


def _refused_table() -> dict[Any, str]:
    T = torch.Tensor
    table: dict[Any, str] = {}

    def add(name: str, *fns: str) -> None:
        for spec in fns:
            owner, _, attr = spec.rpartition(".")
            fn = getattr({"F": F, "torch": torch, "T": T, "linalg": torch.linalg}[owner], attr, None)
            if fn is not None:
                table[fn] = name

    add("GELU", "F.gelu")
    add("SiLU", "F.silu")
    add("Hardswish", "F.hardswish")
    add("Hardsigmoid", "F.hardsigmoid")
    add("Mish", "F.mish")
    add("Sigmoid", "torch.sigmoid", "T.sigmoid", "T.sigmoid_", "F.sigmoid", "torch.sigmoid_", "F.logsigmoid")
    add("Tanh", "torch.tanh", "T.tanh", "T.tanh_", "F.tanh", "F.tanhshrink", "F.softsign")
    add("Softmax", "F.softmax", "torch.softmax", "T.softmax", "F.log_softmax", "torch.log_softmax",
        "T.log_softmax", "F.softmin", "F.gumbel_softmax")
    add("Softplus", "F.softplus")
    add("ELU", "F.elu", "F.elu_", "F.selu", "F.selu_", "F.celu", "F.celu_")
    add("LeakyReLU", "F.leaky_relu", "F.leaky_relu_", "F.rrelu", "F.rrelu_")
    add("PReLU", "F.prelu", "torch.prelu")
    add("ReLU6/Hardtanh", "F.hardtanh", "F.hardtanh_", "F.relu6")
    add("Threshold", "F.threshold", "F.threshold_")
    add("GLU", "F.glu")
    add("LayerNorm", "F.layer_norm", "F.rms_norm")
    add("GroupNorm", "F.group_norm")
    add("InstanceNorm", "F.instance_norm")
    add("LocalResponseNorm", "F.local_response_norm")
    add("normalization by a norm", "F.normalize", "torch.norm", "T.norm", "linalg.vector_norm", "linalg.norm",
        "torch.var", "T.var", "torch.std", "T.std", "torch.var_mean", "torch.std_mean")
    add("attention", "F.scaled_dot_product_attention", "F.multi_head_attention_forward")
    add("exp/log/sqrt/power", "torch.exp", "T.exp", "T.exp_", "torch.log", "T.log", "torch.sqrt", "T.sqrt",
        "torch.rsqrt", "T.rsqrt", "torch.pow", "T.pow", "T.__pow__", "T.__rpow__", "T.pow_", "torch.square",
        "T.square", "torch.reciprocal", "T.reciprocal", "torch.erf", "T.erf", "torch.abs", "T.abs", "T.__abs__",
        "torch.sin", "torch.cos", "T.sin", "T.cos")
    return table


_REFUSED = _refused_table()


def _tables() -> tuple[set, set, set, dict, set]:
    T = torch.Tensor
    products = {T.mul, T.__mul__, T.__rmul__, T.mul_, T.__imul__, torch.mul, torch.multiply, T.matmul,
                T.__matmul__, T.__rmatmul__, torch.matmul, torch.bmm, T.bmm, torch.mm, T.mm, torch.einsum,
                torch.baddbmm, torch.addmm, torch.addcmul, F.bilinear}
    extremes = {torch.maximum, torch.minimum, torch.max, torch.min, T.max, T.min, torch.fmax, torch.fmin}
    divisions = {T.div, T.__truediv__, T.div_, T.__itruediv__, torch.div, torch.true_divide, torch.divide}
    divisor_first = {T.__rtruediv__: 0}
    clamps = {torch.clamp, T.clamp, torch.clip, T.clip, torch.clamp_, T.clamp_, T.clip_, *_CLAMP_MIN, *_CLAMP_MAX}
    return products, extremes, divisions, divisor_first, clamps


_CLAMP_MIN = {torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min_}
_CLAMP_MAX = {torch.clamp_max, torch.Tensor.clamp_max, torch.Tensor.clamp_max_}
_PRODUCTS, _EXTREMES, _DIVISIONS, _DIVISOR_FIRST, _CLAMPS = _tables()


def _is_relu_clamp(func: Any, args: tuple, kwargs: dict) -> bool:
    """``clamp(min=0)`` without a maximum: a ReLU."""
    if func in _CLAMP_MAX:
        return False
    lo = _arg(args, kwargs, 1, "min")
    hi = None if func in _CLAMP_MIN else _arg(args, kwargs, 2, "max")
    return hi is None and isinstance(lo, numbers.Real) and not isinstance(lo, bool) and lo == 0


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _depends(t: Any) -> bool:
    """Whether ``t`` is a tensor computed from the input (parameters are leaves: they do not count)."""
    return isinstance(t, torch.Tensor) and t.grad_fn is not None


def _tensors(args: tuple, kwargs: dict) -> Iterator[Any]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def _layer_fn(func: Any, args: tuple, kwargs: dict) -> Layer:
    rest = args[3:]
    kw = {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}
    return lambda x, w, b: func(x, w, b, *rest, **kw)


class _Refused(Exception):
    """An operation LRP has no rule for ran on input-dependent tensors (the message names it)."""


@dataclass
class _Layer:
    """A conv / linear call, remembered so that a BatchNorm right after it can be folded in."""

    out: torch.Tensor
    version: int
    f: Layer
    x: torch.Tensor
    x_version: int
    w: torch.Tensor
    b: torch.Tensor | None
    scale: _EpsilonScale | None
    first: str | None
    leaves: list[torch.Tensor]


class _LRPMode(TorchFunctionMode):
    """Applies the LRP rules to the calls of one forward pass (see the module docstring).

    With ``found`` (a dict), it only looks: each operation without a rule is recorded under the
    innermost module running (``stack``), nothing is changed and nothing raised.
    """

    #: conv / linear outputs kept for a following BatchNorm
    KEEP = 8

    def __init__(self, cfg: _Config, report: LRPReport, input_numel: int,
                 found: dict[str, list[str]] | None = None, stack: list[str] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.report = report
        self.input_numel = input_numel
        self.first_pending = cfg.first_rule is not None
        self.leaves: list[torch.Tensor] = []  # first-layer leaves: relevance = leaf * grad
        self.recent: OrderedDict[int, _Layer] = OrderedDict()
        self.found = found
        self.stack = stack

    # -- refusing
    def _refuse(self, what: str) -> None:
        if self.found is None:
            raise _Refused(what)
        where = self.stack[-1] if self.stack else ""
        names = self.found.setdefault(what, [])
        if where not in names:
            names.append(where)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        kind = _LAYERS.get(func)
        if kind is not None:
            return self._layer(func, kind, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(func, args, kwargs)
        name = _REFUSED.get(func)
        if name is not None:
            if any(_depends(t) for t in _tensors(args, kwargs)):
                self._refuse(name)
        elif func in _PRODUCTS or func in _EXTREMES:
            if sum(1 for t in _tensors(args, kwargs) if _depends(t)) >= 2:
                self._refuse("products of two input-dependent tensors (gates, attention)" if func in _PRODUCTS
                             else "element-wise max/min of two input-dependent tensors")
        elif func in _DIVISIONS or func in _DIVISOR_FIRST:
            divisor = _arg(args, kwargs, _DIVISOR_FIRST.get(func, 1), "other")
            if _depends(divisor):
                self._refuse("a division by an input-dependent tensor")
        elif func in _CLAMPS and _depends(_arg(args, kwargs, 0, "input")) and not _is_relu_clamp(func, args, kwargs):
            self._refuse("clamp (other than clamp(min=0), a ReLU)")
        return func(*args, **kwargs)

    # -- conv / linear
    def _layer(self, func: Any, kind: str, args: tuple, kwargs: dict) -> torch.Tensor:
        x = _arg(args, kwargs, 0, "input")
        if self.found is not None or not _depends(x):
            return func(*args, **kwargs)
        cfg = self.cfg
        w, b = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        f = _layer_fn(func, args, kwargs)
        self.report.layers[kind] += 1
        first = None
        if self.first_pending:
            self.first_pending = False
            self.report.first_found = True
            first = cfg.first_rule
            if x.numel() != self.input_numel:
                raise ValueError(
                    f"first_rule={first!r} applies to the first {kind} layer, which here takes a tensor of shape "
                    f"{tuple(x.shape)}, not the model's input (or a reshaped or rescaled copy of it): the model "
                    "transforms its input before that layer. Use first_rule=None."
                )
        scale = None
        leaves: list[torch.Tensor] = []
        if first is None and cfg.rule == "epsilon":
            out = func(*args, **kwargs)
            if cfg.epsilon > 0:
                scale = _EpsilonScale(out, cfg.epsilon)
        else:
            with torch.no_grad():
                z = func(*args, **kwargs)
            out, leaves = _ruled(cfg, f, x, w, b, z, first, self._bounds)
            self.leaves.extend(leaves)
        foldable = kind == "convolution" or (kind == "linear" and out.dim() == 2)
        if foldable and isinstance(w, torch.Tensor) and w.dim() >= 2 and w.shape[0] == out.shape[1]:
            self.recent[id(out)] = _Layer(out, out._version, f, x, x._version, w, b, scale, first, leaves)
            while len(self.recent) > self.KEEP:
                self.recent.popitem(last=False)
        return out

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """zbox bounds broadcastable to ``x`` (the first layer's input)."""
        if self.cfg.bounds is None:  # each image's own range, per channel
            dims = tuple(range(2, x.dim())) if x.dim() >= 3 else tuple(range(1, x.dim()))
            return x.detach().amin(dim=dims, keepdim=True), x.detach().amax(dim=dims, keepdim=True)
        out = []
        for v in self.cfg.bounds:
            t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
            if t.dim() == 1 and x.dim() >= 3 and t.numel() == x.shape[1] and t.numel() > 1:
                t = t.view(1, -1, *([1] * (x.dim() - 2)))
            try:
                torch.broadcast_shapes(t.shape, x.shape)
            except RuntimeError:
                raise ValueError(f"bounds must be numbers, C values or tensors broadcastable to the first layer's "
                                 f"input {tuple(x.shape)}; got a tensor of shape {tuple(t.shape)}") from None
            out.append(t)
        return out[0], out[1]

    # -- BatchNorm
    def _recall(self, x: torch.Tensor) -> _Layer | None:
        rec = self.recent.pop(id(x), None)
        if rec is None or rec.out is not x or x._version != rec.version or rec.x._version != rec.x_version:
            return None
        return rec

    def _batch_norm(self, func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        x = _arg(args, kwargs, 0, "input")
        if not _depends(x):
            return func(*args, **kwargs)
        mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
        if _arg(args, kwargs, 5, "training", False) or mean is None or var is None:
            self._refuse("BatchNorm with batch statistics (track_running_stats=False)")
            return func(*args, **kwargs)
        if self.found is not None:
            return func(*args, **kwargs)
        cfg = self.cfg
        rec = self._recall(x)
        if rec is None:  # on its own: an affine map per channel, epsilon rule
            self.report.affine += 1
            y = func(*args, **kwargs)
            if cfg.epsilon > 0:
                _EpsilonScale(y, cfg.epsilon)
            return y
        self.report.folded += 1
        if rec.first is None and cfg.rule == "epsilon":
            # folded epsilon rule: the BatchNorm's own gradient, the layer's scale taken at the BN output
            if rec.scale is not None:
                rec.scale.off()
            y = func(*args, **kwargs)
            if cfg.epsilon > 0:
                _EpsilonScale(y, cfg.epsilon)
            return y
        weight, bias = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        eps = _arg(args, kwargs, 7, "eps", 1e-5)
        a = torch.rsqrt(var.detach() + eps)
        if weight is not None:
            a = a * weight.detach()
        shift = -mean.detach() * a
        if bias is not None:
            shift = shift + bias.detach()
        w = rec.w.detach() * a.view(-1, *([1] * (rec.w.dim() - 1)))  # new tensors: the model's stay as they are
        b = shift if rec.b is None else rec.b.detach() * a + shift
        with torch.no_grad():
            y = func(*args, **kwargs)
        if rec.leaves:
            self.leaves = [t for t in self.leaves if all(t is not r for r in rec.leaves)]
        out, leaves = _ruled(cfg, rec.f, rec.x, w, b, y, rec.first, self._bounds)
        self.leaves.extend(leaves)
        return out


def _refusal(run: nn.Module, inp: torch.Tensor, cfg: _Config, input_numel: int) -> ValueError:
    """The ValueError for a model with operations LRP has no rule for, naming the modules that
    compute them (found in a second, looking-only pass with the module stack tracked)."""
    found: dict[str, list[str]] = {}
    stack: list[str] = []
    handles = []
    try:
        def enter(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _inp: Any) -> None:
                stack.append(name)
            return hook

        def leave(_m: nn.Module, _inp: Any, _out: Any) -> None:
            if stack:
                stack.pop()

        for name, m in run.named_modules():
            handles.append(m.register_forward_pre_hook(enter(name)))
            handles.append(m.register_forward_hook(leave))
        mode = _LRPMode(cfg, LRPReport(cfg.label()), input_numel, found=found, stack=stack)
        try:
            with torch.enable_grad(), mode:
                run(inp)
        except Exception:  # noqa: BLE001 - only what was found matters here
            pass
    finally:
        for h in handles:
            h.remove()

    def where(names: list[str]) -> str:
        shown = ", ".join("the model's own forward" if n == "" else repr(n) for n in names[:4])
        return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")

    parts = [f"{what} in {where(names)}" for what, names in found.items()]
    what = "; ".join(parts) if parts else "an operation without an LRP rule"
    return ValueError(
        f"{_SCOPE}; this model also computes operations with no LRP rule here: {what}. Explain it with a "
        "gradient method instead (e.g. integrated_gradients or smoothgrad)."
    )


# ---------------------------------------------------------------- the method
def lrp(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    rule: LrpRule = "epsilon",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    alpha: float = 1.0,
    beta: float = 0.0,
    first_rule: FirstRule | None = None,
    bounds: Bounds | None = None,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Layer-wise Relevance Propagation (Bach et al., 2015) of the target score, N x C x H x W.

    The score ``S_t(x)`` (a logit) is handed down layer by layer; every convolution and linear
    layer splits the relevance ``R_j`` of its outputs ``z_j = sum_i x_i w_ij + b_j`` among its
    inputs by ``rule`` (``a+ = max(a, 0)``, ``a- = min(a, 0)``, ``stab(d) = d + epsilon * sign(d)``):

    ``"epsilon"``
        ``R_i = sum_j x_i w_ij / stab(z_j) * R_j``. ``epsilon`` -> 0 with zero biases: the
        gradient times the input; a larger ``epsilon`` keeps only the stronger contributions.
    ``"gamma"``
        ``R_i = sum_j x_i (w_ij + gamma w_ij+) / stab(sum_i' x_i' (w_i'j + gamma w_i'j+) + b_j +
        gamma b_j+) * R_j`` for ``z_j > 0`` (the mirror image, with ``w-``, for ``z_j < 0``;
        for negative inputs as zennit's generalized gamma rule). Favours positive contributions.
    ``"alpha_beta"``
        ``R_i = sum_j (alpha (x_i w_ij)+ / stab(sum_i' (x_i' w_i'j)+ + b_j+) - beta (x_i w_ij)- /
        stab(sum_i' (x_i' w_i'j)- + b_j-)) * R_j``, with ``alpha - beta = 1``.
    ``"zplus"``
        ``alpha_beta`` with ``alpha = 1, beta = 0``: only positive contributions.

    The other layers (see :mod:`cnnwidgets.core.saliency.lrp` for the table): BatchNorm right
    after a conv/linear layer is folded into private copies of that layer's weight and bias
    (``w * g / sqrt(var + eps)``), the model's parameters untouched; a BatchNorm after anything
    else (DenseNet's, after a concatenation) is an affine map per channel under the epsilon rule;
    ReLU passes relevance on where the unit is on; max pooling gives it all to the winner;
    average and adaptive average pooling share it in proportion to the inputs; residual
    additions (``out += identity``) and concatenation (``torch.cat``) pass each summand its
    share; flatten, reshape and dropout leave it as it is.

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`: a network of the layers above (a ValueError names any
        other nonlinear module, e.g. GELU, SiLU, sigmoid gates, LayerNorm, attention).
    rule : {"epsilon", "gamma", "alpha_beta", "zplus"}
        The rule of every convolution (also transposed) and linear layer.
    epsilon : float
        The epsilon rule's ``epsilon`` (>= 0), and the stabilizer of the other rules'
        denominators (zennit's default 1e-6).
    gamma : float
        The gamma rule's weight on positive contributions (>= 0; 0 is the epsilon rule).
    alpha, beta : float
        The alpha-beta rule's weights (>= 0, ``alpha - beta = 1``), e.g. 2 and 1.
    first_rule : {"zbox", "flat"} or None
        Rule of the first conv/linear call of the forward pass (the input layer): ``"zbox"``
        (Montavon et al., 2017): ``R_i = sum_j (x_i w_ij - l_i w_ij+ - h_i w_ij-) / stab(z'_j) R_j``
        with ``z'_j`` the sum of the numerators, for inputs bounded by ``l <= x <= h``;
        ``"flat"`` (Lapuschkin et al., 2019): an output's relevance spread evenly over its
        receptive field. None: the input layer gets ``rule``.
    bounds : (low, high), optional
        The zbox rule's ``l`` and ``h``: the input domain, e.g. ``((0 - mean) / std, (1 - mean) /
        std)`` for normalized images, as numbers or per-channel tensors (C values) or tensors
        broadcastable to the input. None: each image's own per-channel minimum and maximum.
    output, region
        As in :func:`vanilla_gradient`.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached, on the model's device, in the model's dtype (float32 for a
        float16/bfloat16 model): the relevance of each input value for ``S_t(x[i])``. With the
        epsilon, alpha-beta or z+ rule, zero biases and a small ``epsilon``, ``rel[i].sum()``
        equals the score (conservation); biases (and a larger ``epsilon``) absorb a share of it,
        and residual additions and concatenations pass relevance on without loss, so conservation
        holds on ResNets and DenseNets too, up to those shares. :func:`explain` reports the ratio.

    Raises
    ------
    ValueError
        The input errors of :func:`vanilla_gradient`; an unknown ``rule`` or ``first_rule``;
        ``alpha - beta != 1``; a model with an operation LRP has no rule for (the message names
        the operation and the modules that compute it); a TorchScript model.

    Notes
    -----
    Computed in one forward and one backward pass of this thread's private view of the model
    (:func:`~cnnwidgets.core.runner.private_model`): the model itself is untouched (no hooks,
    modes, ``requires_grad`` flags or parameters change, BatchNorm statistics included), and
    hooks the user put on its modules do not fire. The epsilon rule costs little more than a
    gradient: its forward values are the model's own and its backward is the gradient scaled at
    each layer's output. Gamma, alpha-beta and z+ compute each conv/linear layer once to four
    times more with the modified weights (more for signed inputs and for beta > 0), and again
    with the folded weights where a BatchNorm follows.
    Layers written out by hand (``x @ w.T``) get the plain gradient, i.e. LRP-0.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2, bias=False))
    >>> x = torch.rand(2, 3, 8, 8)
    >>> rel = lrp(net, x, target=0)
    >>> rel.shape
    torch.Size([2, 3, 8, 8])
    >>> torch.allclose(rel.sum(dim=(1, 2, 3)), net(x)[:, 0], rtol=1e-3, atol=1e-5)  # no biases: conserved
    True
    >>> lrp(net, x, target=0, rule="alpha_beta", alpha=2, beta=1, first_rule="zbox").shape
    torch.Size([2, 3, 8, 8])
    """
    cfg = _config(rule, epsilon, gamma, alpha, beta, first_rule, bounds)
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        report = LRPReport(cfg.label(), cfg.first_rule)
        xg = xd.clone().requires_grad_(True)
        inp = xg.clone()  # a non-leaf copy: an in-place first layer is fine
        mode = _LRPMode(cfg, report, xd.numel())
        try:
            with forward_errors(xd, run):
                with mode:
                    out = run(inp)
        except _Refused:
            raise _refusal(run, xd.clone().requires_grad_(True).clone(), cfg, xd.numel()) from None
        if not report.layers and any(isinstance(m, torch.jit.ScriptModule) for m in run.modules()):
            raise ValueError("this model runs TorchScript, whose layers LRP cannot see (it applies its rules to the "
                             "calls of a Python forward pass); pass the original nn.Module")
        s = scores(out)
        _check_target_range(t, s.shape[1])
        picked = s.gather(1, t.view(-1, 1))[:, 0]
        acc = _accumulator(xd.dtype)
        rel = torch.zeros_like(xd, dtype=acc)
        if picked.requires_grad:
            inputs = [xg, *mode.leaves]
            grads = torch.autograd.grad(picked.sum(), inputs, allow_unused=True)
            for tensor, g in zip(inputs, grads):
                if g is not None:
                    rel += (tensor.detach() * g).to(acc).reshape(xd.shape)
        with torch.no_grad():
            sums, score = rel.flatten(1).sum(1), picked.detach().to(acc)
            report.conservation = torch.where(score != 0, sums / score, torch.full_like(score, math.nan)).cpu()
        _report("rule", report)
        return _finish(rel)

"""The attribution methods in one registry: name -> :class:`MethodSpec` (function, display
label, reference, the options it takes), and :func:`attribute`, the one entry point.

Views read the registry rather than keep lists of their own, e.g. the labels of a method menu:
``{name: spec.label for name, spec in REGISTRY.items()}``, or whether to show a layer menu:
``REGISTRY[method].takes_layer``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._common import Target
from .cam import (ablationcam, eigencam, gradcam, gradcam_plus_plus, guided_gradcam, hirescam, layercam, scorecam,
                  xgradcam)
from .gradient import grad_x_input, layer_gradient, vanilla_gradient
from .integrated_gradients import integrated_gradients
from .lrp import lrp
from .occlusion import occlusion
from .relu_methods import deconvnet, guided_backprop
from .smoothgrad import smoothgrad

Method = Literal[
    "vanilla",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "deconvnet",
    "gradcam",
    "guided_gradcam",
    "gradcam_plus_plus",
    "xgradcam",
    "hirescam",
    "layercam",
    "scorecam",
    "eigencam",
    "ablationcam",
    "occlusion",
    "lrp",
    "layer_gradient",
]


@dataclass(frozen=True)
class MethodSpec:
    """What the core and the views need to know about one attribution method.

    Attributes
    ----------
    function : callable
        ``function(model, x, target, **params)``; ``function(model, x, **params)`` when the
        method is not ``targeted``.
    label : str
        Display name, e.g. ``"Integrated Gradients"``.
    reference : str
        Where the method comes from, e.g. ``"Sundararajan et al. (2017)"``; ``""`` for none.
    targeted : bool
        Explains a class score and takes ``target``; False for ``"layer_gradient"``, which
        takes ``layer=`` (and ``channel=``) instead.
    takes_layer : bool
        Takes ``layer=``: optional for Grad-CAM (default :func:`~cnnwidgets.core.layers.cam_layer`), required by
        ``"layer_gradient"``.
    takes_steps : bool
        Takes ``steps=``, ``baseline=`` and ``integration=`` (Integrated Gradients).
    takes_samples : bool
        Takes ``samples=`` and ``noise=`` (SmoothGrad).
    takes_window : bool
        Takes ``window=`` and ``stride=`` (occlusion).
    takes_rule : bool
        Takes ``rule=`` (LRP: ``"epsilon"``, ``"gamma"``, ``"alpha_beta"``, ``"zplus"``).
    input_shaped : bool
        The result has the input's shape N x C x H x W; False: one map per image, N x H x W.

    Examples
    --------
    >>> REGISTRY["integrated_gradients"].label, REGISTRY["integrated_gradients"].takes_steps
    ('Integrated Gradients', True)
    """

    function: Callable[..., torch.Tensor]
    label: str
    reference: str = ""
    targeted: bool = True
    takes_layer: bool = False
    takes_steps: bool = False
    takes_samples: bool = False
    takes_window: bool = False
    takes_rule: bool = False
    input_shaped: bool = True


#: Every attribution method by name, in menu order: the one list of methods and their labels.
REGISTRY: dict[str, MethodSpec] = {
    "vanilla": MethodSpec(vanilla_gradient, "gradient (vanilla)", "Simonyan et al. (2014)"),
    "grad_x_input": MethodSpec(grad_x_input, "gradient \u00d7 input", "Shrikumar et al. (2016)"),
    "smoothgrad": MethodSpec(smoothgrad, "SmoothGrad", "Smilkov et al. (2017)", takes_samples=True),
    "integrated_gradients": MethodSpec(integrated_gradients, "Integrated Gradients", "Sundararajan et al. (2017)",
                                       takes_steps=True),
    "guided_backprop": MethodSpec(guided_backprop, "guided backprop", "Springenberg et al. (2015)"),
    "deconvnet": MethodSpec(deconvnet, "deconvnet", "Zeiler & Fergus (2014)"),
    "gradcam": MethodSpec(gradcam, "Grad-CAM", "Selvaraju et al. (2017)", takes_layer=True, input_shaped=False),
    "guided_gradcam": MethodSpec(guided_gradcam, "guided Grad-CAM", "Selvaraju et al. (2017)", takes_layer=True),
    "gradcam_plus_plus": MethodSpec(gradcam_plus_plus, "Grad-CAM++", "Chattopadhyay et al. (2018)", takes_layer=True,
                                    input_shaped=False),
    "xgradcam": MethodSpec(xgradcam, "XGrad-CAM", "Fu et al. (2020)", takes_layer=True, input_shaped=False),
    "hirescam": MethodSpec(hirescam, "HiResCAM", "Draelos & Carin (2020)", takes_layer=True, input_shaped=False),
    "layercam": MethodSpec(layercam, "Layer-CAM", "Jiang et al. (2021)", takes_layer=True, input_shaped=False),
    "scorecam": MethodSpec(scorecam, "Score-CAM", "Wang et al. (2020)", takes_layer=True, input_shaped=False),
    "eigencam": MethodSpec(eigencam, "Eigen-CAM", "Muhammad & Yeasin (2020)", takes_layer=True, input_shaped=False),
    "ablationcam": MethodSpec(ablationcam, "Ablation-CAM", "Desai & Ramaswamy (2020)", takes_layer=True,
                              input_shaped=False),
    "occlusion": MethodSpec(occlusion, "occlusion", "Zeiler & Fergus (2014)", takes_window=True),
    "lrp": MethodSpec(lrp, "LRP", "Bach et al. (2015)", takes_rule=True),
    "layer_gradient": MethodSpec(layer_gradient, "layer gradient", targeted=False, takes_layer=True),
}

#: Valid values of ``method`` for :func:`attribute` (the keys of :data:`REGISTRY`).
METHODS: tuple[str, ...] = tuple(REGISTRY)

#: Options any method may be given: each method uses those it takes and ignores the others,
#: so one loop over :data:`METHODS` can pass the same settings to all of them.
COMMON_PARAMS: tuple[str, ...] = (
    "layer", "channel", "steps", "baseline", "integration", "samples", "noise", "seed", "batch_size",
    "window", "stride", "rule", "output", "region",
)


def _takes(spec: MethodSpec) -> tuple[str, ...]:
    params = inspect.signature(spec.function).parameters
    return tuple(n for n in params if n not in ("model", "x", "target"))


def _method_params(method: str, spec: MethodSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` that ``method`` takes; common ones it does not take are dropped, others
    refused with a ValueError saying which method takes what."""
    takes = _takes(spec)
    unknown = [k for k in params if k not in takes and k not in COMMON_PARAMS]
    if unknown:
        who = "; ".join(f"{m}: {', '.join(_takes(sp)) or '-'}" for m, sp in REGISTRY.items())
        raise ValueError(
            f"{', '.join(repr(k) for k in unknown)} is not an option of any attribution method. "
            f"The options each method takes are {who} (common options a method does not take are ignored)."
        )
    if "layer" in params and params["layer"] is None and method == "layer_gradient":
        raise ValueError("method 'layer_gradient' needs layer= (the name of a layer)")
    return {k: v for k, v in params.items() if k in takes}


@dataclass(frozen=True)
class Explanation:
    """An attribution and what was learned computing it (:func:`explain`).

    Attributes
    ----------
    attribution : torch.Tensor
        As :func:`attribute` returns it.
    method : str
    targets : torch.Tensor or None
        The class explained per image (int64 (N,)), None for ``"layer_gradient"``.
    delta : torch.Tensor or None
        Integrated Gradients' convergence delta per image (N,), else None.
    rule : RuleReport, LRPReport or None
        Guided backprop, deconvnet and guided Grad-CAM: which activations got the rule; LRP:
        which layers got which rule, the BatchNorms folded, the conservation of relevance.
    layer : str or None
        The layer Grad-CAM used (its default when none was given).
    head : Head or None
        How the model's output was read as classes.
    notes : list of str
        Sentences for the user: a rule that changed nothing, a large delta, the head.
    """

    attribution: torch.Tensor
    method: str
    targets: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    rule: Any = None
    layer: str | None = None
    head: Any = None
    notes: tuple[str, ...] = ()


#: A convergence delta above this fraction of ``|S(x) - S(x')|`` gets a note (the completeness
#: the Integrated Gradients paper asks to check; more steps lower it).
DELTA_NOTE_FRACTION: float = 0.05


def explain(model: nn.Module, x: torch.Tensor, method: Method, target: Target = None, **params: Any) -> Explanation:
    """:func:`attribute`, with what the views show beside the map (:class:`Explanation`).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> e = explain(net, torch.rand(2, 3, 2, 2), "guided_backprop", target=0)
    >>> e.rule.total, e.notes[0]
    (0, 'guided backprop: no rectifying activation ran, so the guided rule changed nothing: this map is the plain gradient.')
    """
    from ._common import collecting

    spec = _spec(method)
    kwargs = _method_params(method, spec, params)
    with collecting() as found:
        if spec.targeted:
            attribution = spec.function(model, x, target, **kwargs)
        else:
            attribution = spec.function(model, x, **kwargs)
    scores = found.get("scores")
    head = None if scores is None else scores.head
    rule, delta = found.get("rule"), found.get("delta")
    notes = []
    if rule is not None:
        notes.append(f"{spec.label}: {rule.describe()}.")
    if delta is not None and spec.takes_steps:
        notes.append(f"convergence delta (sum of attributions minus the score difference): "
                     f"{', '.join(f'{d:.3g}' for d in delta.tolist()[:4])}{' ...' if len(delta) > 4 else ''}")
    if head is not None and head.note:
        notes.append(head.note)
    targets = None
    if spec.targeted:
        from ._common import _given_targets

        targets = None if target is None else _given_targets(target, x.shape[0])
    return Explanation(attribution, method, targets, delta, rule, found.get("layer"), head, tuple(notes))


def _spec(method: Any) -> MethodSpec:
    spec = REGISTRY.get(method) if isinstance(method, str) else None
    if spec is None:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    return spec


def attribute(model: nn.Module, x: torch.Tensor, method: Method, target: Target = None, **params: Any) -> torch.Tensor:
    """Attribution of ``method`` for ``x``: one entry point for all methods in :data:`METHODS`.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Float N x C x H x W on (or moved to) the model's device.
    method : str
        One of :data:`METHODS`.
    target : int, sequence of N ints, int tensor, or None
        Class per image (None: predicted class). Ignored by ``"layer_gradient"``, which takes
        ``layer=`` (and optionally ``channel=``) instead.
    **params
        Options of the method, e.g. ``samples``/``noise`` for :func:`smoothgrad`,
        ``steps``/``baseline``/``integration`` for :func:`integrated_gradients`, ``layer`` for
        :func:`gradcam`, ``output``/``region`` for all targeted methods. The options in
        :data:`COMMON_PARAMS` may be given to any method: one that does not take an option
        ignores it (``attribute(net, x, "vanilla", steps=8)`` is the plain gradient).

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached; N x H x W for the class activation maps (``"gradcam"`` and
        the methods with ``input_shaped=False``).

    Raises
    ------
    ValueError
        An unknown method (the message lists :data:`METHODS`), an option no method takes (the
        message says which method takes which), and the errors of the method.

    Notes
    -----
    The method is looked up in :data:`REGISTRY`, which also says which options it takes.
    :func:`explain` returns the same attribution with the convergence delta, the activation
    rule report and notes.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> attribute(net, torch.rand(2, 3, 2, 2), "smoothgrad", target=1, samples=4, seed=0).shape
    torch.Size([2, 3, 2, 2])
    >>> attribute(net, torch.rand(2, 3, 2, 2), "vanilla", steps=8, samples=4).shape
    torch.Size([2, 3, 2, 2])
    """
    spec = _spec(method)
    kwargs = _method_params(method, spec, params)
    if not spec.targeted:
        return spec.function(model, x, **kwargs)
    return spec.function(model, x, target, **kwargs)

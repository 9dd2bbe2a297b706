"""The attribution methods in one registry: name -> :class:`MethodSpec` (function, display
label, reference, the options it takes), and :func:`attribute`, the one entry point.

Views read the registry rather than keep lists of their own, e.g. the labels of a method menu:
``{name: spec.label for name, spec in REGISTRY.items()}``, or whether to show a layer menu:
``REGISTRY[method].takes_layer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._common import Target
from .cam import gradcam, guided_gradcam
from .gradient import grad_x_input, layer_gradient, vanilla_gradient
from .integrated_gradients import integrated_gradients
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
        Takes ``layer=``: optional for Grad-CAM (default the last ``nn.Conv2d``), required by
        ``"layer_gradient"``.
    takes_steps : bool
        Takes ``steps=`` and ``baseline=`` (Integrated Gradients).
    takes_samples : bool
        Takes ``samples=`` and ``noise=`` (SmoothGrad).
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
    "layer_gradient": MethodSpec(layer_gradient, "layer gradient", targeted=False, takes_layer=True),
}

#: Valid values of ``method`` for :func:`attribute` (the keys of :data:`REGISTRY`).
METHODS: tuple[str, ...] = tuple(REGISTRY)


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
        Passed to the method's function, e.g. ``samples``/``noise`` for :func:`smoothgrad`,
        ``steps``/``baseline`` for :func:`integrated_gradients`, ``layer`` for :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached; N x H x W for ``"gradcam"``.

    Raises
    ------
    ValueError
        An unknown method (the message lists :data:`METHODS`), and the errors of the method.

    Notes
    -----
    The method is looked up in :data:`REGISTRY`, which also says which options it takes.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> attribute(net, torch.rand(2, 3, 2, 2), "smoothgrad", target=1, samples=4, seed=0).shape
    torch.Size([2, 3, 2, 2])
    """
    spec = REGISTRY.get(method) if isinstance(method, str) else None
    if spec is None:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    if not spec.targeted:
        return spec.function(model, x, **params)
    return spec.function(model, x, target, **params)

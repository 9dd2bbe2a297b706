"""Layer discovery: which layers of a model a method or view picks by itself.

:func:`~cnnwidgets.core.model.named_layers` lists every layer,
:func:`~cnnwidgets.core.model.conv_layers` the 2-D convolutions and
:func:`~cnnwidgets.core.model.spatial_layers` the layers with a 4-D output for an input. The
helpers here answer the other questions the core asks: the leaves (modules without children),
the layers of given types, and the last ``nn.Conv2d`` (Grad-CAM's default layer). Plain torch;
no widget imports.

Examples
--------
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU()))
>>> list(leaf_layers(net)), last_conv_layer(net)
(['0', '1', '2.0', '2.1'], '2.0')
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .model import named_layers

__all__ = ["CONTAINERS", "last_conv_layer", "layers_of_type", "layers_with_output", "leaf_layers"]

#: Plain containers: their output is their last child's, so layer pickers leave them out.
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def leaf_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` without sub-modules, by qualified name, in registration order.

    Examples
    --------
    >>> list(leaf_layers(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))))
    ['0', '1.0']
    """
    return {n: m for n, m in named_layers(model).items() if not any(True for _ in m.children())}


def layers_of_type(model: nn.Module, kinds: type[nn.Module] | tuple[type[nn.Module], ...]) -> list[str]:
    """Qualified names of the layers that are instances of ``kinds``, in registration order.

    Examples
    --------
    >>> layers_of_type(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)), nn.Conv2d)
    ['0', '2']
    """
    return [n for n, m in named_layers(model).items() if isinstance(m, kinds)]


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in module registration order (Grad-CAM's default layer).

    Raises
    ------
    ValueError
        If the model has no ``nn.Conv2d``.

    Examples
    --------
    >>> last_conv_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))
    '2'
    """
    names = layers_of_type(model, nn.Conv2d)
    if not names:
        raise ValueError("the model has no nn.Conv2d layer; pass layer= (a layer with a 4-D output)")
    return names[-1]


def layers_with_output(model: nn.Module, acts: dict[str, Any], dims: tuple[int, ...] = (4,)) -> list[str]:
    """The layers among ``acts`` (outputs by layer name, as
    :func:`~cnnwidgets.core.model.capture_activations` returns them, in execution order) whose
    output has one of ``dims`` dimensions, plain containers (:data:`CONTAINERS`) left out.

    Examples
    --------
    >>> import torch
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    >>> layers_with_output(net, {"0": torch.zeros(1, 2, 4, 4), "1": torch.zeros(1, 32)})
    ['0']
    """
    modules = named_layers(model)
    return [k for k, v in acts.items()
            if getattr(v, "dim", None) is not None and v.dim() in dims and not isinstance(modules.get(k), CONTAINERS)]

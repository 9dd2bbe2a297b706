"""Methods that change the ReLU backward pass: guided backpropagation and deconvnet
(the rules themselves are :func:`cnnwidgets.core.relu_rules.relu_rule`)."""

from __future__ import annotations

import torch
from torch import nn

from ..relu_rules import relu_rule
from ._common import Target, _input_gradient, _prepared


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015), N x C x H x W.

    The vanilla gradient with every ``nn.ReLU`` back-propagating ``grad.clamp(min=0) * (x > 0)``
    (see :func:`~cnnwidgets.core.relu_rules.relu_rule`; functional ``F.relu`` calls keep their
    ordinary gradient). Parameters as in :func:`vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> guided_backprop(net, torch.rand(2, 3, 2, 2)).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (run, xd, t), relu_rule(run, "guided"):
        return _input_gradient(run, xd, t)


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Deconvnet attribution (Zeiler & Fergus, 2014), N x C x H x W.

    The vanilla gradient with every ``nn.ReLU`` back-propagating ``grad.clamp(min=0)``
    (see :func:`~cnnwidgets.core.relu_rules.relu_rule`). Parameters as in
    :func:`vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> deconvnet(net, torch.rand(2, 3, 2, 2), target=0).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (run, xd, t), relu_rule(run, "deconvnet"):
        return _input_gradient(run, xd, t)

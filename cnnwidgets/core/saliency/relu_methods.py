"""Methods that change the ReLU backward pass: guided backpropagation and deconvnet
(the rules themselves are :func:`cnnwidgets.core.relu_rules.relu_rule`)."""

from __future__ import annotations

import torch
from torch import nn

from typing import Any

from ..outputs import OutputSelector
from ..relu_rules import relu_rule
from ._common import Target, _finish, _input_gradient, _prepared, _report


def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, output: OutputSelector = None, region: Any = None
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015), N x C x H x W.

    The vanilla gradient with every rectifying activation, module or functional call,
    back-propagating ``grad.clamp(min=0) * f'(x)`` (``* (x > 0)`` for ReLU; see
    :func:`~cnnwidgets.core.relu_rules.relu_rule`). Parameters as in :func:`vanilla_gradient`.
    On a network with no rectifying activation the result is the plain gradient; the
    :class:`~cnnwidgets.core.relu_rules.RuleReport` of :func:`explain` says so.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> guided_backprop(net, torch.rand(2, 3, 2, 2)).shape
    torch.Size([2, 3, 2, 2])
    """
    return _ruled(model, x, target, "guided", output, region)


def deconvnet(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, output: OutputSelector = None, region: Any = None
) -> torch.Tensor:
    """Deconvnet attribution (Zeiler & Fergus, 2014), N x C x H x W.

    The vanilla gradient with every rectifying activation back-propagating
    ``grad.clamp(min=0)`` (see :func:`~cnnwidgets.core.relu_rules.relu_rule`). Parameters as
    in :func:`vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> deconvnet(net, torch.rand(2, 3, 2, 2), target=0).shape
    torch.Size([2, 3, 2, 2])
    """
    return _ruled(model, x, target, "deconvnet", output, region)


def _ruled(model: nn.Module, x: torch.Tensor, target: Target, rule: str, output: OutputSelector,
           region: Any) -> torch.Tensor:
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        with relu_rule(run, rule) as report:  # type: ignore[arg-type]
            grad = _input_gradient(run, scores, xd, t)
        _report("rule", report)
        return _finish(grad)

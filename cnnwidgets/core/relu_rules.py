"""Modified ReLU backward passes for deconvnet and guided backpropagation.

:func:`relu_rule` temporarily swaps the ``forward`` of every ``nn.ReLU`` in a model for a
custom :class:`torch.autograd.Function` whose forward is the usual ``max(x, 0)`` and whose
backward follows one of the rules below. Plain torch; no widget imports.

==============  ==============================================  ==========================
rule            backward of ``y = relu(x)``                     reference
==============  ==============================================  ==========================
(plain grad)    ``grad_out * (x > 0)``                          --
``deconvnet``   ``grad_out.clamp(min=0)``                       Zeiler & Fergus (2014)
``guided``      ``grad_out.clamp(min=0) * (x > 0)``             Springenberg et al. (2015)
==============  ==============================================  ==========================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import nn

from .model import check_model, replaced_forward

__all__ = ["RELU_RULES", "ReluRule", "relu_rule"]

ReluRule = Literal["deconvnet", "guided"]
#: Valid values of ``rule`` for :func:`relu_rule`.
RELU_RULES: tuple[str, ...] = ("deconvnet", "guided")


class _DeconvnetReLU(torch.autograd.Function):
    """``max(x, 0)`` forward; backward passes the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)  # a new tensor: never in place

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    """``max(x, 0)`` forward; backward keeps positive gradient where the input was positive."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        # Save a mask of our own rather than x or the output: later in-place operations on
        # either (``out += identity``, ``y.mul_(2)``) cannot then corrupt the backward pass.
        mask = x > 0
        ctx.save_for_backward(mask)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return grad_out.clamp(min=0) * mask


_FUNCTIONS: dict[str, type[torch.autograd.Function]] = {
    "deconvnet": _DeconvnetReLU,
    "guided": _GuidedReLU,
}


def _make_forward(fn: type[torch.autograd.Function]) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.ReLU's argument name
        return fn.apply(input)

    return forward


@contextlib.contextmanager
def relu_rule(model: nn.Module, rule: ReluRule) -> Iterator[nn.Module]:
    """Context manager: every ``nn.ReLU`` of ``model`` back-propagates by ``rule``.

    For the duration of the block, and on the calling thread only (other threads see the usual
    ReLU), each module of ``model`` (the root included) that is an instance of ``nn.ReLU`` or a
    subclass gets a ``forward`` (:func:`~cnnwidgets.core.model.replaced_forward`) computing
    ``x.clamp(min=0)`` through a custom autograd function. The forward values are those of
    ReLU, but the result is always a new tensor, also for ``ReLU(inplace=True)``: the input is
    never overwritten. A module called several times in one forward pass records one
    autograd node per call, so reused modules back-propagate correctly. On exit, also after
    an exception, the attribute is removed (or a ``forward`` attribute that was there before
    is put back).

    Parameters
    ----------
    model : nn.Module
    rule : {"deconvnet", "guided"}
        ``"deconvnet"``: backward is ``grad_out.clamp(min=0)``, ignoring where the forward
        input was positive (Zeiler & Fergus). ``"guided"``: ``grad_out.clamp(min=0) * (x > 0)``
        (guided backpropagation, Springenberg et al.).

    Yields
    ------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If ``rule`` is not one of the names above (raised on entering the block).

    Notes
    -----
    Only ``nn.ReLU`` modules are changed: ``torch.relu`` / ``F.relu`` calls inside a
    ``forward`` and other activation modules (``nn.ReLU6``, ``nn.LeakyReLU``, ...) keep their
    ordinary gradient. Code that relies on an in-place ReLU's side effect (calling
    ``self.relu(x)`` and then using ``x``) sees the un-rectified ``x`` inside the block.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))
    >>> x = torch.randn(1, 2, requires_grad=True)
    >>> with relu_rule(net, "guided"):
    ...     net(x).sum().backward()
    >>> "forward" in vars(net[1])
    False
    """
    check_model(model)
    if rule not in _FUNCTIONS:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in RELU_RULES)}; got {rule!r}")
    forward = _make_forward(_FUNCTIONS[rule])
    with contextlib.ExitStack() as stack:
        for m in model.modules():  # each module once, also if registered under several names
            if isinstance(m, nn.ReLU):
                stack.enter_context(replaced_forward(m, forward))
        yield model

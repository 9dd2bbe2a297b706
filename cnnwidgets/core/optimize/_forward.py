"""The forward machinery of :mod:`cnnwidgets.core.optimize`: the model run on display-space images.

:class:`_Runner` normalizes the images, hooks the objective's layers and hands their
outputs to the objective, with its speed-ups: the pass stops after the last needed layer, a
target ``nn.Conv2d`` computes only the channels the objective reads
(:func:`_pruned_conv_forward`), and large images go through the model channels-last on the CPU
(:data:`CHANNELS_LAST_MIN_PIXELS`). :func:`_prepared` sets it up around a run.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..inputs import normalize, stats_tensor
from ..model import check_model, get_layer, has_own_forward, model_device, model_dtype, replaced_forward
from ..outputs import OutputSelector
from ..runner import LayerTap, Scores, logits_only, origin_of, require_tensor, using_model
from .objectives import Objective


# ---------------------------------------------------------------- forward machinery
def _pruned_conv_forward(module: nn.Conv2d, channels: frozenset[int]) -> Callable[..., torch.Tensor] | None:
    """A ``forward`` for ``module`` that computes only ``channels`` (the rest stay 0).

    Used when the forward pass ends at this convolution and the objective reads only a few of
    its output channels: the kept filters are convolved, then placed into a zero tensor of the
    full B x K x h x w shape, so objectives index it as usual and their gradients are those of
    the full layer. Installed with :func:`~cnnwidgets.core.model.replaced_forward`, so other
    threads get the normal forward. None when the layer does not allow it or it is not worth it
    (grouped convolution, a subclass, more than half the channels, a channel out of range --
    the objective then reports that itself).
    """
    k = int(module.weight.shape[0])  # what the layer computes, whatever out_channels says
    if (
        type(module) is not nn.Conv2d
        or module.groups != 1
        or not hasattr(module, "_conv_forward")
        or not channels
        or len(channels) * 2 > k
        or min(channels) < 0
        or max(channels) >= k
        or module.weight.requires_grad
    ):
        return None
    sel = torch.tensor(sorted(channels), dtype=torch.long, device=module.weight.device)
    weight = module.weight.detach().index_select(0, sel).contiguous()
    bias = None if module.bias is None else module.bias.detach().index_select(0, sel)
    ordered = sorted(channels)
    lo_hi = (ordered[0], ordered[-1]) if ordered[-1] - ordered[0] + 1 == len(ordered) else None

    def forward(input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        part = module._conv_forward(input, weight, bias)
        if lo_hi is not None:  # one channel, or a run of neighbours: zero padding on both sides
            return F.pad(part, (0, 0, 0, 0, lo_hi[0], k - 1 - lo_hi[1]))
        out = part.new_zeros(part.shape[0], k, *part.shape[2:])
        return out.index_copy(1, sel, part)

    return forward


#: On the CPU, images of at least this many pixels (H * W) go through the model in the
#: channels-last memory layout: on this project's 2-core machine 1.33x faster for a batch of 8
#: 3 x 128 x 128 images through VGG16's first seven convolutions (tests/bench/run.py, row
#: "channels-last vs NCHW layout"); for 28 x 28 inputs it was slightly slower, hence the threshold.
CHANNELS_LAST_MIN_PIXELS = 64 * 64

#: Models that raised a layout error on channels-last input (e.g. a ``.view`` of a
#: convolution's output): later runs go straight to NCHW.
_NEEDS_NCHW: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class _Runner:
    """Runs the model on display-space images and hands the objective what it needs.

    A :class:`~cnnwidgets.core.runner.LayerTap` on the objective's layers (registered once,
    removed by :meth:`close`) keeps each layer's first output; without logits the pass stops
    right after the last needed layer. When that layer is a plain
    ``nn.Conv2d`` (the only layer the objective reads) and the objective names its channels,
    only those channels are computed (:func:`_pruned_conv_forward`). Large images use the
    channels-last layout on the CPU (:data:`CHANNELS_LAST_MIN_PIXELS`), unless the model
    rejects it (e.g. a ``.view`` of a convolution's output): then it is NCHW from there on.
    """

    def __init__(self, model: nn.Module, objective: Objective, c: int, mean: Any, std: Any,
                 output: OutputSelector = None) -> None:
        self.model = model
        self.objective = objective
        self.scores = Scores(model, output)
        device = model_device(model)
        self.device = device
        self.dtype = model_dtype(model)
        self.mean = stats_tensor(mean, c, "mean", device)
        self.std = stats_tensor(std, c, "std", device)
        self.channels_last = device.type == "cpu" and origin_of(model) not in _NEEDS_NCHW
        self.layers = sorted(objective.layers)
        # the pass stops after the last needed layer unless the objective reads the logits
        self.tap = LayerTap(model, self.layers, need_output=objective.needs_logits, check=require_tensor)
        layers = self.layers
        self._patched: contextlib.AbstractContextManager | None = None
        if len(layers) == 1 and not objective.needs_logits and objective.channels is not None:
            module = get_layer(model, layers[0])
            forward = (_pruned_conv_forward(module, objective.channels.get(layers[0], frozenset()))
                       if isinstance(module, nn.Conv2d) and not has_own_forward(module) else None)
            if forward is not None:
                self._patched = replaced_forward(module, forward)
                self._patched.__enter__()

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        return normalize(img, self.mean, self.std)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Objective values (B,) for display-space images (B x C x H x W)."""
        x = self.normalize(img).to(self.dtype)
        if self.channels_last and x.dim() == 4 and x.shape[2] * x.shape[3] >= CHANNELS_LAST_MIN_PIXELS:
            try:
                return self._values(img, x.contiguous(memory_format=torch.channels_last))
            except RuntimeError as exc:
                text = str(exc).lower()
                if "stride" not in text and "contiguous" not in text:
                    raise  # not about the memory layout: a real error, raised once
                self.channels_last = False  # e.g. a .view of a conv output: NCHW from now on
                _NEEDS_NCHW.add(origin_of(self.model))
        return self._values(img, x)

    def _values(self, img: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x is img:
            x = img.clone()  # a model that changes its input in place must not change ours
        out, acts = self.tap.run(x)
        logits = self.scores(out) if self.objective.needs_logits else None  # N x K class scores
        value = self.objective(acts, logits)
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value

    def close(self) -> None:
        self.tap.close()
        if self._patched is not None:
            self._patched.__exit__(None, None, None)
            self._patched = None


@contextlib.contextmanager
def _prepared(
    model: nn.Module, objective: Objective, c: int, mean: Any, std: Any, warn: bool = True,
    output: OutputSelector = None,
) -> Iterator[_Runner]:
    """This thread's private view of the model, the softmax bypass (for logits) and the hooks."""
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be an Objective, got {type(objective).__name__}. "
            "Hint: build one with channel(), neuron() or class_logit()."
        )
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(using_model(model))
        if objective.needs_logits:
            stack.enter_context(logits_only(run, "class_logit" if warn else None))
        runner = _Runner(run, objective, c, mean, std, output)
        stack.callback(runner.close)
        yield runner

"""Optimal input patterns (OIP): images that a chosen channel, neuron or class responds to.

Starting from noise (or any image), gradient ascent changes the input so that an
:class:`Objective` -- the mean activation of a feature map, one neuron, a class logit, or a
weighted sum of those -- grows. This is "activation maximization" / "feature visualization"
(Erhan et al. 2009; Simonyan et al. 2014; Olah et al. 2017). Plain torch; no widget imports.

The pieces are small and composable, in the style of lucent, one module each (every name
below is importable from this package):

==================  ==============  ===================================================
piece               module          what it is
==================  ==============  ===================================================
objective           ``objectives``  :class:`Objective` ``obj(acts, logits) -> (B,)``;
                                    ``+ - *`` combine them: :func:`channel`,
                                    :func:`neuron`, :func:`class_logit`,
                                    :func:`diversity` (a batch's images differ)
parameterization    ``param``       :func:`pixel_param`, :func:`fourier_param`:
                                    ``(params, image_fn)``
starting image      ``param``       :func:`gray_noise`, :func:`multiscale`, or a tensor
                                    (dataset image)
transform           ``transforms``  :func:`jitter`, :func:`scale`, :func:`rotate`,
                                    :func:`compose`: ``fn(img) -> img``, random each
                                    step (robustness)
penalty             ``penalties``   :func:`l2`, :func:`lp`, :func:`total_variation`:
                                    ``img -> (B,)``, subtracted from the objective
image operation     ``image_ops``   :func:`blur_every`, :func:`clip_weak_pixels`:
                                    applied to the pixels between steps (pixel
                                    parameterization only)
the loop            ``render``      :func:`optimize`, :class:`OIPResult`,
                                    :func:`log_steps`
checks              ``scan``        :func:`precursor_scan` (a starting image the target
                                    responds to), :func:`class_probabilities`
==================  ==============  ===================================================

``_forward`` runs the model for all of them: hooks, the early stop, the pruned target
convolution and the channels-last layout (its threshold :data:`CHANNELS_LAST_MIN_PIXELS` is
read in ``_forward``: change it there). The generic blur, :func:`gaussian_blur`, lives in
:mod:`cnnwidgets.core.imageops`.

Conventions
-----------
* Images live in display space: float B x C x H x W in [0, 1]; 0.5 is neutral gray. The model
  receives ``(img - mean) / std`` when ``mean``/``std`` are given, else ``img`` as it is.
* Objectives are maximized. A negated objective (``-obj``) is minimized.
* Penalties and the "weak pixel" clipping measure an image by its deviation from gray,
  ``img - 0.5``: a uniformly gray image has zero L2/Lp norm and no strong pixels.

Examples
--------
>>> from cnnwidgets.demo import mnist
>>> demo = mnist("val")
>>> res = optimize(demo.model, channel("features.6", 120), (1, 28, 28), steps=20,
...                mean=demo.mean, std=demo.std)
>>> res.images.shape, len(res.history)
(torch.Size([1, 1, 28, 28]), 20)
"""

from __future__ import annotations

from ..imageops import gaussian_blur
from ._common import INITS, PARAMS, STEP_RULES, InitName, ParamName, StepRule
from ._common import GRAY, Index, Shape  # noqa: F401  (public names outside __all__, as before)
from ._forward import CHANNELS_LAST_MIN_PIXELS  # noqa: F401  (read there: set it on ._forward)
from .image_ops import ImageOp, blur_every, clip_weak_pixels
from .objectives import Objective, channel, class_logit, diversity, neuron
from .objectives import ObjectiveFn  # noqa: F401
from .param import fourier_param, gray_noise, multiscale, pixel_param
from .param import ImageFn  # noqa: F401
from .penalties import Penalty, l2, lp, total_variation
from .render import OIPResult, log_steps, optimize
from .scan import DeadTargetError, class_probabilities, precursor_scan
from .transforms import Transform, compose, jitter, rotate, scale

__all__ = [
    "INITS",
    "PARAMS",
    "STEP_RULES",
    "DeadTargetError",
    "ImageOp",
    "InitName",
    "OIPResult",
    "Objective",
    "ParamName",
    "Penalty",
    "StepRule",
    "Transform",
    "blur_every",
    "channel",
    "class_logit",
    "class_probabilities",
    "clip_weak_pixels",
    "compose",
    "diversity",
    "fourier_param",
    "gaussian_blur",
    "gray_noise",
    "jitter",
    "l2",
    "log_steps",
    "lp",
    "multiscale",
    "neuron",
    "optimize",
    "pixel_param",
    "precursor_scan",
    "rotate",
    "scale",
    "total_variation",
]

"""Gradient attribution: which input pixels drive a class score.

Every method returns an attribution with the shape of the input (N x C x H x W), except
the class activation maps (Grad-CAM and its family), which return one map per image (N x H x W). Plain torch; no widget imports, so
this works from a script as well as behind the SaliencyView widget.

=========================  ===================================================  ==========================
method                     attribution for class score ``S_t(x)`` (a logit)     reference
=========================  ===================================================  ==========================
``vanilla``                ``dS_t/dx``                                          Simonyan et al. (2014)
``grad_x_input``           ``x * dS_t/dx``                                      Shrikumar et al. (2016)
``smoothgrad``             mean of ``dS_t/dx`` at ``x + noise``                 Smilkov et al. (2017)
``integrated_gradients``   ``(x - x') * mean of dS_t/dx`` on the path x' -> x   Sundararajan et al. (2017)
``guided_backprop``        ``dS_t/dx`` with the guided ReLU backward            Springenberg et al. (2015)
``deconvnet``              ``dS_t/dx`` with the deconvnet ReLU backward         Zeiler & Fergus (2014)
``gradcam``                ``relu(sum_k mean(dS_t/dA_k) A_k)``, upsampled       Selvaraju et al. (2017)
``guided_gradcam``         guided backprop * upsampled Grad-CAM                 Selvaraju et al. (2017)
``gradcam_plus_plus``      ``relu(sum_k sum_ij alpha relu(dS/dA) A_k)``         Chattopadhyay et al. (2018)
``xgradcam``               weights ``sum_ij A_k / sum A_k * dS/dA_k``           Fu et al. (2020)
``hirescam``               ``relu(sum_k dS/dA_k * A_k)`` (no averaging)         Draelos & Carin (2020)
``layercam``               ``relu(sum_k relu(dS/dA_k) * A_k)``                  Jiang et al. (2021)
``scorecam``               weights: softmax of the scores of the image masked   Wang et al. (2020)
                           by each upsampled, normalized map (no gradients)
``eigencam``               ``A`` on its first principal component (no class)    Muhammad & Yeasin (2020)
``ablationcam``            weights ``(S_t - S_t with A_k zeroed) / S_t``        Desai & Ramaswamy (2020)
``occlusion``              mean drop of ``S_t`` when a window covering a pixel  Zeiler & Fergus (2014)
                           is set to the baseline (no gradients)
``lrp``                    relevance of ``S_t`` passed down by LRP rules        Bach et al. (2015)
``layer_gradient``         ``d(sum of a layer's activations)/dx``               --
=========================  ===================================================  ==========================

Scores are logits: when the model ends in ``nn.Softmax`` / ``nn.LogSoftmax`` / ``nn.Sigmoid``
that module is bypassed during the call (with a ``UserWarning``), since gradients of
probabilities mix in every other class and saturate. Structured outputs (tuples, dicts),
single-logit binary heads and segmentation scores are read as in :mod:`cnnwidgets.core.outputs`
(``output=``, ``region=``).

One module per method family, all names importable from this package: ``gradient``
(vanilla, grad x input, layer gradient), ``smoothgrad``, ``integrated_gradients``,
``relu_methods`` (guided backprop, deconvnet), ``cam`` (the class activation maps), ``occlusion``,
``lrp`` and
``heatmap`` (:func:`to_heatmap`); ``_common`` holds the checks, the softmax bypass and the
gradient kernels they share. ``registry`` has :data:`REGISTRY`, one :class:`MethodSpec` per
method (function, display label, the options it takes), and :func:`attribute`.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
...                     nn.Flatten(), nn.Linear(4, 2))
>>> x = torch.rand(2, 3, 8, 8)
>>> attribute(net, x, "integrated_gradients", target=1, steps=20).shape
torch.Size([2, 3, 8, 8])
>>> attribute(net, x, "gradcam").shape
torch.Size([2, 8, 8])
"""

from __future__ import annotations

from ..model import final_softmax  # noqa: F401  (public here as before)
from ._common import Target
from ._common import BATCH_VALUES, logits_only, softmax_notice_off  # noqa: F401  (public, outside __all__)
from .cam import (ablationcam, eigencam, gradcam, gradcam_plus_plus, guided_gradcam, hirescam, layercam, scorecam,
                  xgradcam)
from .gradient import grad_x_input, layer_gradient, vanilla_gradient
from .heatmap import HEATMAP_MODES, HeatmapMode, to_heatmap
from .integrated_gradients import BASELINES, INTEGRATIONS, Baseline, Integration, integrated_gradients, path_points
from .integrated_gradients import BLUR_SIGMA_FRACTION  # noqa: F401
from .registry import COMMON_PARAMS, METHODS, REGISTRY, Explanation, Method, MethodSpec, attribute, explain
from .lrp import LRP_RULES, lrp
from .occlusion import occlusion
from .relu_methods import deconvnet, guided_backprop
from .smoothgrad import smoothgrad

__all__ = [
    "LRP_RULES",
    "ablationcam",
    "eigencam",
    "gradcam_plus_plus",
    "hirescam",
    "layercam",
    "lrp",
    "scorecam",
    "xgradcam",
    "BASELINES",
    "COMMON_PARAMS",
    "HEATMAP_MODES",
    "INTEGRATIONS",
    "METHODS",
    "REGISTRY",
    "Baseline",
    "Explanation",
    "HeatmapMode",
    "Integration",
    "Method",
    "MethodSpec",
    "Target",
    "attribute",
    "deconvnet",
    "explain",
    "grad_x_input",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
    "integrated_gradients",
    "layer_gradient",
    "occlusion",
    "path_points",
    "smoothgrad",
    "to_heatmap",
    "vanilla_gradient",
]


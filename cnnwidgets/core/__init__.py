"""Compute core of cnnwidgets: torch and numpy only, usable from a plain script."""

from __future__ import annotations

from .activations import map_stats, maps_codes, order_channels, top_channels, top_images
from .colormaps import lut
from .deconv import reconstruct
from .embedding import (
    default_feature_layer,
    embed,
    extract_features,
    mosaic,
    neighbors,
    pca_2d,
    pixel_neighbors,
    tsne,
)
from .images import ImageSet
from .relu_rules import relu_rule
from .saliency import (
    METHODS,
    attribute,
    deconvnet,
    grad_x_input,
    gradcam,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    layer_gradient,
    smoothgrad,
    to_heatmap,
    vanilla_gradient,
)
from .filters import FilterTiles, conv_weight, first_conv_layer, grid_shape, kernel_tiles, render_grid
from .inputs import as_batch, to_display
from .model import (
    capture_activations,
    check_model,
    conv_layers,
    get_layer,
    model_device,
    named_layers,
    preserved_state,
    spatial_layers,
)

__all__ = [
    "METHODS",
    "FilterTiles",
    "ImageSet",
    "attribute",
    "deconvnet",
    "default_feature_layer",
    "embed",
    "extract_features",
    "grad_x_input",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
    "integrated_gradients",
    "layer_gradient",
    "mosaic",
    "neighbors",
    "pca_2d",
    "pixel_neighbors",
    "smoothgrad",
    "to_heatmap",
    "tsne",
    "vanilla_gradient",
    "as_batch",
    "capture_activations",
    "check_model",
    "conv_layers",
    "conv_weight",
    "first_conv_layer",
    "get_layer",
    "grid_shape",
    "kernel_tiles",
    "lut",
    "map_stats",
    "maps_codes",
    "order_channels",
    "reconstruct",
    "relu_rule",
    "top_channels",
    "top_images",
    "model_device",
    "named_layers",
    "preserved_state",
    "render_grid",
    "spatial_layers",
    "to_display",
]

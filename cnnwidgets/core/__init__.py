"""Compute core of cnnwidgets: torch and numpy only, usable from a plain script."""

from __future__ import annotations

from .activations import map_stats, maps_codes, order_channels, top_channels, top_images
from .colormaps import lut
from .deconv import reconstruct
from .relu_rules import relu_rule
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
    "FilterTiles",
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

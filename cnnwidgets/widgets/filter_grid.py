"""FilterGrid: a convolution layer's weights as a grid of image tiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets as t
from torch import nn

from ..core.colormaps import is_diverging
from ..core.colormaps import lut as make_lut
from ..core.filters import FilterTiles, conv_weight, first_conv_layer, grid_shape, kernel_tiles, render_grid
from ..core.model import CONV_TYPES, check_model, conv_layers, get_layer
from ._base import BaseWidget, Int, bounded_int, checked, int_in, one_of
from .selection import SelectionMixin

__all__ = ["FilterGrid"]


def _conv_label(module: nn.Module, tiles: FilterTiles) -> str:
    """What a convolution maps: ``"Conv2d 16→32"``, with its grouping when it has one
    (``"Conv2d 16→32, groups 4"``, ``"Conv2d 32→32, depthwise"``).

    The channel counts are the layer's own (``in_channels``, ``out_channels``), not those of
    one filter: a grouped filter reads ``in_channels / groups`` channels, which the tiles show.

    Examples
    --------
    >>> w = nn.Conv2d(16, 32, 3, groups=4)
    >>> _conv_label(w, kernel_tiles(conv_weight(nn.Sequential(w), "0")))
    'Conv2d 16→32, groups 4'
    >>> w = nn.Conv2d(8, 8, 3, groups=8)
    >>> _conv_label(w, kernel_tiles(conv_weight(nn.Sequential(w), "0")))
    'Conv2d 8→8, depthwise'
    """
    c_in = int(getattr(module, "in_channels", tiles.in_channels))
    c_out = int(getattr(module, "out_channels", tiles.out_channels))
    groups = int(getattr(module, "groups", 1) or 1)
    text = f"{type(module).__name__} {c_in}→{c_out}"
    if groups > 1:
        text += ", depthwise" if groups == c_in else f", groups {groups}"
    return text


class FilterGrid(SelectionMixin, BaseWidget):
    """The weights of a convolution layer as a grid of image tiles, in the notebook.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch model with at least one ``nn.Conv2d`` (or ``nn.ConvTranspose2d``).
    layer : str, optional
        Qualified name of the conv layer (``"features.0"``); the first conv layer when None.
    selection : cnnwidgets.Selection, optional
        Shared state with other views: the clicked filter becomes ``selection.channel`` and
        the layer follows ``selection.layer`` whenever that is a conv layer.
    mode : {"kernel", "rgb"}
        One gray tile per (filter, input channel) kernel (``out x in`` tiles), or one colour
        tile per filter for layers that read 3 channels. Default: ``"rgb"`` for such layers.
    normalize : {"global", "filter", "tile"}
        Colour range over the whole layer, per filter, or per tile.
    cmap : str
        ``"gray"``, ``"diverging"`` (zero at the neutral colour) or a matplotlib colormap name.
    zoom : int
        Screen pixels per weight (1..32).
    columns : int
        Tiles per row; 0 picks one filter per row when the layer reads 8 or more channels,
        else a near-square grid.

    Attributes
    ----------
    channel : int
        The selected output channel (filter), -1 for none; set by clicking a tile.
    n_tiles : int
        Number of tiles in the grid.

    Examples
    --------
    >>> from cnnwidgets import FilterGrid, demo
    >>> d = demo.mnist()
    >>> grid = FilterGrid(d.model, "features.3")   # 64 x 32 = 2,048 kernels
    >>> grid.n_tiles
    2048
    """

    _bundle = "filter_grid"
    _runs_model = False  # it only reads the weights
    _shared = ("layer", "channel")
    #: The toolbar's controls and a click on a tile (js/src/widgets/filter_grid.js).
    _page_writable = frozenset({"layer", "mode", "normalize", "cmap", "zoom", "channel"})
    #: Largest zoom (screen pixels per weight) and grid height the page draws.
    MAX_ZOOM = 32
    MAX_HEIGHT = 4096
    MAX_COLUMNS = 4096

    # --- what the user chooses
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    mode = t.Unicode("kernel").tag(sync=True)  # "kernel" | "rgb"
    normalize = t.Unicode("global").tag(sync=True)  # "global" | "filter" | "tile"
    cmap = t.Unicode("gray").tag(sync=True)
    zoom = Int(4).tag(sync=True)
    columns = Int(0).tag(sync=True)
    padding = Int(1).tag(sync=True)
    height = Int(480).tag(sync=True)

    # --- what the page produces
    channel = Int(-1).tag(sync=True)

    # --- data sent to the page (binary)
    _codes = t.Bytes(b"").tag(sync=True)
    _stats = t.Bytes(b"").tag(sync=True)
    _lut = t.Bytes(b"").tag(sync=True)
    _grid = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        selection: Any = None,
        mode: str | None = None,
        normalize: str = "global",
        cmap: str = "gray",
        zoom: int = 4,
        columns: int = 0,
        height: int = 480,
    ) -> None:
        self._model = check_model(model)
        names = conv_layers(model)
        if not names:
            first_conv_layer(model)  # raises the ValueError naming the module types found
        explicit = ("layer",) if layer is not None else ()
        if layer is None:
            layer = names[0]
        get_layer(model, layer, kinds=CONV_TYPES)
        make_lut(cmap)  # validate early
        self._tiles: FilterTiles | None = None
        self._auto_mode = mode is None
        super().__init__()
        try:  # a rejected setting closes the widget (its comm) again
            self.set_trait("layers", names)
            with self.hold_trait_notifications():
                self.normalize = normalize
                self.cmap = cmap
                self.zoom = zoom
                self.columns = columns
                self.height = height
                self.layer = layer
                self.mode = mode if mode is not None else self._default_mode(layer)
            self._compute()
            self._join(selection, explicit=explicit)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def tiles(self) -> FilterTiles:
        """The quantized tiles currently shown (see :class:`cnnwidgets.core.FilterTiles`)."""
        assert self._tiles is not None
        return self._tiles

    @property
    def n_tiles(self) -> int:
        """How many tiles the grid holds (``out x in`` in kernel mode, ``out`` in RGB mode)."""
        return self.tiles.n_tiles

    #: Let go by close(): the model and the tiles of its weights.
    _released = ("_model", "_tiles")

    def close(self) -> None:
        """Leave the Selection and close the widget; the model is let go, so the view cannot
        be used after this."""
        self._closed = True
        self._leave()
        super().close()

    def refresh(self) -> None:
        """Re-read the layer's weights (e.g. after a training epoch) and redraw."""
        names = conv_layers(self._model)
        if names != list(self.layers):
            self.set_trait("layers", names)
        self._compute()

    def to_image(self, zoom: int | None = None) -> np.ndarray:
        """The grid as the page draws it (at ``zoom``, default the widget's), uint8 (H, W, 3)."""
        return render_grid(
            self.tiles.codes,
            self._current_lut(),
            columns=self._grid["columns"],
            zoom=self.zoom if zoom is None else bounded_int(zoom, "zoom", 1, self.MAX_ZOOM, "screen pixels per weight"),
            padding=self.padding,
        )

    def tile_at(self, out_channel: int, in_channel: int = 0) -> int:
        """Index of the tile showing kernel (``out_channel``, ``in_channel``)."""
        tiles = self.tiles
        if tiles.mode == "rgb":
            return int(out_channel)
        return int(out_channel) * tiles.in_channels + int(in_channel)

    # ------------------------------------------------------------------ validation
    @t.validate("layer")
    @checked
    def _check_layer(self, proposal):
        name = proposal["value"]
        get_layer(self._model, name, kinds=CONV_TYPES)
        return name

    @t.validate("zoom")
    @checked
    def _check_zoom(self, proposal):
        return int_in(proposal, 1, self.MAX_ZOOM, "screen pixels per weight")

    @t.validate("columns")
    @checked
    def _check_columns(self, proposal):
        return int_in(proposal, 0, self.MAX_COLUMNS, "tiles per row; 0 = automatic")

    @t.validate("height")
    @checked
    def _check_height(self, proposal):
        return int_in(proposal, 16, self.MAX_HEIGHT, "the grid's visible height in screen pixels")

    @t.validate("cmap")
    @checked
    def _check_cmap(self, proposal):
        make_lut(proposal["value"])
        return proposal["value"]

    @t.validate("normalize")
    @checked
    def _check_normalize(self, proposal):
        return one_of(proposal, ("global", "filter", "tile"))

    @t.validate("padding")
    @checked
    def _check_padding(self, proposal):
        v = proposal["value"]
        if not 0 <= v <= 16:
            raise ValueError(f"padding must be between 0 and 16 pixels, got {v}")
        return v

    @t.validate("mode")
    @checked
    def _check_mode(self, proposal):
        m = one_of(proposal, ("kernel", "rgb"))
        if m == "rgb" and self.layer:
            in_c = conv_weight(self._model, self.layer).shape[1]
            if in_c != 3:
                raise ValueError(
                    f"mode='rgb' needs a layer that reads 3 channels; {self.layer!r} reads {in_c}. "
                    "Hint: use mode='kernel'."
                )
        return m

    @t.validate("channel")
    @checked
    def _check_channel(self, proposal):
        c = proposal["value"]
        if self.layer:
            # against the layer being set, which may change in the same update
            n_out = conv_weight(self._model, self.layer).shape[0]
            if not -1 <= c < n_out:
                raise ValueError(f"channel must be -1 (none) or in 0..{n_out - 1} for layer {self.layer!r}, got {c}")
        return c

    # ------------------------------------------------------------------ internals
    def _default_mode(self, layer: str) -> str:
        return "rgb" if conv_weight(self._model, layer).shape[1] == 3 else "kernel"

    @staticmethod
    def _auto_columns(tiles: FilterTiles) -> int | None:
        """One filter per row (its input channels side by side) when that gives a sensible
        shape, as in a weight matrix; otherwise a near-square grid (None)."""
        if tiles.mode == "kernel" and tiles.in_channels >= 8 and tiles.out_channels <= 8 * tiles.in_channels:
            return tiles.in_channels
        return None

    def _current_lut(self) -> np.ndarray:
        return make_lut("gray" if self.mode == "rgb" else self.cmap)

    @t.observe("layer")
    def _on_layer(self, change):
        if self._tiles is None:
            return
        if self._auto_mode or (self.mode == "rgb" and conv_weight(self._model, change["new"]).shape[1] != 3):
            self._following_layer = True
            try:
                self.mode = self._default_mode(change["new"])
            finally:
                self._following_layer = False
        self._compute()

    @t.observe("mode", "normalize", "cmap", "columns")
    def _on_style(self, change):
        if self._tiles is None or getattr(self, "_following_layer", False):
            return
        if change["name"] == "mode":
            self._auto_mode = False
        self._compute()

    def _compute(self) -> None:
        w = conv_weight(self._model, self.layer)
        symmetric = is_diverging(self.cmap) and self.mode != "rgb"
        tiles = kernel_tiles(w, mode=self.mode, normalize=self.normalize, symmetric=symmetric)
        self._tiles = tiles
        rows, cols = grid_shape(tiles.n_tiles, self.columns or self._auto_columns(tiles))
        kh, kw = tiles.tile_shape
        module = get_layer(self._model, self.layer)
        grid = {
            "n_tiles": tiles.n_tiles,
            "rows": rows,
            "columns": cols,
            "tile_h": kh,
            "tile_w": kw,
            "rgb": tiles.mode == "rgb",
            "out_channels": tiles.out_channels,
            "in_channels": tiles.in_channels,
            "symmetric": symmetric,
            "n_nonfinite": tiles.n_nonfinite,
            "label": f"{self.layer} · {_conv_label(module, tiles)} · {kh}×{kw}",
        }
        with self.hold_sync():
            if self.channel >= tiles.out_channels:
                self.channel = -1
            self._lut = self._current_lut().tobytes()
            self._codes = tiles.codes.tobytes()
            self._stats = tiles.stats.tobytes()
            self._grid = grid

    def __repr__(self) -> str:
        if self._closed:
            return "FilterGrid(closed)"
        if self._tiles is None:
            return "FilterGrid()"
        return f"FilterGrid(layer={self.layer!r}, mode={self.mode!r}, n_tiles={self.n_tiles})"

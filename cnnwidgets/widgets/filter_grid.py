"""FilterGrid: a convolution layer's weights as a grid of image tiles."""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets as t
from torch import nn

from ..core.colormaps import is_diverging
from ..core.colormaps import lut as make_lut
from ..core.filters import (
    FilterTiles,
    Normalize,
    TileMode,
    conv_weight,
    first_conv_layer,
    grid_shape,
    kernel_tiles,
    render_grid,
)
from ..core.model import CONV_TYPES, check_model, conv_layers, get_layer
from ._base import ArrayTrait, BaseWidget, Choice, Float, Int, bounded_int, checked, int_in
from .selection import SelectionMixin

__all__ = ["FilterGrid"]


def _conv_label(module: nn.Module) -> str:
    """What a convolution maps and with which kernel: ``"Conv2d 16→32 · 3×3"``, with its
    grouping when it has one (``"Conv2d 16→32, groups 4 · 3×3"``, ``"Conv2d 32→32, depthwise · 3×3"``).

    The channel counts are the layer's own (``in_channels``, ``out_channels``), not those of
    one filter: a grouped filter reads ``in_channels / groups`` channels, which the tiles show.
    This is what the layer picker says beside each layer (a weight view needs no example input,
    so no output shape: :func:`cnnwidgets.core.layers.layer_labels` is for views of activations).

    Examples
    --------
    >>> _conv_label(nn.Conv2d(16, 32, 3, groups=4))
    'Conv2d 16→32, groups 4 · 3×3'
    >>> _conv_label(nn.Conv2d(8, 8, (5, 3), groups=8))
    'Conv2d 8→8, depthwise · 5×3'
    """
    c_in = int(module.in_channels)
    c_out = int(module.out_channels)
    groups = int(getattr(module, "groups", 1) or 1)
    kh, kw = (int(k) for k in module.kernel_size)
    text = f"{type(module).__name__} {c_in}→{c_out}"
    if groups > 1:
        text += ", depthwise" if groups == c_in else f", groups {groups}"
    return f"{text} · {kh}×{kw}"


def _scale_ends(tiles: FilterTiles, normalize: str, channel: int) -> tuple[float, float, str]:
    """The weights at the two ends of the colour scale of the picture, and what they are.

    Codes 0 and 254 (the first and last colour of the LUT) stand for these values; in between
    the scale is linear (:func:`cnnwidgets.core.filters.kernel_tiles`). With a symmetric
    (diverging) scale the ends are -m and +m, m the largest magnitude, and zero is the middle.

    * ``normalize="global"``: the layer's min and max, exactly the picture's scale.
    * ``"filter"`` with a filter selected (``channel >= 0``): that filter's range, exactly the
      scale of its tiles; with none selected, the layer's extremes (each filter spans the
      whole scale between its own min and max).
    * ``"tile"``: the layer's extremes (each kernel spans the whole scale; its own min and max
      are in the tile's tooltip).

    Returns ``(min, max, note)``; the note says which of these it is ("" for the global scale).
    """
    stats = tiles.stats
    per = 1 if tiles.mode == "rgb" else tiles.in_channels
    how = "filter" if (normalize == "tile" and tiles.mode == "rgb") else normalize  # an RGB tile is a filter
    note = ""
    rows = stats
    if how == "filter":
        if 0 <= channel < tiles.out_channels:
            rows = stats[channel * per : (channel + 1) * per]
            note = f"each filter scaled to its own range: filter {channel}'s shown"
        else:
            note = "each filter scaled to its own range: the layer's extremes shown (select a filter for its own)"
    elif how == "tile":
        note = "each kernel scaled to its own range (hover a tile for its min and max): the layer's extremes shown"
    finite = rows[np.isfinite(rows).all(axis=1)]
    if not len(finite):
        return float("nan"), float("nan"), note
    lo, hi = np.float32(finite[:, 0].min()), np.float32(finite[:, 1].max())
    if tiles.symmetric:
        mag = max(abs(lo), abs(hi))
        lo, hi = -mag, mag
    return float(lo), float(hi), note


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
    layer_labels : dict
        ``{layer: "Conv2d 32→64 · 3×3"}`` for each conv layer: what the layer picker shows.
    color_range : tuple of float
        The weights at the two ends of the colour scale (the colorbar's min and max): the
        layer's range for ``normalize="global"``, the selected filter's for ``"filter"``, the
        layer's extremes otherwise; ``-m, +m`` (m the largest magnitude) with a diverging
        ``cmap``. ``color_note`` says which.

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
    #: What the layer picker says beside each layer: type, channels, kernel size.
    layer_labels = t.Dict(read_only=True).tag(sync=True)
    mode = Choice(TileMode, "kernel").tag(sync=True)
    normalize = Choice(Normalize, "global").tag(sync=True)
    cmap = t.Unicode("gray").tag(sync=True)
    zoom = Int(4).tag(sync=True)
    columns = Int(0).tag(sync=True)
    padding = Int(1).tag(sync=True)
    height = Int(480).tag(sync=True)

    # --- what the page produces
    channel = Int(-1).tag(sync=True)

    # --- the colour scale of the picture (the colorbar)
    color_range = t.Tuple(Float(), Float(), default_value=(0.0, 0.0), read_only=True).tag(sync=True)
    color_note = t.Unicode("", read_only=True).tag(sync=True)

    # --- data sent to the page (binary arrays, js/src/lib/codecs.js: decodeArray)
    #: uint8 (n_tiles, kh, kw), or (n_tiles, kh, kw, 3) in RGB mode
    _codes = ArrayTrait()
    #: float32 (n_tiles, 2): each tile's min and max weight
    _stats = ArrayTrait()
    #: uint8 (256, 3): the colours of the codes
    _lut = ArrayTrait()
    #: the layout (rows, columns, tile size) and what the grid shows (label, channels)
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
            self._set_layers(names)
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
            self._set_layers(names)
        self._compute()

    def to_image(self, zoom: int | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        """The grid as the page draws it (at ``zoom``, default the widget's), uint8 (H, W, 3).

        ``background`` is the colour of the gaps between tiles; the page draws them in its
        theme's sunken background (the view's ``data-background`` attribute, "r,g,b")."""
        return render_grid(
            self.tiles.codes,
            self._current_lut(),
            columns=self._grid["columns"],
            zoom=self.zoom if zoom is None else bounded_int(zoom, "zoom", 1, self.MAX_ZOOM, "screen pixels per weight"),
            padding=self.padding,
            background=tuple(int(v) for v in background),
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
        m = proposal["value"]  # one of TileMode already (the Choice trait)
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
    def _set_layers(self, names: list[str]) -> None:
        self.set_trait("layers", names)
        self.set_trait("layer_labels", {n: _conv_label(get_layer(self._model, n)) for n in names})

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

    @t.observe("channel")
    def _on_channel(self, change):
        if self._tiles is not None:
            self._update_scale()

    def _update_scale(self) -> None:
        lo, hi, note = _scale_ends(self.tiles, self.normalize, self.channel)
        self.set_trait("color_range", (lo, hi))
        self.set_trait("color_note", note)

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
            "label": f"{self.layer} · {_conv_label(module)}",
        }
        with self.hold_sync():
            if self.channel >= tiles.out_channels:
                self.channel = -1
            self._lut = self._current_lut()
            self._codes = tiles.codes
            self._stats = tiles.stats
            self._grid = grid
            self._update_scale()

    def __repr__(self) -> str:
        if self._closed:
            return "FilterGrid(closed)"
        if self._tiles is None:
            return "FilterGrid()"
        return f"FilterGrid(layer={self.layer!r}, mode={self.mode!r}, n_tiles={self.n_tiles})"

"""Explorer: the views over one Selection, in one dashboard that reflows with its width.

The dashboard is a list of view specs (:data:`VIEWS`): each names the view, its class, the
heading of its cell and how it is built from what the views share (the model, the images once
converted, the Selection, each view's default layer). Adding a view is one more entry.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as ipw
import numpy as np
import torch
from torch import nn

from ..core.images import ImageSet
from ..core.layers import view_defaults
from ..core.model import check_model, model_dtype
from ..core.outputs import OutputSelector, check_output
from ._base import check_labels, close_widgets, held_widgets, with_fallback
from .activation_explorer import ActivationExplorer
from .channel_card import ChannelCard
from .filter_grid import FilterGrid
from .oip_optimizer import OIPOptimizer
from .saliency_viewer import SaliencyViewer
from .selection import Selection
from .tsne_scatter import TSNEScatter

__all__ = ["VIEWS", "Explorer", "ViewSpec"]


@dataclass
class _Shared:
    """What every view of one dashboard is built from (held only while building: the Explorer
    itself keeps no reference to the model or the images)."""

    model: nn.Module
    x: ImageSet  # the images of every view (read on demand, caches shared)
    labels: Sequence[int] | torch.Tensor | None
    classes: Sequence[str] | None
    selection: Selection
    #: keyword arguments of every view that reads images: mean, std, selection (and output)
    kw: dict[str, Any]
    #: each view's default layer (:func:`~cnnwidgets.core.layers.view_defaults`)
    defaults: dict[str, Any]
    #: the layers given to the Explorer (``saliency_layer=`` ...), by view name
    layers: dict[str, str | None] = field(default_factory=dict)
    tsne_images: int = 2000

    def layer(self, view: str, default_key: str) -> dict[str, str]:
        """``{"layer": ...}`` for ``view``: the layer given to the Explorer, else the view's
        default; ``{}`` when neither exists (the view picks its own). An explicit layer is kept
        by the view when it joins the Selection."""
        chosen = self.layers.get(view)
        if chosen is None:
            chosen = self.defaults.get(default_key)
        return {} if chosen is None else {"layer": chosen}


@dataclass(frozen=True)
class ViewSpec:
    """One view of the dashboard.

    Attributes
    ----------
    name : str
        The Explorer's attribute holding the view (``ex.filters``) and its name in ``views=``.
    cls : type
        The view's class.
    title, about : str
        The heading of the view's cell, and a line under it saying what the view shows.
    build : callable
        ``build(shared) -> view``, from the :class:`_Shared` pieces of the dashboard.
    first : bool
        Built before the others: its layer is the one the Selection starts on.
    per_image : bool
        The view shows one image at a time and :meth:`Explorer.save_html` exports one state per
        exported image (its ``_export_frames``).
    """

    name: str
    cls: type
    title: str
    about: str
    build: Callable[[_Shared], ipw.Widget]
    first: bool = False
    per_image: bool = False


def _filters(s: _Shared) -> FilterGrid:
    # no layer of its own: it takes the Selection's (the feature maps' first layer)
    return FilterGrid(s.model, selection=s.selection, height=320)


def _activations(s: _Shared) -> ActivationExplorer:
    return ActivationExplorer(s.model, s.x, **s.layer("activations", "activation"), **s.kw)


def _saliency(s: _Shared) -> SaliencyViewer:
    return SaliencyViewer(s.model, s.x, **s.layer("saliency", "cam"), **s.kw)


def _optimizer(s: _Shared) -> OIPOptimizer:
    return OIPOptimizer(s.model, images=s.x.subset([0]), **s.layer("optimizer", "optimizer"), **s.kw)


def _tsne(s: _Shared) -> TSNEScatter:
    n = min(int(s.tsne_images), len(s.x))
    kw = s.layer("tsne", "feature")
    if s.layers.get("tsne") is None and s.defaults.get("feature") is not None and s.defaults.get("feature_pool") is not None:
        kw["pool"] = s.defaults["feature_pool"]  # a layer given to the Explorer uses TSNEScatter's own pool
    return TSNEScatter(s.model, s.x.subset(np.arange(n)), **kw, **s.kw)


def _card(s: _Shared) -> ChannelCard:
    # no layer or channel of its own: it shows the channel last selected in any view
    return ChannelCard(s.model, s.x, selection=s.selection)


#: The dashboard's views, in the order they are shown.
VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("filters", FilterGrid, "Filters",
             "FilterGrid · the kernels of a convolution layer; click one to select its filter", _filters),
    ViewSpec("activations", ActivationExplorer, "Feature maps",
             "ActivationExplorer · every map of a layer for one image; click a map to project it back",
             _activations, first=True, per_image=True),
    ViewSpec("saliency", SaliencyViewer, "Attribution",
             "SaliencyViewer · which pixels raise a class score; click a bar to explain that class",
             _saliency, per_image=True),
    ViewSpec("optimizer", OIPOptimizer, "Optimized input pattern",
             "OIPOptimizer · an image grown to excite the selected channel or class", _optimizer),
    ViewSpec("tsne", TSNEScatter, "Feature space (t-SNE)",
             "TSNEScatter · the images placed by their features; click a point to select its image", _tsne),
    ViewSpec("card", ChannelCard, "Channel card",
             "ChannelCard · the selected channel: its filter, optimized patterns, top images and statistics", _card),
)

_BY_NAME = {spec.name: spec for spec in VIEWS}



def _chosen(views: Sequence[str] | str | None) -> list[ViewSpec]:
    """The specs of ``views`` (names of :data:`VIEWS`), in the order given; all when None."""
    if views is None:
        return list(VIEWS)
    names = [views] if isinstance(views, str) else list(views)
    valid = ", ".join(repr(s.name) for s in VIEWS)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown view {', '.join(map(repr, unknown))} in views=; the views are {valid}")
    if not names:
        raise ValueError(f"views= is empty; choose one or more of {valid}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"views= names {', '.join(map(repr, twice))} more than once; each view can be shown once")
    return [_BY_NAME[n] for n in names]


def _heading(spec: ViewSpec) -> ipw.HTML:
    """The themed heading line of a view's cell."""
    return ipw.HTML(
        f'<div class="cnnw-root cnnw-explorer-heading" role="heading" aria-level="3">'
        f'<span class="cnnw-explorer-title">{html.escape(spec.title)}</span>'
        f'<span class="cnnw-explorer-about">{html.escape(spec.about)}</span></div>'
    )


class Explorer(ipw.VBox):
    """One dashboard of the views, linked by one :class:`Selection`.

    Clicking a filter, a feature map, a point of the t-SNE map or a class bar updates the
    Selection, and every other view follows. The views sit in a grid that reflows with the
    width: two columns on a wide notebook, one below about 1,150 px. In marimo, which renders
    no ipywidgets boxes, they are shown one below the other (:meth:`_display_`).

    Parameters
    ----------
    model : nn.Module
    images
        A tensor or array (N x C x H x W floats the model takes, or uint8 N x H x W x C), a
        torch Dataset or DataLoader, a list of PIL images or file paths, a folder with one
        subfolder per class, or an :class:`~cnnwidgets.core.images.ImageSet`: one ImageSet,
        read on demand, is shared by every view.
    labels, classes : optional
    mean, std : optional
        The model's input normalization.
    transform : callable, optional
        Applied to each item's image as it is read (datasets, files, PIL images).
    tsne_images : int
        How many images the t-SNE map shows (the first ones), to keep it quick.
    output : int, str or callable, optional
        For a model whose output is a tuple, dict or named tuple: which part holds the class
        scores (:func:`~cnnwidgets.core.outputs.select_output`), for every view that reads them.
    saliency_layer, optimizer_layer, tsne_layer : str, optional
        The layers of Grad-CAM, of the optimized input pattern and of the t-SNE features.
        Each view has a default of its own, found in one forward pass on the first image
        (:func:`~cnnwidgets.core.layers.view_defaults`): the feature maps start on the first
        layer with feature maps, Grad-CAM on the last one, the optimizer on a convolution two
        thirds of the way in, t-SNE on the classifier's input (pooled as that function says;
        a ``tsne_layer`` given here uses TSNEScatter's own ``pool``). The views share one
        Selection, but a view keeps its own layer until you choose another one.
    views : sequence of str, optional
        Which views to show, in this order: names of :data:`VIEWS` (``"filters"``,
        ``"activations"``, ``"saliency"``, ``"optimizer"``, ``"tsne"``, ``"card"``); default
        all six. The
        attribute of a view not shown is None.

    Attributes
    ----------
    selection, filters, activations, saliency, optimizer, tsne, card
        The Selection and the views, for use from Python.
    views : list
        The views shown, in their order.
    defaults : dict
        The default layer of every view for this model (``view_defaults``).

    Raises
    ------
    ValueError
        For a name in ``views`` that is no view (the message lists the valid ones), and as
        each view raises for what it cannot show.

    Examples
    --------
    >>> from cnnwidgets import Explorer, demo
    >>> d = demo.mnist("val")
    >>> ex = Explorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std)  # doctest: +SKIP
    >>> maps = Explorer(d.model, d.images, views=["activations", "saliency"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[int] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        tsne_images: int = 2000,
        output: OutputSelector = None,
        saliency_layer: str | None = None,
        optimizer_layer: str | None = None,
        tsne_layer: str | None = None,
        views: Sequence[str] | None = None,
        transform: Any = None,
    ) -> None:
        specs = _chosen(views)
        check_model(model)
        check_output(output)
        # one ImageSet for every view (its caches shared), read on demand
        x = ImageSet.of(images, check_labels(labels), classes, mean=mean, std=std, transform=transform)
        # every view's default layer from one forward pass on the first image
        self.defaults = view_defaults(model, x.item(0).to(model_dtype(model)))
        self.selection = Selection()
        self._specs = specs
        for spec in VIEWS:
            setattr(self, spec.name, None)
        kw: dict[str, Any] = {"selection": self.selection}
        if output is not None:  # only then: a view without output= still works for plain outputs
            kw["output"] = output
        shared = _Shared(model, x, labels, classes, self.selection, kw, self.defaults,
                         {"saliency": saliency_layer, "optimizer": optimizer_layer, "tsne": tsne_layer},
                         tsne_images)
        try:  # a view that fails closes the views built before it (their threads, widgets)
            for spec in sorted(specs, key=lambda s: not s.first):  # stable: the rest in their order
                setattr(self, spec.name, spec.build(shared))
            del shared  # the dashboard holds no model or images of its own
            cells = []
            for spec in specs:
                cell = ipw.VBox([_heading(spec), getattr(self, spec.name)])
                cell.add_class("cnnw-explorer-cell")
                cell.add_class(f"cnnw-explorer-cell-{spec.name}")
                cells.append(cell)
            grid = ipw.GridBox(cells)
            grid.add_class("cnnw-explorer-grid")
            super().__init__([self.selection, grid])
            self.add_class("cnnw-explorer")
        except BaseException:
            self.close()
            raise

    @property
    def views(self) -> list[ipw.Widget]:
        """The views shown, in their order (filters, feature maps, attribution, optimizer, t-SNE
        by default)."""
        return [getattr(self, spec.name) for spec in getattr(self, "_specs", ()) if getattr(self, spec.name, None) is not None]

    def _repr_mimebundle_(self, **kwargs):
        """The dashboard, and beside it the static picture of each view (see
        :meth:`BaseWidget._repr_mimebundle_ <cnnwidgets.widgets._base.BaseWidget._repr_mimebundle_>`)."""
        return with_fallback(super()._repr_mimebundle_(**kwargs), self, self.views)

    def _display_(self):
        """How marimo shows the dashboard (it calls ``_display_`` on what a cell outputs): the
        Selection's line, then each view under its heading, one below the other. marimo renders
        no ipywidgets boxes, only the anywidget views themselves, so the boxes of the Jupyter
        dashboard are left out. Each view is wrapped by marimo's own formatter
        (``mo.ui.anywidget``, one element per widget however often the dashboard is shown)."""
        import marimo as mo

        cells = [mo.vstack([mo.md(f"### {spec.title}\n\n{spec.about}"), getattr(self, spec.name)])
                 for spec in self._specs]
        return mo.vstack([self.selection, *cells], gap=1.5)

    def save_html(self, path, *, images=None, title: str = "cnnwidgets explorer"):
        """Write the dashboard's views into one self-contained HTML file.

        Parameters
        ----------
        path : str or Path
        images : sequence of int, optional
            Image indices whose feature maps and attribution maps are precomputed
            (default: the current image); the page's image pickers visit these and no others.
        title : str

        Returns
        -------
        pathlib.Path
        """
        from ._export import export_html

        images = [self.selection.index] if images is None else [int(i) for i in images]
        if self.tsne is not None:
            self.tsne.wait()  # the finished map, not a frame of its animation
        shown = [(spec, getattr(self, spec.name)) for spec in self._specs]
        frames = [view._export_frames(images) if spec.per_image else None for spec, view in shown]
        return export_html([view for _, view in shown], path, title=title, frames=frames, grid=True)

    def close(self) -> None:
        """Stop every background thread and close all views, the Selection and the dashboard's
        boxes and titles; the views let go of the model and the images. Safe to call twice, and
        on a dashboard whose constructor raised."""
        views = [getattr(self, spec.name, None) for spec in VIEWS]
        held = held_widgets(self)  # boxes, titles, layouts (and the views, the Selection)
        super().close()
        close_widgets(*views, getattr(self, "selection", None), *held)

    def __del__(self):
        # ipywidgets closes a widget when it is garbage collected; never a message from here
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing useful can be done in a finalizer
            pass

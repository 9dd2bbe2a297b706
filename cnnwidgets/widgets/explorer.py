"""Explorer: all five views over one Selection, in one dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as ipw
import torch
from torch import nn

from ..core.inputs import as_batch
from ..core.layers import view_defaults
from ..core.model import check_model, model_dtype
from ..core.outputs import OutputSelector, check_output
from ._base import close_widgets, held_widgets
from .activation_explorer import ActivationExplorer
from .filter_grid import FilterGrid
from .oip_optimizer import OIPOptimizer
from .saliency_viewer import SaliencyViewer
from .selection import Selection
from .tsne_scatter import TSNEScatter

__all__ = ["Explorer"]


def _section(title: str, body: ipw.Widget) -> ipw.VBox:
    return ipw.VBox([ipw.HTML(f"<b>{title}</b>"), body], layout=ipw.Layout(margin="0 12px 12px 0"))


class Explorer(ipw.VBox):
    """One dashboard of every view, linked by one :class:`Selection`.

    Clicking a filter, a feature map, a point of the t-SNE map or a class bar updates the
    Selection, and every other view follows.

    Parameters
    ----------
    model : nn.Module
    images : tensor or array
        N x C x H x W floats the model takes, or uint8 N x H x W x C.
    labels, classes : optional
    mean, std : optional
        The model's input normalization.
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

    Attributes
    ----------
    selection, filters, activations, saliency, optimizer, tsne
        The Selection and the five views, for use from Python.
    defaults : dict
        The default layer of every view for this model (``view_defaults``).

    Examples
    --------
    >>> from cnnwidgets import Explorer, demo
    >>> d = demo.mnist("val")
    >>> ex = Explorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std)  # doctest: +SKIP
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
    ) -> None:
        check_model(model)
        check_output(output)
        x = as_batch(images, mean=mean, std=std)  # once, for every view (floats are taken as they are)
        # every view's default layer from one forward pass on the first image
        self.defaults = d = view_defaults(model, x[:1].to(model_dtype(model)))
        self.selection = Selection()
        kw: dict[str, Any] = {"mean": mean, "std": std, "selection": self.selection}
        if output is not None:  # only then: a view without output= still works for plain outputs
            kw["output"] = output

        def layer_kw(given: str | None, default: str | None) -> dict[str, Any]:
            # an explicit layer: the view keeps it when joining the Selection
            chosen = given if given is not None else default
            return {} if chosen is None else {"layer": chosen}

        try:  # a view that fails closes the views built before it (their threads, widgets)
            self.activations = ActivationExplorer(model, x, labels, classes, **layer_kw(None, d["activation"]), **kw)
            self.filters = FilterGrid(model, selection=self.selection, height=320)
            self.saliency = SaliencyViewer(model, x, labels, classes, **layer_kw(saliency_layer, d["cam"]), **kw)
            n = min(int(tsne_images), len(x))
            sub_labels = None if labels is None else labels[:n]
            tsne_kw = layer_kw(tsne_layer, d["feature"])
            if tsne_layer is None and d["feature"] is not None and d["feature_pool"] is not None:
                tsne_kw["pool"] = d["feature_pool"]
            self.tsne = TSNEScatter(model, x[:n], sub_labels, classes, **tsne_kw, **kw)
            self.optimizer = OIPOptimizer(model, images=x[:1], **layer_kw(optimizer_layer, d["optimizer"]), **kw)
            super().__init__(
                [
                    self.selection,
                    ipw.HBox([_section("Feature maps", self.activations), _section("Attribution", self.saliency)],
                             layout=ipw.Layout(flex_flow="row wrap")),
                    ipw.HBox([_section("Filters", self.filters), _section("Feature space (t-SNE)", self.tsne)],
                             layout=ipw.Layout(flex_flow="row wrap")),
                    _section("Optimized input pattern", self.optimizer),
                ]
            )
            self.add_class("cnnw-explorer")
        except BaseException:
            self.close()
            raise

    @property
    def views(self) -> list[ipw.Widget]:
        return [self.filters, self.activations, self.saliency, self.optimizer, self.tsne]

    def save_html(self, path, *, images=None, title: str = "cnnwidgets explorer"):
        """Write the dashboard's views into one self-contained HTML file.

        Parameters
        ----------
        path : str or Path
        images : sequence of int, optional
            Image indices whose feature maps and attribution maps are precomputed
            (default: the current image).
        title : str

        Returns
        -------
        pathlib.Path
        """
        from ._export import export_html

        images = [self.activations.index] if images is None else list(images)
        self.tsne.wait()
        views = [self.activations, self.saliency, self.filters, self.tsne, self.optimizer]
        frames = [self.activations._export_frames(images), self.saliency._export_frames(images), None, None, None]
        return export_html(views, path, title=title, frames=frames)

    def close(self) -> None:
        """Stop every background thread and close all views, the Selection and the dashboard's
        boxes and titles; the views let go of the model and the images. Safe to call twice, and
        on a dashboard whose constructor raised."""
        views = [getattr(self, name, None) for name in ("filters", "activations", "saliency", "optimizer", "tsne")]
        held = held_widgets(self)  # boxes, titles, layouts (and the views, the Selection)
        super().close()
        close_widgets(*views, getattr(self, "selection", None), *held)

    def __del__(self):
        # ipywidgets closes a widget when it is garbage collected; never a message from here
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing useful can be done in a finalizer
            pass

"""Jupyter widgets: thin anywidget classes holding traits and calling :mod:`cnnwidgets.core`."""

from __future__ import annotations

from .activation_explorer import ActivationExplorer
from .channel_card import ChannelCard
from .explorer import Explorer
from .filter_grid import FilterGrid
from .oip_optimizer import OIPOptimizer
from .saliency_viewer import SaliencyViewer
from .selection import Selection
from .tsne_scatter import TSNEScatter

__all__ = ["ActivationExplorer", "ChannelCard", "Explorer", "FilterGrid", "OIPOptimizer", "SaliencyViewer", "Selection", "TSNEScatter"]

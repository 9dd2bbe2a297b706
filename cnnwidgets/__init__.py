"""cnnwidgets: interactive Jupyter widgets for looking inside convolutional neural networks.

>>> import cnnwidgets
>>> d = cnnwidgets.demo.mnist()
>>> cnnwidgets.FilterGrid(d.model)            # doctest: +SKIP
"""

from __future__ import annotations

from . import core, demo
from .widgets import (
    ActivationExplorer,
    ChannelCard,
    Explorer,
    FilterGrid,
    OIPOptimizer,
    SaliencyViewer,
    Selection,
    TSNEScatter,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationExplorer",
    "ChannelCard",
    "Explorer",
    "FilterGrid",
    "OIPOptimizer",
    "SaliencyViewer",
    "Selection",
    "TSNEScatter",
    "__version__",
    "core",
    "demo",
]

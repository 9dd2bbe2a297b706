"""Jupyter widgets: thin anywidget classes holding traits and calling :mod:`cnnwidgets.core`."""

from __future__ import annotations

from .filter_grid import FilterGrid

__all__ = ["FilterGrid"]

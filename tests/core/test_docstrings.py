"""The Examples sections of the compute core's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import cnnwidgets.core

MODULES = sorted(m.name for m in pkgutil.iter_modules(cnnwidgets.core.__path__, "cnnwidgets.core."))


def test_every_core_module_is_covered():
    assert "cnnwidgets.core.optimize" in MODULES and "cnnwidgets.core.saliency" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)  # examples that build random nets see the same weights in any test order
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (run pytest -s to see)"

"""The Examples sections of the compute core's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import cnnwidgets.core

#: Every module of the core, the modules of its packages (optimize, saliency) included, and the
#: test data set module that used to be part of it.
MODULES = sorted(m.name for m in pkgutil.walk_packages(cnnwidgets.core.__path__, "cnnwidgets.core.")) + [
    "tests.core._shapes"
]


def test_every_core_module_is_covered():
    for name in ("optimize", "optimize.render", "optimize.objectives", "optimize._forward", "saliency",
                 "saliency.integrated_gradients", "saliency.registry", "imageops", "inputs"):
        assert f"cnnwidgets.core.{name}" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)  # examples that build random nets see the same weights in any test order
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (run pytest -s to see)"

"""Importing the peer libraries the agreement tests and the benchmark compare against.

Two of them import modules this machine cannot have (../shared/PEERS.md):

- zennit 0.5.1 imports ``torchvision.models.resnet`` at package import, for its torchvision
  canonizers only (installed with ``--no-deps``);
- pytorch-grad-cam imports ``ttach`` (its test-time augmentation smoothing) and a few
  ``torchvision`` names (image helpers, detection targets), none of which the CAM methods use.

:func:`peer` imports a peer with placeholder modules standing in for those that are missing:
the placeholders only answer attribute lookups with classes: torchvision's refuse to be built,
so code that really uses torchvision fails loudly instead of computing something else; ttach's
can be built and do nothing (pytorch-grad-cam builds its augmentation in every CAM's
constructor, and uses it only with ``aug_smooth=True``, which the tests never pass). The placeholders are
put in ``sys.modules`` only while the peer is imported, and only when the real module is absent.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

#: The modules each peer imports but does not need for what the tests use.
_ABSENT_OK = {
    "zennit": ("torchvision", "torchvision.models", "torchvision.models.resnet"),
    "pytorch_grad_cam": ("ttach", "torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                         "torchvision.ops"),
}


#: Placeholder modules whose classes can be built (and do nothing).
_INERT = ("ttach",)


class _Placeholder(types.ModuleType):
    """A module whose every attribute is a class named after it, which refuses to be built
    (inert for the modules in ``_INERT``)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        init = _inert if self.__name__ in _INERT else _refuse
        cls = type(name, (), {"__init__": init, "__module__": self.__name__})
        setattr(self, name, cls)
        return cls


def _inert(self, *args, **kwargs):
    pass


def _refuse(self, *args, **kwargs):
    raise RuntimeError(f"{type(self).__module__}.{type(self).__name__} is a test placeholder (tests/peers.py)")


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def peer(name: str):
    """Import peer ``name`` (e.g. ``"zennit"``), skipping the test if it is not installed.

    Placeholders stand in for the modules in ``_ABSENT_OK[name]`` that are missing; they are
    removed from ``sys.modules`` again after the import (the peer keeps its own references).
    """
    top = name.split(".")[0]
    if top in sys.modules:
        return importlib.import_module(name)
    if _missing(top):
        pytest.skip(f"{top} is not installed (see ../shared/PEERS.md)")
    added = []
    for mod in _ABSENT_OK.get(top, ()):
        if mod in sys.modules or not _missing(mod.split(".")[0]):
            continue
        sys.modules[mod] = _Placeholder(mod)
        added.append(mod)
        parent, _, child = mod.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, sys.modules[mod])
    try:
        return importlib.import_module(name)
    finally:
        for mod in added:
            sys.modules.pop(mod, None)

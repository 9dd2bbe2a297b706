"""Model inspection: find layers by qualified name, capture activations, leave the model as found.

Everything here is plain PyTorch; no widget imports.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "CONV_TYPES",
    "capture_activations",
    "check_model",
    "conv_layers",
    "final_activation",
    "final_softmax",
    "get_layer",
    "has_own_forward",
    "model_device",
    "model_dtype",
    "named_layers",
    "preserved_state",
    "replaced_forward",
    "spatial_layers",
    "unwrap_model",
]

#: Module types whose weights FilterGrid can draw (2-D kernels).
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d)


def check_model(model: Any) -> nn.Module:
    """Return ``model`` if it is a ``torch.nn.Module``, else raise a TypeError with a hint."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}. "
            "Hint: pass the network itself (e.g. `net`), not its state_dict or output."
        )
    return model


#: Qualified-name prefixes of the wrappers :func:`unwrap_model` removes.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def unwrap_model(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The module a wrapper runs, and a sentence saying what was unwrapped (None if nothing).

    ``torch.compile``'s ``OptimizedModule`` gives its ``_orig_mod`` (cnnwidgets runs it eagerly:
    hooks on compiled code miss layers), ``nn.DataParallel`` and ``DistributedDataParallel``
    their ``.module``. Layer names are those of the unwrapped module.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> unwrap_model(nn.DataParallel(net))[0] is net
    True
    """
    check_model(model)
    notes = []
    while True:
        inner = model._modules.get("_orig_mod") if type(model).__name__ == "OptimizedModule" else None
        if inner is not None:
            notes.append("a torch.compile'd module: cnnwidgets runs its original module (_orig_mod) eagerly")
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = model.module
            notes.append(f"an nn.{type(model).__name__}: cnnwidgets runs its .module on one device")
        if inner is None:
            break
        model = inner
    return model, ("The model is " + "; ".join(notes) + "; layer names are those of the inner module.") if notes else None


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All sub-modules of ``model`` by qualified name, in registration order.

    The root module itself is left out. Names are those of ``model.named_modules()``,
    e.g. ``"features.0"`` for an ``nn.Sequential`` or ``"layer1.0.conv1"`` for a ResNet.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> list(named_layers(net))
    ['0', '1']
    """
    model = unwrap_model(model)[0]
    return {name: m for name, m in model.named_modules() if name}


def conv_layers(model: nn.Module) -> list[str]:
    """Qualified names of the 2-D convolution layers of ``model``, in order.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
    >>> conv_layers(net)
    ['0', '2']
    """
    return [n for n, m in named_layers(model).items() if isinstance(m, CONV_TYPES)]


def _short_list(names: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown


def get_layer(model: nn.Module, name: str, *, kinds: tuple[type[nn.Module], ...] | None = None) -> nn.Module:
    """The sub-module of ``model`` with qualified name ``name``.

    Parameters
    ----------
    model : nn.Module
    name : str
        Qualified module name such as ``"features.0"``.
    kinds : tuple of module types, optional
        When given, the layer must be an instance of one of them.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If no such layer exists (the message lists valid names), or it has the wrong kind.
    """
    if not isinstance(name, str):
        raise TypeError(f"layer must be a qualified module name (str), got {type(name).__name__}: {name!r}")
    layers = named_layers(model)
    valid = [n for n, m in layers.items() if kinds is None or isinstance(m, kinds)]
    name = unwrapped_name(name, layers)
    if name not in layers:
        raise ValueError(
            f"layer {name!r} is not in the model. Valid names: {_short_list(valid)}. "
            "Hint: cnnwidgets.core.conv_layers(model) lists the convolution layers."
        )
    module = layers[name]
    if kinds is not None and not isinstance(module, kinds):
        kind_names = "/".join(k.__name__ for k in kinds)
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__}, expected {kind_names}. "
            f"Valid names: {_short_list(valid)}."
        )
    return module


def unwrapped_name(name: str, layers: dict[str, nn.Module]) -> str:
    """``name`` without a wrapper's prefix (``"_orig_mod."``, ``"module."``) when only the
    unprefixed name is among ``layers``."""
    while name not in layers and name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (or buffer); float32 for none.
    Images are cast to it before they go through the model."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


#: The hook dictionaries of a module, and the side dictionaries keyed by the same hook ids.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_EXTRAS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _modules_of(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model``, root included, each once (like ``model.modules()``, without
    building the qualified names)."""
    out = [model]
    seen = {id(model)}
    for m in out:  # grows while we walk it
        for child in m._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                out.append(child)
    return out


def _remove_hooks_since(module: nn.Module, first_id: int) -> None:
    """Remove the hooks of ``module`` whose handle id is ``first_id`` or later.

    Hook ids come from one global counter (``torch.utils.hooks.RemovableHandle.next_id``), so
    the hooks registered after the counter read ``first_id`` are exactly those ids.
    """
    d = module.__dict__
    for attr in _HOOK_DICTS:
        hooks = d.get(attr)
        if not hooks:
            continue
        late = [k for k in hooks if isinstance(k, int) and k >= first_id]
        for k in late:
            del hooks[k]
            for extra in _HOOK_EXTRAS:
                e = d.get(extra)
                if e:
                    e.pop(k, None)


class _SavedState:
    """What :func:`preserved_state` records on entry and restores on exit."""

    __slots__ = ("model", "modules", "modes", "grads", "first_hook")

    def __init__(self, model: nn.Module, modules: list[nn.Module]) -> None:
        self.model = model
        self.modules = modules
        self.modes = [m.training for m in modules]
        self.grads = [(p, p.requires_grad) for m in modules for p in m._parameters.values() if p is not None]
        self.first_hook = RemovableHandle.next_id  # hooks registered from now on get this id or later

    def eval(self) -> None:
        if any(self.modes):  # already in eval mode everywhere: nothing to switch
            self.model.eval()

    def restore(self, hooks: bool = True) -> None:
        """Restore the flags; with ``hooks``, remove every hook registered on the model since
        entry (modules added meanwhile included)."""
        for m, mode in zip(self.modules, self.modes):
            if m.training != mode:
                m.training = mode
        for p, rg in self.grads:
            if p.requires_grad != rg:
                p.requires_grad_(rg)
        if hooks:
            for m in _modules_of(self.model):
                _remove_hooks_since(m, self.first_hook)


def _add_hook(hooks: dict, hook: Callable) -> int:
    """Register ``hook`` in a module's ``_forward_hooks`` or ``_forward_pre_hooks`` under a
    fresh handle id, as ``register_forward_hook`` does, minus the handle object (a few
    microseconds per layer). Returns the id."""
    hook_id = RemovableHandle.next_id
    RemovableHandle.next_id = hook_id + 1
    hooks[hook_id] = hook
    return hook_id


def _named_layers_fast(model: nn.Module) -> dict[str, nn.Module]:
    """Same as :func:`named_layers` (``model.named_modules()`` minus the root: same names,
    order and de-duplication), without a generator per module."""
    out: dict[str, nn.Module] = {}
    memo = {model}

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module._modules.items():
            if child is None or child in memo:
                continue
            memo.add(child)
            full = f"{prefix}.{name}" if prefix else name
            out[full] = child
            walk(child, full)

    walk(model, "")
    return out


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval: bool = True) -> Iterator[nn.Module]:
    """Context manager that leaves ``model`` exactly as found.

    On entry it records every module's ``training`` flag and every parameter's
    ``requires_grad``, and (with ``eval=True``) puts the model in eval mode. On exit, also
    after an exception, it restores both and removes any forward/backward hook that was
    registered on the model's modules inside the block.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3)).train()
    >>> with preserved_state(net):
    ...     net.training
    False
    >>> net.training
    True

    Notes
    -----
    Cheap enough to wrap every forward pass: nothing is switched when the model is already in
    eval mode, flags are written back only where they changed, and the hooks registered
    inside the block are told apart by their ids (hook handles are numbered by one global,
    increasing counter) rather than by a snapshot of every hook dictionary.
    """
    check_model(model)
    saved = _SavedState(model, _modules_of(model))
    try:
        if eval:
            saved.eval()
        yield model
    finally:
        saved.restore()


# ---------------------------------------------------------------- forward swaps
_MISSING = object()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_CONTEXTLIB = os.path.dirname(contextlib.__file__) + os.sep + "contextlib"


class _ForwardSwitch:
    """The instance-level ``forward`` that :func:`replaced_forward` installs: each thread that
    holds a replacement gets it, every other thread gets the forward the module had before.

    A deep copy or a pickle of the module taken meanwhile carries the module's own forward,
    never the replacement (the copy is a separate module).
    """

    def __init__(self, module: nn.Module, before: Any) -> None:
        self.module_ref = weakref.ref(module)
        self.before = before  # an instance forward set by someone else, or _MISSING
        self.by_thread: dict[int, Callable[..., Any]] = {}

    def _base(self) -> Callable[..., Any]:
        if self.before is not _MISSING:
            return self.before
        module = self.module_ref()
        return type(module).forward.__get__(module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        f = self.by_thread.get(threading.get_ident())
        return (f if f is not None else self._base())(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> Any:
        import copy

        module = self.module_ref()
        new = memo.get(id(module), module)  # the module being copied is in memo already
        if self.before is not _MISSING:
            return copy.deepcopy(self.before, memo)
        return _OwnForward(new)

    def __reduce__(self) -> tuple:
        module = self.module_ref()
        if self.before is not _MISSING:
            return (_identity_of, (self.before,))
        return (_OwnForward, (module,))


class _OwnForward:
    """``module.forward`` as the module's class defines it (what copies of a switched module get)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).forward(self.module, *args, **kwargs)


def _identity_of(x: Any) -> Any:
    return x


_SWITCH_LOCK = threading.Lock()


def has_own_forward(module: nn.Module) -> bool:
    """Whether someone (not cnnwidgets) has set an instance-level ``forward`` on ``module``."""
    f = module.__dict__.get("forward", _MISSING)
    if isinstance(f, _ForwardSwitch):
        return f.before is not _MISSING
    return f is not _MISSING


@contextlib.contextmanager
def replaced_forward(module: nn.Module, forward: Callable[..., Any]) -> Iterator[nn.Module]:
    """Within the block, and on this thread only, ``module.forward`` is ``forward``.

    The module's hooks still run around it. Other threads calling the module meanwhile get its
    usual forward; blocks on several threads may overlap in any order; afterwards the module is
    as before (no instance-level ``forward`` unless it had one), also after an error.

    Examples
    --------
    >>> relu = nn.ReLU()
    >>> with replaced_forward(relu, lambda x: x):
    ...     relu(torch.tensor([-1.0]))
    tensor([-1.])
    >>> "forward" in relu.__dict__
    False
    """
    me = threading.get_ident()
    with _SWITCH_LOCK:
        switch = module.__dict__.get("forward", _MISSING)
        if not isinstance(switch, _ForwardSwitch):
            switch = _ForwardSwitch(module, switch)
            module.forward = switch  # type: ignore[method-assign]
        outer = switch.by_thread.get(me)  # nested on this thread: restored on the way out
        switch.by_thread[me] = forward
    try:
        yield module
    finally:
        with _SWITCH_LOCK:
            if outer is None:
                switch.by_thread.pop(me, None)
            else:
                switch.by_thread[me] = outer
            if not switch.by_thread and module.__dict__.get("forward") is switch:
                if switch.before is _MISSING:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = switch.before  # type: ignore[method-assign]


def passthrough(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: A002
    """A ``forward`` that returns its input unchanged (to bypass a module)."""
    return input


def final_softmax(model: nn.Module) -> nn.Module | None:
    """The model's last module (``named_modules`` order) if it is a leaf Softmax/LogSoftmax.

    Attribution and class objectives bypass it (:func:`replaced_forward` with
    :func:`passthrough`): gradients of probabilities saturate, and a probability can be raised
    by lowering the other classes.
    """
    last = final_activation(model)
    return last if isinstance(last, (nn.Softmax, nn.LogSoftmax)) else None


#: Final modules :func:`final_activation` recognizes: bypassed for scores, applied for display.
FINAL_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)


def final_activation(model: nn.Module) -> nn.Module | None:
    """The model's last module (``named_modules`` order) if it is a leaf Softmax, LogSoftmax
    or Sigmoid; None otherwise. :func:`~cnnwidgets.core.runner.logits_only` bypasses it, and
    :class:`~cnnwidgets.core.outputs.Head` applies it once for display."""
    name, last = list(unwrap_model(model)[0].named_modules())[-1]
    if name and not any(True for _ in last.children()) and isinstance(last, FINAL_ACTIVATIONS):
        return last
    return None


def caller_stacklevel() -> int:
    """``warnings.warn`` stacklevel for the first frame outside cnnwidgets and contextlib (the
    user's call), counted from the function that calls this one."""
    frame = sys._getframe(1)
    level = 1
    skip = (_PACKAGE_DIR, _CONTEXTLIB)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
        level += 1
    return level


# capturing lives with the model runner; re-exported here, where it was first defined
from .runner import capture_activations, spatial_layers  # noqa: E402

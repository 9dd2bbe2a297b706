"""Model inspection: find layers by qualified name, capture activations, leave the model as found.

Everything here is plain PyTorch; no widget imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "CONV_TYPES",
    "capture_activations",
    "check_model",
    "conv_layers",
    "get_layer",
    "model_device",
    "named_layers",
    "preserved_state",
    "spatial_layers",
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
    check_model(model)
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


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _all_hooks(model: nn.Module) -> dict[int, tuple[int, ...]]:
    """Ids of the hook dictionaries' keys per module, to find hooks added later."""
    out = {}
    for m in model.modules():
        keys = []
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            keys.extend(getattr(m, attr, {}).keys())
        out[id(m)] = tuple(keys)
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
    """
    check_model(model)
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    hooks_before = _all_hooks(model)
    try:
        if eval:
            model.eval()
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, rg in grads:
            p.requires_grad_(rg)
        for m in model.modules():
            before = set(hooks_before.get(id(m), ()))
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
                d = getattr(m, attr, None)
                if d is None:
                    continue
                for k in [k for k in d.keys() if k not in before]:
                    del d[k]
                    for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                                  "_forward_pre_hooks_with_kwargs"):
                        e = getattr(m, extra, None)
                        if e is not None:
                            e.pop(k, None)


def capture_activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str] | None = None,
    *,
    call: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``x`` once and return its output and the outputs of ``layers``.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Input batch, e.g. N x C x H x W, already on the model's device.
    layers : iterable of str, optional
        Qualified names; all layers when None.
    call : int
        For a module used several times in one forward pass, which call to keep
        (0 = first, -1 = last).

    Returns
    -------
    output : torch.Tensor
        The model's output (detached).
    acts : dict of str to torch.Tensor
        Detached tensor outputs by layer name, in the order the layers first ran; layers
        whose output is not a tensor, or that did not run, are absent.

    Notes
    -----
    Runs under ``torch.no_grad()`` and :func:`preserved_state`: the model is in eval mode
    during the pass and is left with its own mode, ``requires_grad`` flags and no hooks.
    """
    all_layers = named_layers(model)
    if isinstance(layers, str):
        layers = [layers]
    names = list(all_layers) if layers is None else list(dict.fromkeys(layers))
    for n in names:
        if n not in all_layers:
            get_layer(model, n)  # raises with the list of valid names
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    fired: list[str] = []  # execution order

    def make_hook(name: str):
        def hook(_module, _inp, out):
            if isinstance(out, torch.Tensor):
                if not seen[name]:
                    fired.append(name)
                # clone: an in-place op later in the forward pass (ReLU(inplace=True)) would
                # otherwise change the stored tensor
                seen[name].append(out.detach().clone())
        return hook

    with preserved_state(model), torch.no_grad():
        for n in names:
            all_layers[n].register_forward_hook(make_hook(n))
        out = model(x)
    acts = {}
    for n in fired:
        outs = seen[n]
        if outs:
            acts[n] = outs[call] if -len(outs) <= call < len(outs) else outs[-1]
    out = out.detach() if isinstance(out, torch.Tensor) else out
    return out, acts


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the layers whose output for ``x`` is 4-D (N x C x H x W), in execution order."""
    order: list[str] = []
    layers = named_layers(model)

    def make_hook(name: str):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and name not in order:
                order.append(name)
        return hook

    with preserved_state(model), torch.no_grad():
        for n, m in layers.items():
            m.register_forward_hook(make_hook(n))
        model(x)
    return order

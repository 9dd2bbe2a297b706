"""Layer discovery: which layers of a model a method or view picks by itself.

:func:`~cnnwidgets.core.model.named_layers` lists every layer,
:func:`~cnnwidgets.core.model.conv_layers` the 2-D convolutions and
:func:`~cnnwidgets.core.model.spatial_layers` the layers with a 4-D output for an input. The
helpers here answer the other questions the core asks: the leaves (modules without children),
the layers of given types, and the last ``nn.Conv2d`` in registration order.

**Defaults per view, from one forward pass.** :func:`view_defaults` runs the model once on an
example batch (under ``torch.no_grad()``, on the private view of
:func:`~cnnwidgets.core.runner.using_model`) with a hook on every layer, records which layers
ran, in which order, with which output shapes, and which tensor each layer got and gave, and
derives from that one record the default layer of every view:

* ``"activation"``: the first layer to run with a 4-D output (ActivationExplorer);
* ``"cam"``: the last layer to run with a 4-D output N x C x h x w, h*w > 1 (Grad-CAM,
  :func:`cam_layer`);
* ``"optimizer"``: a mid-to-deep ``nn.Conv2d`` (OIP, :func:`optimizer_layer`);
* ``"feature"``, ``"feature_pool"``: the input of the classifier (t-SNE,
  :func:`feature_layer`);
* ``"patch_embedding"``: the patch embedding of a vision transformer, whose only spatial layer
  it is (:func:`patch_embedding_only`; the views then show :func:`not_a_cnn_notice`).

"Layer" means a module of ``model.named_modules()`` other than the root; plain containers
(:data:`CONTAINERS`), whose output is their last child's, are never picked. Order is the order
in which the layers' first calls finish (as in
:func:`~cnnwidgets.core.runner.capture_activations`): modules that never run for the input (a
GoogLeNet's auxiliary heads in eval mode) do not count, wherever they are registered. Plain
torch; no widget imports.

Examples
--------
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU()))
>>> list(leaf_layers(net)), last_conv_layer(net)
(['0', '1', '2.0', '2.1'], '2.0')
>>> view_defaults(net, torch.zeros(1, 1, 8, 8))  # doctest: +NORMALIZE_WHITESPACE
{'activation': '0', 'cam': '2.1', 'optimizer': '2.0', 'feature': '2.1', 'feature_pool': 'avg',
 'patch_embedding': None}
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .model import _add_hook, _named_layers_fast, check_model, model_device, named_layers, unwrap_model

__all__ = [
    "CHANNELWISE",
    "CONTAINERS",
    "cam_layer",
    "feature_layer",
    "last_conv_layer",
    "layer_labels",
    "layers_of_type",
    "layers_with_output",
    "leaf_layers",
    "not_a_cnn_notice",
    "optimizer_layer",
    "patch_embedding_only",
    "same_channels",
    "view_defaults",
]

#: Plain containers: their output is their last child's, so layer pickers leave them out.
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def leaf_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` without sub-modules, by qualified name, in registration order.

    Examples
    --------
    >>> list(leaf_layers(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))))
    ['0', '1.0']
    """
    return {n: m for n, m in named_layers(model).items() if not any(True for _ in m.children())}


def layers_of_type(model: nn.Module, kinds: type[nn.Module] | tuple[type[nn.Module], ...]) -> list[str]:
    """Qualified names of the layers that are instances of ``kinds``, in registration order.

    Examples
    --------
    >>> layers_of_type(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)), nn.Conv2d)
    ['0', '2']
    """
    return [n for n, m in named_layers(model).items() if isinstance(m, kinds)]


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in module registration order.

    Registration order may differ from execution order and includes modules that never run
    (a GoogLeNet's auxiliary heads); :func:`cam_layer` follows an actual forward pass.

    Raises
    ------
    ValueError
        If the model has no ``nn.Conv2d``.

    Examples
    --------
    >>> last_conv_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))
    '2'
    """
    names = layers_of_type(model, nn.Conv2d)
    if not names:
        raise ValueError("the model has no nn.Conv2d layer; pass layer= (a layer with a 4-D output)")
    return names[-1]


#: Modules whose output channel k comes from input channel k alone (activations, normalization,
#: dropout, pooling): a layer and such a module right after it share their channels.
CHANNELWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Hardswish,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh, nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)


def same_channels(model: nn.Module, a: str, b: str) -> bool:
    """Whether channel k of layer ``a`` and channel k of layer ``b`` are the same feature: the
    same layer, or two leaves with only :data:`CHANNELWISE` modules from one to the other in
    registration order (a conv and the BatchNorm and ReLU after it in an ``nn.Sequential``).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> same_channels(net, "0", "2"), same_channels(net, "2", "3")
    (True, False)
    """
    if a == b:
        return True
    leaves = list(leaf_layers(model).items())
    names = [n for n, _ in leaves]
    if a not in names or b not in names:
        return False
    i, j = sorted((names.index(a), names.index(b)))
    return all(isinstance(m, CHANNELWISE) for _, m in leaves[i + 1 : j + 1])


def layers_with_output(model: nn.Module, acts: dict[str, Any], dims: tuple[int, ...] = (4,)) -> list[str]:
    """The layers among ``acts`` (outputs by layer name, as
    :func:`~cnnwidgets.core.model.capture_activations` returns them, in execution order) whose
    output has one of ``dims`` dimensions, plain containers (:data:`CONTAINERS`) left out.

    Examples
    --------
    >>> import torch
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    >>> layers_with_output(net, {"0": torch.zeros(1, 2, 4, 4), "1": torch.zeros(1, 32)})
    ['0']
    """
    modules = named_layers(model)
    return [k for k, v in acts.items()
            if getattr(v, "dim", None) is not None and v.dim() in dims and not isinstance(modules.get(k), CONTAINERS)]


# ---------------------------------------------------------------- one recorded forward pass
class _Call:
    """One call of one layer in a pass recorded by :func:`_record_forward`.

    ``args`` are the positional inputs, ``output`` what the layer returned; ``start`` and
    ``end`` number the moments its forward began and finished on one counter shared by all
    calls (``end`` is -1 for a call that never finished). The tensors are the pass's own
    objects, so ``a.output is b.args[0]`` says that ``b`` got exactly what ``a`` gave.
    """

    __slots__ = ("args", "end", "module", "name", "output", "start")

    def __init__(self, name: str, module: nn.Module, args: tuple[Any, ...], start: int) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.output: Any = None
        self.start = start
        self.end = -1

    def __repr__(self) -> str:
        out = tuple(self.output.shape) if isinstance(self.output, torch.Tensor) else type(self.output).__name__
        return f"_Call({self.name!r}, {type(self.module).__name__}, output={out}, start={self.start}, end={self.end})"


class _ForwardRecord:
    """What :func:`_record_forward` saw: the model's ``output``, the layer ``calls`` in the
    order they began and the same calls in the order they finished (``ended``)."""

    __slots__ = ("calls", "ended", "output")

    def __init__(self, output: Any, calls: list[_Call], ended: list[_Call]) -> None:
        self.output = output
        self.calls = calls
        self.ended = ended

    def first_calls(self) -> dict[str, _Call]:
        """Each layer's first finished call, by name, in the order those calls finished."""
        first: dict[str, _Call] = {}
        for c in self.ended:
            first.setdefault(c.name, c)
        return first


def _record_forward(model: nn.Module, x: Any) -> _ForwardRecord:
    """Run ``model`` once on ``x`` and record every call of every layer (see :class:`_Call`).

    The pass runs under ``torch.no_grad()`` on this thread's private view of the model
    (:func:`~cnnwidgets.core.runner.using_model`, eval mode), with a forward pre-hook and a
    forward hook on every layer, removed before returning (also after an error). ``x`` is a
    tensor the model takes (used as it is, on the model's device) or anything else
    :func:`~cnnwidgets.core.inputs.as_batch` takes (a uint8 array, ...).
    The record holds every layer's input and output: use a small batch (one image is enough).

    Raises
    ------
    ValueError
        If the forward pass raises (the message names the cause, as
        :func:`~cnnwidgets.core.runner.forward_error` words the common ones, or the exception;
        the original is chained).
    """
    from .inputs import as_batch
    from .runner import forward_error, using_model

    check_model(model)
    device = model_device(model)
    # a tensor is the batch as the caller made it (any dtype); arrays go through as_batch
    batch = x.to(device) if isinstance(x, torch.Tensor) and x.dtype != torch.uint8 else as_batch(x, device=device)
    owner = threading.get_ident()
    calls: list[_Call] = []
    ended: list[_Call] = []
    clock = itertools.count()

    def make_hooks(name: str, module: nn.Module):
        open_calls: list[_Call] = []  # a stack: a module may be re-entered

        def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            if threading.get_ident() == owner:
                c = _Call(name, module, tuple(args), next(clock))
                calls.append(c)
                open_calls.append(c)

        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            if threading.get_ident() == owner and open_calls:
                c = open_calls.pop()
                c.output = out
                c.end = next(clock)
                ended.append(c)

        return pre_hook, hook

    with using_model(model) as run, torch.no_grad():
        added: list[tuple[dict, int]] = []
        try:
            for name, m in _named_layers_fast(run).items():
                pre_hook, hook = make_hooks(name, m)
                added.append((m._forward_pre_hooks, _add_hook(m._forward_pre_hooks, pre_hook)))
                added.append((m._forward_hooks, _add_hook(m._forward_hooks, hook)))
            try:
                output = run(batch)
            except Exception as exc:  # noqa: BLE001 - any failure of the user's forward: say which
                better = forward_error(exc, batch, run)  # input too small, wrong channels or dtype
                raise better or ValueError(
                    f"the forward pass on the example input (shape {tuple(batch.shape)}) raised "
                    f"{type(exc).__name__}: {exc}. Hint: pass an input the model takes, e.g. one "
                    "image 1 x C x H x W normalized as for the model"
                ) from exc
        finally:
            for hooks, hook_id in added:
                hooks.pop(hook_id, None)
    return _ForwardRecord(output, calls, ended)


# ---------------------------------------------------------------- the rules, on a record
def _auxiliary(name: str) -> bool:
    """Whether a layer belongs to an auxiliary head (a path component starting with "aux")."""
    return any(part.lower().startswith("aux") for part in name.split("."))


def _is_map(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4


def _area(t: torch.Tensor) -> int:
    return int(t.shape[-2]) * int(t.shape[-1])


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors in a model output: a tensor, or tuples, lists and dicts of them."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)


def _pair(v: Any) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _is_patch_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` whose kernel equals its stride, > 1: it cuts the image into patches."""
    if not isinstance(m, nn.Conv2d):
        return False
    k, s = _pair(m.kernel_size), _pair(m.stride)
    return k == s and all(v > 1 for v in k)


def _is_pointwise(m: nn.Conv2d) -> bool:
    return _pair(m.kernel_size) == (1, 1) and m.groups == 1


def _is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels


def _patch_embedding(spatial: list[_Call]) -> _Call | None:
    """The patch-embedding call when it is the model's only spatial layer (see
    :func:`patch_embedding_only`), else None."""
    convs = [c for c in spatial if isinstance(c.module, nn.Conv2d)]
    if len(convs) != 1 or not _is_patch_conv(convs[0].module):
        return None
    p = convs[0]
    for c in spatial:
        # before it: preprocessing (a normalization layer); after it: only wrappers that return
        # the conv's very output
        if c is not p and not (c.end < p.start or c.output is p.output):
            return None
    return p


def _optimizer_candidates(layers: list[_Call]) -> list[_Call]:
    """The convolutions OIP picks from (rule in :func:`optimizer_layer`), in execution order."""
    convs = [c for c in layers if isinstance(c.module, nn.Conv2d) and _is_map(c.output) and _area(c.output) > 1]
    main = [c for c in convs if not _auxiliary(c.name)]  # not in an auxiliary head
    convs = main or convs
    # shortcut-like convs: 1x1 (groups 1) convs that share their input tensor with another conv
    by_input: dict[int, list[_Call]] = {}
    for c in convs:
        if c.args and isinstance(c.args[0], torch.Tensor):
            by_input.setdefault(id(c.args[0]), []).append(c)
    dropped: set[int] = set()
    for group in by_input.values():
        if len(group) < 2:
            continue
        pointwise = [c for c in group if _is_pointwise(c.module)]
        if len(pointwise) == len(group):
            pointwise = pointwise[1:]  # all 1x1 (a bottleneck's reduce and its shortcut): keep the first
        dropped.update(id(c) for c in pointwise)
    convs = [c for c in convs if id(c) not in dropped]
    dense = [c for c in convs if not _is_depthwise(c.module)]
    return dense if dense else convs


def _classifier(rec: _ForwardRecord) -> _Call | None:
    """The call of the last ``nn.Linear`` whose output is (part of) the model's output or feeds
    it through other layers (tensor identity, from the output backwards); without one, the
    last ``nn.Linear`` call to finish; None when no ``nn.Linear`` ran."""
    linears = [c for c in rec.ended if isinstance(c.module, nn.Linear)]
    if not linears:
        return None
    # tensors that reach the output through layers; the record keeps them all alive, so ids are unique
    live = {id(t) for t in _tensors(rec.output)}
    for c in reversed(rec.ended):  # a consumer finishes after what it consumes
        if isinstance(c.output, torch.Tensor) and id(c.output) in live:
            if isinstance(c.module, nn.Linear):
                return c
            live.update(id(a) for a in c.args if isinstance(a, torch.Tensor))
    return linears[-1]


def _pool_of(t: Any) -> str:
    return "avg" if _is_map(t) and _area(t) > 1 else "flatten"


def _feature(rec: _ForwardRecord, first: dict[str, _Call], spatial: list[_Call]) -> tuple[str | None, str | None]:
    """``(layer, pool)`` of t-SNE's default (rule in :func:`feature_layer`)."""
    linear = _classifier(rec)
    if linear is not None and linear.args:
        wanted = linear.args[0]
        for c in reversed(rec.ended):
            if (c.end < linear.start and c.output is wanted and first[c.name] is c
                    and not isinstance(c.module, CONTAINERS)):
                return c.name, _pool_of(c.output)
    main = [c for c in spatial if not _auxiliary(c.name)] or spatial  # not an auxiliary head
    if main:
        return main[-1].name, _pool_of(main[-1].output)
    return None, None


def _defaults(rec: _ForwardRecord) -> tuple[dict[str, str | None], list[_Call]]:
    """The defaults of :func:`view_defaults` from one record, and the spatial layers' calls."""
    first = rec.first_calls()
    layers = [c for c in first.values() if not isinstance(c.module, CONTAINERS)]
    spatial = [c for c in layers if _is_map(c.output)]
    patch = _patch_embedding(spatial)
    cam = optimizer = None
    if patch is None:
        # Grad-CAM reads a layer's last call: the last call to finish with a spatial output
        # (a ReLU module reused through the network counts where it ran last), not in an
        # auxiliary head (a module named aux*, as torchvision names them: a segmentation net's
        # aux_classifier runs in eval but does not feed the main output)
        cam = next((c.name for c in reversed(rec.ended)
                    if not isinstance(c.module, CONTAINERS) and _is_map(c.output) and _area(c.output) > 1
                    and not _auxiliary(c.name)), None)
        candidates = _optimizer_candidates(layers)
        if candidates:
            optimizer = candidates[(2 * (len(candidates) - 1) + 1) // 3].name  # round(2/3 (n - 1))
    feature, pool = _feature(rec, first, spatial)
    return {
        "activation": spatial[0].name if spatial else None,
        "cam": cam,
        "optimizer": optimizer,
        "feature": feature,
        "feature_pool": pool,
        "patch_embedding": None if patch is None else patch.name,
    }, spatial


#: Per model: (its structure signature, input C x H x W and dtype) -> (defaults, hint). The
#: views of one model (and Grad-CAM without ``layer=``) ask for the same defaults; the pass is
#: run once per model structure and input shape, and again after the model changed.
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[dict[str, str | None], str]]] = (
    weakref.WeakKeyDictionary())
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8  # input shapes kept per model


def _describe_calls(rec: _ForwardRecord) -> dict[str, str]:
    """Each layer that ran: its type and its first output's shape without the batch dimension,
    e.g. ``"Conv2d 16x14x14"`` (``"ReLU 16x14x14"``, ``"Linear 10"``, ``"GoogLeNetOutputs"``)."""
    out = {}
    for name, c in rec.first_calls().items():
        kind = type(c.module).__name__
        shape = tuple(c.output.shape[1:]) if isinstance(c.output, torch.Tensor) else None
        out[name] = f"{kind} {'x'.join(map(str, shape))}" if shape else kind
    return out


def _analyse(model: nn.Module, x: Any, labels: bool = False):
    """``(view_defaults, a hint listing the spatial layers)``, from a recorded pass or the cache;
    with ``labels``, also :func:`_describe_calls` of the same pass."""
    from .runner import _signature, origin_of

    owner = origin_of(unwrap_model(model)[0])
    key = None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.dtype != torch.uint8:
        key = (_signature(owner), tuple(x.shape[1:]), x.dtype)
        with _CACHE_LOCK:
            hit = _CACHE.get(owner, {}).get(key)
        if hit is not None:
            return (dict(hit[0]), hit[1], dict(hit[2])) if labels else (dict(hit[0]), hit[1])
    rec = _record_forward(model, x)
    d, spatial = _defaults(rec)
    hint = _spatial_hint(spatial)
    described = _describe_calls(rec)
    if key is not None:
        with _CACHE_LOCK:
            entries = _CACHE.setdefault(owner, {})
            if len(entries) >= _CACHE_SIZE:
                entries.pop(next(iter(entries)))
            entries[key] = (dict(d), hint, dict(described))
    return (d, hint, described) if labels else (d, hint)


def _spatial_hint(spatial: list[_Call]) -> str:
    if not spatial:
        return "no layer outputs a 4-D tensor for this input"
    shown = ", ".join(f"{c.name!r} {tuple(c.output.shape)}" for c in spatial[-8:])
    more = f" (the last 8 of {len(spatial)})" if len(spatial) > 8 else ""
    return f"the layers with a 4-D output are{more}: {shown}"


# ---------------------------------------------------------------- the public defaults
def view_defaults(model: nn.Module, x: Any) -> dict[str, str | None]:
    """The default layer of every view, from one forward pass of ``model`` on ``x``.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch the model takes, e.g. one image 1 x C x H x W: a tensor is used as it
        is (moved to the model's device), anything else goes through
        :func:`~cnnwidgets.core.as_batch` (a uint8 N x H x W x C array, ...).

    Returns
    -------
    dict
        ``"activation"``: the first non-container layer to run with a 4-D output
        (ActivationExplorer); ``"cam"``: :func:`cam_layer`'s answer; ``"optimizer"``:
        :func:`optimizer_layer`'s; ``"feature"`` and ``"feature_pool"``: :func:`feature_layer`'s;
        ``"patch_embedding"``: :func:`patch_embedding_only`'s. A default that does not exist is
        None (no 4-D layer, no convolution, ...): here that is no error, the single functions
        raise instead. For a model whose only spatial layer is a patch embedding, ``"cam"`` and
        ``"optimizer"`` are None: show :func:`not_a_cnn_notice` instead.

    Raises
    ------
    ValueError
        If the forward pass raises (the message names the exception).

    Notes
    -----
    The answer for a tensor ``x`` is kept per model, structure (as the private view's
    signature: a replaced layer or parameter counts) and image size C x H x W: the views of one
    model, and Grad-CAM without ``layer=``, share it. One pass under ``torch.no_grad()`` on the
    private view of the model
    (:func:`~cnnwidgets.core.runner.using_model`, eval mode), with a hook on every layer that
    records the order in which the layers run, the output of their first call and which tensor
    each layer got and gave; the hooks never touch the user's model, and are removed after the
    pass (also after an error). The output may be a tensor, tuple or dict: its structure is
    not used.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ...                     nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(16, 10))
    >>> view_defaults(net, torch.zeros(1, 3, 16, 16))  # doctest: +NORMALIZE_WHITESPACE
    {'activation': '0', 'cam': '4', 'optimizer': '3', 'feature': '6', 'feature_pool': 'flatten',
     'patch_embedding': None}
    """
    return _analyse(model, x)[0]


def layer_labels(model: nn.Module, x: Any, names: Any = None) -> dict[str, str]:
    """What a layer picker shows beside each layer name: its type and output shape for ``x``.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch, as for :func:`view_defaults` (whose recorded pass and cache this
        shares: asking for both runs the model once).
    names : sequence of str, optional
        The layers to label (default: every layer that ran). A layer that did not run for ``x``
        gets its type alone.

    Returns
    -------
    dict
        ``{name: "Conv2d 16x14x14"}``: the module's class and its first output without the
        batch dimension (a non-tensor output gives the class alone).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    >>> layer_labels(net, torch.zeros(1, 1, 8, 8))
    {'0': 'Conv2d 4x6x6', '1': 'ReLU 4x6x6', '2': 'MaxPool2d 4x3x3'}
    """
    described = _analyse(model, x, labels=True)[2]
    if names is None:
        return described
    modules = dict(unwrap_model(model)[0].named_modules())
    return {n: described.get(n, type(modules[n]).__name__ if n in modules else "") for n in names}


def cam_layer(model: nn.Module, x: Any) -> str:
    """Grad-CAM's default layer: the last layer to run whose output is a feature map with more
    than one position.

    Rule: among the layers that ran for ``x``, in execution order (order of their first calls;
    layers that never run, such as a GoogLeNet's auxiliary heads in eval mode, do not count),
    plain containers (:data:`CONTAINERS`) left out, the last one whose first call outputs a 4-D
    tensor N x C x h x w with h*w > 1. On a torchvision ResNet at 224 x 224 that is the last
    block, ``"layer4.1"`` (a BasicBlock: the block's output, after the residual sum and its
    ReLU); on a VGG the last layer before the spatial size drops to 1 x 1 (its last max pool,
    or its ``avgpool`` when that keeps a 7 x 7 map).

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch, as in :func:`view_defaults`.

    Returns
    -------
    str
        Qualified layer name.

    Raises
    ------
    ValueError
        If no layer has such an output (the message lists the 4-D layers and says to pass
        ``layer=``), if the model's only spatial layer is a patch embedding (the message is
        :func:`not_a_cnn_notice`), or if the forward pass raises.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ...                     nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(16, 10))
    >>> cam_layer(net, torch.zeros(1, 3, 16, 16))  # '5' is 1 x 1
    '4'
    """
    d, hint = _analyse(model, x)
    if d["cam"] is not None:
        return d["cam"]
    if d["patch_embedding"] is not None:
        raise ValueError(not_a_cnn_notice(d["patch_embedding"]))
    raise ValueError(
        "Grad-CAM needs a layer whose output is a feature map N x C x h x w with h*w > 1, and "
        f"the model has none for this input ({hint}). Hint: pass layer=... "
        "explicitly, or use an input large enough to keep a spatial map."
    )


def optimizer_layer(model: nn.Module, x: Any) -> str:
    """OIP's default layer: a convolution two thirds of the way into the network.

    Rule: take the ``nn.Conv2d`` layers that ran for ``x``, in execution order (first calls),
    and leave out

    * convolutions whose output is 1 x 1 (or not 4-D): the squeeze-and-excitation convs;
    * shortcut-like convolutions: a 1x1 conv (``groups=1``) whose input tensor is also the
      input of another convolution (a residual block's ``downsample``); when all the convs
      sharing that input are 1x1, the first to run is kept (a bottleneck's ``conv1``);
    * depthwise convolutions (``groups == in_channels > 1``), unless nothing else is left.

    Of the n left, pick the one at position ``round(2/3 * (n - 1))``, counting from 0: the
    first of one, the second of two, the third of four, position 11 (the twelfth) of 17.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch, as in :func:`view_defaults`.

    Returns
    -------
    str
        Qualified name of an ``nn.Conv2d``.

    Raises
    ------
    ValueError
        If no convolution is left (pass ``layer=``), if the model's only spatial layer is a
        patch embedding (the message is :func:`not_a_cnn_notice`), or if the forward pass raises.

    Examples
    --------
    >>> net = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(4)])
    >>> optimizer_layer(net, torch.zeros(1, 2, 8, 8))  # position round(2/3 * 3) = 2
    '2'
    """
    d, hint = _analyse(model, x)
    if d["optimizer"] is not None:
        return d["optimizer"]
    if d["patch_embedding"] is not None:
        raise ValueError(not_a_cnn_notice(d["patch_embedding"]))
    raise ValueError(
        "no nn.Conv2d with a spatial output (h*w > 1) ran for this input, so OIP has no default "
        f"layer ({hint}). Hint: pass layer=... explicitly."
    )


def feature_layer(model: nn.Module, x: Any) -> tuple[str, str]:
    """t-SNE's default: ``(layer, pool)`` giving the penultimate feature vector, the input of
    the classifier.

    Rule: the classifier is the last ``nn.Linear`` that ran whose output is the model's output
    (or one of the tensors in a tuple/dict output) or feeds it through other layers; when
    functional operations hide that, the last ``nn.Linear`` to run. The layer is the last one
    (plain containers left out) whose first call output *is* that Linear's input tensor; the
    pool is ``"flatten"`` when its output is N x D or N x C x 1 x 1 (``"avg"`` for a 4-D map
    with h*w > 1). When no layer outputs that tensor (the classifier's input comes from a
    functional op: ``torch.flatten(self.avgpool(x), 1)`` in a ResNet,
    ``F.adaptive_avg_pool2d(F.relu(features))`` in a DenseNet) or no ``nn.Linear`` ran (a
    fully convolutional net): the last non-container layer with a 4-D output, with ``"avg"``
    (its global average; ``"flatten"`` when it is 1 x 1 already, the same values). On a
    torchvision ResNet: ``("avgpool", "flatten")``; on a DenseNet: ``("features.norm5", "avg")``.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch, as in :func:`view_defaults`.

    Returns
    -------
    layer : str
        Qualified layer name, for :func:`~cnnwidgets.core.extract_features`.
    pool : {"flatten", "avg"}
        Its ``pool`` argument.

    Raises
    ------
    ValueError
        If neither rule finds a layer (pass ``layer=`` and ``pool=``), or the forward pass raises.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))
    >>> feature_layer(net, torch.zeros(1, 3, 8, 8))
    ('5', 'flatten')
    >>> feature_layer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), torch.zeros(1, 3, 8, 8))
    ('1', 'avg')
    """
    d, hint = _analyse(model, x)
    if d["feature"] is None or d["feature_pool"] is None:
        raise ValueError(
            "found no default feature layer: no layer outputs the input of the model's last "
            f"nn.Linear, and {hint}. Hint: pass layer=... and pool=... explicitly."
        )
    return d["feature"], d["feature_pool"]


def patch_embedding_only(model: nn.Module, x: Any) -> str | None:
    """The patch embedding of a vision transformer, or None for a model with feature maps.

    Rule: the model's non-container layers with a 4-D output for ``x`` include exactly one
    ``nn.Conv2d``, its ``kernel_size`` equals its ``stride`` (> 1: it cuts the image into
    patches), and nothing after it is spatial: every other 4-D layer either ran before it
    (preprocessing) or returns that conv's very output (a wrapper). Then its name is returned
    and the views show :func:`not_a_cnn_notice`; otherwise None (a ConvNeXt's patchify stem is
    followed by feature maps: None).

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor or numpy.ndarray
        An example batch, as in :func:`view_defaults`.

    Returns
    -------
    str or None

    Examples
    --------
    >>> vit_like = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(2), nn.Linear(16, 10))
    >>> patch_embedding_only(vit_like, torch.zeros(1, 3, 16, 16))
    '0'
    >>> patch_embedding_only(nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU()), torch.zeros(1, 3, 16, 16)) is None
    True
    """
    return _analyse(model, x)[0]["patch_embedding"]


def not_a_cnn_notice(layer: str) -> str:
    """The notice a view shows for a model whose only spatial layer is the patch embedding
    ``layer`` (:func:`patch_embedding_only`): what works on it and what does not.

    Examples
    --------
    >>> print(not_a_cnn_notice("patch_embed"))  # doctest: +ELLIPSIS
    This model looks like a vision transformer: its only layer with feature maps is the patch embedding 'patch_embed'...
    """
    return (
        "This model looks like a vision transformer: its only layer with feature maps is the patch "
        f"embedding {layer!r} (a convolution whose kernel equals its stride); every layer after it "
        "works on tokens, not on feature maps. What works: FilterGrid on the patch embedding's "
        f"kernels, the feature maps of {layer!r} itself, and gradients and attribution with "
        "respect to the input (vanilla gradient, gradient x input, SmoothGrad, integrated "
        "gradients). What does not: feature maps beyond the patch embedding, Grad-CAM, deconvnet "
        "and OIP on convolution layers (pass layer=... to choose a layer yourself)."
    )

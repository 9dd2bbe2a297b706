"""The model runner: a private view of the user's model, and running it to a layer.

Everything cnnwidgets computes goes through a **private view** of the user's model
(:func:`private_model`): the module objects are copied, the parameters and buffers are not
(each parameter of the view is an alias of the user's tensor, ``requires_grad`` off, sharing
its memory), so a training loop's updates show at once while the view's train/eval flags,
hooks, forward replacements and gradient settings are its own. One view per model and thread:
views running in different threads never see each other, and nothing a view does is visible
on the user's model. A model that cannot be viewed this way (a TorchScript module, lazy
parameters, a module whose ``__dict__`` refuses to be copied) is used itself, one job at a time,
under :func:`~cnnwidgets.core.model.preserved_state`; :func:`view_note` says why.

Running to a layer (:class:`LayerTap`: capture the output of some layers, stop the pass once
they have run) and the logits-only switch (:func:`logits_only`) are written here once and used
by every core function.

Everything here is plain PyTorch; no widget imports.
"""

from __future__ import annotations

import contextlib
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from torch.utils.hooks import RemovableHandle

from .model import (
    _MISSING,
    _add_hook,
    _ForwardSwitch,
    _named_layers_fast,
    _SavedState,
    caller_stacklevel,
    check_model,
    final_activation,
    get_layer,
    passthrough,
    preserved_state,
    replaced_forward,
    unwrap_model,
)
from .outputs import Head, OutputSelector, check_output, select_output

__all__ = [
    "LayerTap",
    "Scores",
    "StopForward",
    "capture_activations",
    "forward_errors",
    "logits_only",
    "origin_of",
    "private_model",
    "softmax_notice_off",
    "spatial_layers",
    "using_model",
    "view_note",
]

#: Marks a module tree built by :func:`private_model` (the key holds a weak reference to the
#: user's model it views).
_ORIGIN = "_cnnwidgets_origin"


class _CannotView(Exception):
    """The model cannot be given a private view; the message says why."""


def _weight_hook(hook: Any) -> bool:
    """Whether a forward pre-hook computes the module's weights (pruning, weight and spectral
    norm): those are part of the model's computation and are kept in the view."""
    from torch.nn.utils import prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return isinstance(hook, (prune.BasePruningMethod, WeightNorm, SpectralNorm))


_FORWARD_HOOK_DICTS = ("_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
_FORWARD_HOOK_EXTRAS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _alias(p: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter sharing ``p``'s memory, with its own ``requires_grad`` (off) and its own
    version counter (so the user's in-place updates never invalidate a view's graph)."""
    if p is None:
        return None
    if nn.parameter.is_lazy(p):
        raise _CannotView("it has uninitialized (lazy) parameters; run it once on an input first")
    return nn.Parameter(p.data, requires_grad=False)


def _build_view(model: nn.Module) -> nn.Module:
    """A copy of the module tree of ``model``: new module objects (eval mode, no hooks but the
    weight-computing ones), parameters aliased, buffers and other attributes shared."""
    memo: dict[int, nn.Module] = {}

    def copy_module(m: nn.Module) -> nn.Module:
        done = memo.get(id(m))
        if done is not None:
            return done
        if isinstance(m, (torch.jit.ScriptModule, torch.jit.RecursiveScriptModule)):
            raise _CannotView(f"it holds a TorchScript module ({type(m).__name__})")
        if getattr(type(m), "__slots__", None):
            raise _CannotView(f"{type(m).__name__} uses __slots__")
        new = object.__new__(type(m))
        memo[id(m)] = new
        try:
            d = dict(m.__dict__)
        except Exception as exc:  # noqa: BLE001 - a module that refuses: fall back, say why
            raise _CannotView(f"{type(m).__name__} cannot be copied ({exc})") from None
        d["_parameters"] = type(m._parameters)((k, _alias(p)) for k, p in m._parameters.items())
        d["_buffers"] = type(m._buffers)(m._buffers)
        d["_modules"] = type(m._modules)(
            (k, None if c is None else copy_module(c)) for k, c in m._modules.items()
        )
        d["training"] = False
        # hooks: none of the user's, except those that compute the weights
        for name in _FORWARD_HOOK_DICTS:
            if name in d:
                d[name] = type(d[name])()
        for name in _FORWARD_HOOK_EXTRAS:
            if name in d:
                d[name] = type(d[name])()
        if "_forward_pre_hooks" in d:
            kept = type(d["_forward_pre_hooks"])(
                (k, h) for k, h in d["_forward_pre_hooks"].items() if _weight_hook(h)
            )
            d["_forward_pre_hooks"] = kept
            if "_forward_pre_hooks_with_kwargs" in d:
                d["_forward_pre_hooks_with_kwargs"] = type(d["_forward_pre_hooks_with_kwargs"])(
                    (k, v) for k, v in d["_forward_pre_hooks_with_kwargs"].items() if k in kept
                )
        if d.get("_compiled_call_impl") is not None:  # module.compile(): run it eagerly
            d["_compiled_call_impl"] = None
        fwd = d.get("forward", _MISSING)
        if isinstance(fwd, _ForwardSwitch):  # a replacement of ours on the shared model
            if fwd.before is _MISSING:
                del d["forward"]
            else:
                d["forward"] = fwd.before
        # methods bound to the original (``self.forward = self.other``) are bound to the copy
        for k, v in d.items():
            if isinstance(v, types.MethodType) and v.__self__ is m:
                d[k] = types.MethodType(v.__func__, new)
        new.__dict__.update(d)
        if type(m).__name__ == "OptimizedModule" and "_orig_mod" in d["_modules"]:
            inner = d["_modules"]["_orig_mod"]  # torch.compile: the view runs the module eagerly
            new.__dict__["forward"] = inner.__call__
        return new

    view = copy_module(model)
    view.__dict__[_ORIGIN] = weakref.ref(model)
    return view


def _signature(model: nn.Module) -> tuple:
    """What a view depends on: the module tree, the parameter tensors (object, memory, dtype)
    and the buffer objects. A change means the view is rebuilt (``model.to(...)``,
    ``load_state_dict(..., assign=True)``, a replaced layer)."""
    sig: list = []
    stack = [model]
    seen = {id(model)}
    while stack:
        m = stack.pop()
        ps = m._parameters
        sig.append(id(m))
        if ps:
            for p in ps.values():
                if p is None:
                    sig.append(None)
                else:
                    sig.append((id(p), 0) if nn.parameter.is_lazy(p) else (id(p), p.data_ptr(), p.dtype, p.shape))
        bs = m._buffers
        if bs:
            sig.extend(map(id, bs.values()))
        sig.append(id(m.__dict__.get("forward")))
        for c in m._modules.values():
            sig.append(id(c))
            if c is not None and id(c) not in seen:
                seen.add(id(c))
                stack.append(c)
    return tuple(sig)


class _View:
    """One thread's view of one model, rebuilt when the model changed under it."""

    __slots__ = ("module", "reason", "sig")

    def __init__(self, model: nn.Module) -> None:
        self.module: nn.Module | None = None
        self.reason: str | None = None
        self.sig: tuple | None = None
        self.build(model)

    def build(self, model: nn.Module) -> None:
        for _attempt in range(3):
            try:
                sig = _signature(model)
                self.sig = sig  # also on failure: a change (lazy parameters initialized) retries
                self.module = _build_view(model)
                self.reason = None
                return
            except _CannotView as exc:
                self.module = None
                self.reason = str(exc)
                return
            except RuntimeError as exc:
                if "changed size during iteration" in str(exc):  # changed meanwhile by another thread
                    continue
                self.module, self.reason, self.sig = None, f"copying it failed ({exc})", None
                return
        self.module, self.reason, self.sig = None, "it kept changing while being copied", None

    def current(self, model: nn.Module) -> nn.Module | None:
        if self.sig is not None and _signature(model) != self.sig:
            self.build(model)
        return self.module


_VIEWS: weakref.WeakKeyDictionary[nn.Module, dict[int, _View]] = weakref.WeakKeyDictionary()
_SHARED_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_VIEWS_LOCK = threading.Lock()


def _view(model: nn.Module) -> _View:
    me = threading.get_ident()
    with _VIEWS_LOCK:
        views = _VIEWS.get(model)
        v = views.get(me) if views is not None else None
    if v is None:
        v = _View(model)
        with _VIEWS_LOCK:
            views = _VIEWS.setdefault(model, {})
            alive = {t.ident for t in threading.enumerate()}
            for tid in [t for t in views if t not in alive]:  # threads that ended
                del views[tid]
            views[me] = v
    return v


def _is_view(model: nn.Module) -> bool:
    return _ORIGIN in model.__dict__


def private_model(model: nn.Module) -> nn.Module:
    """This thread's private view of ``model`` (see the module docstring), or ``model`` itself
    when it cannot have one (:func:`view_note` says why).

    Built on first use per model and thread, and again when the user changed the model's
    structure or replaced its parameters; a view passed in is returned as is.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).train()
    >>> view = private_model(net)
    >>> view is net, view.training, net.training, view[0].weight.data_ptr() == net[0].weight.data_ptr()
    (False, False, True, True)
    """
    model = unwrap_model(model)[0]
    if _is_view(model):
        return model
    m = _view(model).current(model)
    return model if m is None else m


def view_note(model: nn.Module) -> str | None:
    """None when cnnwidgets works on a private view of ``model``; else a sentence saying that
    it works on the model itself, and why."""
    model = unwrap_model(model)[0]
    if _is_view(model):
        return None
    v = _view(model)
    v.current(model)
    if v.reason is None:
        return None
    return (
        f"cnnwidgets cannot give this model a private view ({v.reason}): it works on the model itself, "
        "one job at a time, and restores its modes and hooks after each use."
    )


def origin_of(model: nn.Module) -> nn.Module:
    """The user's model behind a private view (the model itself otherwise): the key for
    per-model memory such as layout fallbacks."""
    ref = model.__dict__.get(_ORIGIN)
    origin = ref() if ref is not None else None
    return origin if origin is not None else model


@contextlib.contextmanager
def using_model(model: nn.Module, *, eval: bool = True) -> Iterator[nn.Module]:
    """Within the block, the module to run: this thread's private view of ``model``, or, for a
    model that cannot have one, the model itself, held by one thread at a time and under
    :func:`~cnnwidgets.core.model.preserved_state` (modes, ``requires_grad`` flags and hooks
    restored on exit)."""
    model = unwrap_model(model)[0]
    m = private_model(model)
    if m is not model or _is_view(model):
        yield m
        return
    with _VIEWS_LOCK:
        lock = _SHARED_LOCKS.get(model)
        if lock is None:
            lock = _SHARED_LOCKS[model] = threading.RLock()
    with lock, preserved_state(model, eval=eval):
        yield model


# ---------------------------------------------------------------- errors of a forward pass
#: Fragments of PyTorch's messages for an input smaller than the network's downsampling allows.
_TOO_SMALL = ("too small", "kernel size can't be greater", "calculated padded input size",
              "output size is too small", "non-positive", "cannot be smaller")


def forward_error(exc: Exception, x: Any, model: nn.Module | None = None) -> ValueError | None:
    """A ValueError naming the real cause of ``exc``, raised by a forward pass on ``x``, when it
    is one users meet (input too small for the network, wrong channel count, dtype mismatch);
    None for other errors."""
    if not isinstance(exc, RuntimeError) or not isinstance(x, torch.Tensor) or x.dim() < 3:
        return None
    msg = str(exc)
    low = msg.lower()
    size = " x ".join(str(s) for s in x.shape[1:])
    if any(f in low for f in _TOO_SMALL):
        return ValueError(
            f"the input images ({size}) are too small for this network: after its downsampling (strides and "
            f"pooling) a layer's input became smaller than its kernel. Use larger images, e.g. the size the "
            f"model was trained on. (PyTorch said: {msg.splitlines()[0]})"
        )
    if "channels" in low and "expected" in low:
        return ValueError(
            f"the input images have {x.shape[1]} channel(s) ({size}), which the network's first layer does not "
            f"take. (PyTorch said: {msg.splitlines()[0]})"
        )
    if ("dtype" in low or "type" in low) and ("same" in low or "expected" in low):
        dtype = None
        if model is not None:
            from .model import model_dtype

            dtype = model_dtype(model)
        return ValueError(
            f"the input is {x.dtype} but the model computes in {dtype or 'another dtype'}; cast the images "
            f"(x.to({dtype or 'model dtype'})). (PyTorch said: {msg.splitlines()[0]})"
        )
    return None


@contextlib.contextmanager
def forward_errors(x: Any, model: nn.Module | None = None) -> Iterator[None]:
    """Within the block, RuntimeErrors that :func:`forward_error` recognizes become its
    ValueError (the original chained)."""
    try:
        yield
    except RuntimeError as exc:
        better = forward_error(exc, x, model)
        if better is None:
            raise
        raise better from exc


# ---------------------------------------------------------------- running to a layer
class StopForward(Exception):
    """Raised from a forward hook to end the pass once every layer it needs has run."""


def _shape_of(out: Any) -> Any:
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


class LayerTap:
    """Forward hooks that keep the output of some layers of a model; the pass stops as soon
    as all of them have run, unless the model's output is needed.

    Parameters
    ----------
    model : nn.Module
        The module to run: a private view (:func:`using_model`) or a model under
        :func:`~cnnwidgets.core.model.preserved_state`.
    layers : str or sequence of str
        Qualified names (unknown names raise a ValueError listing the valid ones).
    call : int
        For a module called several times in one pass, which call to keep (0 = first;
        negative counts from the end, which means running the whole pass).
    need_output : bool
        Run the whole pass and return the model's output (else it stops after the layers).
    leaf : bool
        Each kept output (with a negative ``call``: each output of the layer) is replaced, for
        the rest of the pass, by a copy of a new leaf tensor that requires grad (the kept
        tensor): gradients of the output with respect to the layer's activations.
    check : callable, optional
        ``check(name, output)`` raises a ValueError for an output the caller cannot use (it
        runs inside the pass, so a wrong layer costs no more than its part of the pass).

    Outputs kept while the pass goes on are copies, so later in-place operations cannot change
    them. Only the thread that built the tap is observed. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        *,
        call: int = 0,
        need_output: bool = False,
        leaf: bool = False,
        check: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.model = model
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        self.layers = names
        self.call = call
        self.need_output = need_output or call < 0
        self.leaf = leaf
        self.check = check
        self.owner = threading.get_ident()
        self.acts: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, list[Any]] = {}
        self._added: list[tuple[dict, int]] = []
        for name in names:
            hooks = get_layer(model, name)._forward_hooks
            self._added.append((hooks, _add_hook(hooks, self._make_hook(name))))

    def _make_hook(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
            if threading.get_ident() != self.owner:
                return None
            n = self._counts.get(name, 0)
            self._counts[name] = n + 1
            if self.call < 0:  # counted from the end: keep the last -call outputs (copies)
                if self.check is not None:
                    self.check(name, out)
                last = self._last.setdefault(name, [])
                replace = None
                if self.leaf and isinstance(out, torch.Tensor):
                    kept = out.detach().clone().requires_grad_(True)
                    replace = kept.clone()
                else:
                    kept = out.clone() if isinstance(out, torch.Tensor) else out
                last.append(kept)
                if len(last) > -self.call:
                    del last[0]
                return replace
            if n != self.call:
                return None
            if self.check is not None:
                self.check(name, out)
            if self.leaf and isinstance(out, torch.Tensor):
                leaf = out.detach().clone().requires_grad_(True)
                self.acts[name] = leaf
                return leaf.clone()  # non-leaf: in-place operations downstream are allowed
            self.acts[name] = out
            if not self.need_output and len(self.acts) == len(self.layers):
                raise StopForward
            if isinstance(out, torch.Tensor):
                # the pass goes on: keep a copy that later in-place operations cannot change
                self.acts[name] = out.clone()
            return None

        return hook

    def run(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run the model; returns ``(output or None if the pass stopped early, outputs by layer)``.

        Raises a ValueError when a layer did not run (or ran fewer than ``call + 1`` times).
        """
        self.acts = {}
        self._counts = {}
        self._last = {}
        out = None
        try:
            with forward_errors(args[0] if args else None, self.model):
                out = self.model(*args, **kwargs)
        except StopForward:
            pass
        for name, last in self._last.items():
            if len(last) == -self.call:
                self.acts[name] = last[0]
        self._last = {}
        missing = [n for n in self.layers if n not in self.acts]
        if missing:
            ran = {n: self._counts.get(n, 0) for n in missing}
            if all(v == 0 for v in ran.values()):
                names = ", ".join(repr(n) for n in missing)
                raise ValueError(f"layer {names} did not run during the forward pass")
            detail = ", ".join(f"layer {n!r} ran {c} time(s)" for n, c in ran.items())
            raise ValueError(f"call={self.call} is out of range: {detail} in the forward pass")
        acts, self.acts = self.acts, {}
        return out, acts

    def close(self) -> None:
        for hooks, hook_id in self._added:
            hooks.pop(hook_id, None)
        self._added = []

    def __enter__(self) -> LayerTap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def require_4d(name: str, out: Any) -> None:
    """A :class:`LayerTap` ``check``: the layer must output a feature map N x K x h x w."""
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ValueError(
            f"layer {name!r} must output a 4-D feature map (N x K x h x w), its output has shape {_shape_of(out)}"
        )


def require_tensor(name: str, out: Any) -> None:
    """A :class:`LayerTap` ``check``: the layer must output a tensor."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"layer {name!r} outputs a {type(out).__name__}, not a tensor; pick a layer with a tensor output")


# ---------------------------------------------------------------- capturing several layers
#: Per model, the layers whose captured output a functional in-place operation (such as a
#: ResNet block's ``out += identity``) changed later in an earlier pass: from then on their
#: outputs are copied as they are captured, so the fallback pass is not needed again.
_COPY_AT_CAPTURE: weakref.WeakKeyDictionary[nn.Module, frozenset[str]] = weakref.WeakKeyDictionary()
_COPY_LOCK = threading.Lock()


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _capture_pass(
    model: nn.Module,
    x: torch.Tensor,
    modules: dict[str, nn.Module],
    names: list[str],
    call: int,
    callbacks: dict[str, Callable[[torch.Tensor], None]],
    copy: frozenset[str] | bool,
) -> tuple[Any, dict[str, torch.Tensor], list[str], set[str]]:
    """One forward pass with hooks on ``names``.

    ``copy`` is True (copy every captured output) or the names of the layers whose outputs
    are copied as captured; the other outputs are kept as they are, and copied only right
    before an in-place module (``inplace=True``) overwrites them.

    Returns the model's output, the selected output of each layer that ran (in execution
    order), the layers whose selected output was changed in place after capture (they must
    be captured again with a copy), and the layers whose callback has been called.
    """
    owner = threading.get_ident()
    entries: dict[str, list[list]] = {n: [] for n in names}  # [tensor, version or None if ours]
    counts = dict.fromkeys(names, 0)
    fired: list[str] = []  # execution order
    called: set[str] = set()
    in_callback = [False]  # hooks ignore passes a callback itself runs
    inplace = [] if copy is True else [m for m in modules.values() if m.__dict__.get("inplace") is True]
    # storage address -> entries that hold that storage without a copy (only needed when an
    # in-place module may overwrite them)
    shared: dict[int, list[list]] | None = {} if inplace else None
    keep_last = -call if call < 0 else 0

    def make_hook(name: str):
        lst = entries[name]
        callback = callbacks.get(name)
        copy_this = copy is True or name in copy

        def hook(_module, _inp, out):
            if not isinstance(out, torch.Tensor) or in_callback[0] or threading.get_ident() != owner:
                return
            n = counts[name]
            if 0 <= call < n:
                return  # the call to keep has been captured already
            counts[name] = n + 1
            if n == 0:
                fired.append(name)
            t = out.detach()
            entry = None
            if not copy_this:
                try:
                    entry = [t, t._version]
                    if shared is not None:
                        shared.setdefault(_storage_key(t), []).append(entry)
                except RuntimeError:  # an inference tensor (no version counter) or no storage
                    entry = None
            if entry is None:
                t = t.clone()
                entry = [t, None]
            lst.append(entry)
            if keep_last and len(lst) > keep_last:
                del lst[0]
            if callback is not None and n == call:
                called.add(name)
                in_callback[0] = True
                try:
                    callback(t)
                finally:
                    in_callback[0] = False

        return hook

    def before_inplace(_module, args):
        # an in-place module is about to overwrite its input: copy the captured outputs that
        # share its storage first
        if in_callback[0] or threading.get_ident() != owner:
            return
        for a in args:
            if isinstance(a, torch.Tensor):
                try:
                    held = shared.pop(_storage_key(a), None)
                except RuntimeError:
                    continue
                for entry in held or ():
                    t, version = entry
                    if version is not None and t._version == version:  # else: found after the pass
                        entry[0] = t.clone()
                        entry[1] = None

    # as preserved_state(model), with the list of modules already at hand
    saved = _SavedState(model, [model, *modules.values()])
    added: list[tuple[dict, int]] = []
    try:
        saved.eval()
        with torch.no_grad():
            for n in names:
                d = modules[n]._forward_hooks
                added.append((d, _add_hook(d, make_hook(n))))
            for m in inplace:
                d = m._forward_pre_hooks
                added.append((d, _add_hook(d, before_inplace)))
            out = model(x)
    finally:
        # no other hook registered anywhere meanwhile (the ids are consecutive): removing
        # ours is enough; else look through the whole model, as preserved_state does
        alone = RemovableHandle.next_id == saved.first_hook + len(added)
        if alone:
            for d, hook_id in added:
                d.pop(hook_id, None)
        saved.restore(hooks=not alone)
    acts: dict[str, torch.Tensor] = {}
    modified: list[str] = []
    for n in fired:
        lst, count = entries[n], counts[n]
        if call >= 0:
            t, version = lst[call] if count > call else lst[-1]
        else:
            t, version = lst[0] if count >= -call else lst[-1]
        if version is not None and t._version != version:
            modified.append(n)
        acts[n] = t
    return out, acts, modified, called


def capture_activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str] | None = None,
    *,
    call: int = 0,
    on_output: dict[str, Callable[[torch.Tensor], None]] | None = None,
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
    on_output : dict of str to callable, optional
        ``{layer: fn}``: ``fn(output)`` is called once with the detached output of ``layer``
        (one of ``layers``) as soon as it is captured, while the rest of the forward pass is
        still to run (with ``call < 0``, or when the layer ran fewer times than ``call + 1``,
        after the pass). The tensor is the one this function returns: read it, do not modify
        it, and copy it to keep it beyond the call. The model's hooks are in place while
        ``fn`` runs; a forward pass that ``fn`` itself runs is not captured.

    Returns
    -------
    output : torch.Tensor
        The model's output (detached).
    acts : dict of str to torch.Tensor
        Detached tensor outputs by layer name, in the order the layers first ran; layers
        whose output is not a tensor, or that did not run, are absent.

    Notes
    -----
    Runs under ``torch.no_grad()`` on this thread's private view of the model
    (:func:`private_model`, in eval mode): nothing is visible on the model itself.

    The outputs are not copied as they are captured (copying every layer's output costs as
    much as a good part of the pass itself on large networks). Instead:

    * a module with ``inplace=True`` (``nn.ReLU(inplace=True)``, ...) gets a forward
      pre-hook that copies the captured outputs it is about to overwrite, right before it
      runs, so the pre-activation values stay as they were;
    * as a safety net for functional in-place operations inside a ``forward`` (a ResNet
      block's ``out += identity``, ``x.relu_()``), the version counter of every captured
      tensor is recorded at capture; if one changed by the end of the pass, the pass is run
      a second time copying every output as it is captured (the outputs are then exactly
      those of the first design, at the cost of a second pass), and those layers are
      remembered for ``model`` so that later calls copy just them at capture and need one
      pass again. ``on_output`` callbacks already called are not called again: they saw the
      output before anything changed it.

    Writes that bypass the version counter (through ``tensor.data``) are not detected. The
    returned tensors may share memory with each other (a layer that returns a view of its
    input, such as ``nn.Flatten``) and with the model's output: copy one before modifying it
    in place.
    """
    check_model(model)
    with using_model(model) as run:
        return _capture(run, x, layers, call, on_output)


def _capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str] | None,
    call: int,
    on_output: dict[str, Callable[[torch.Tensor], None]] | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    all_layers = _named_layers_fast(model)
    if isinstance(layers, str):
        layers = [layers]
    names = list(all_layers) if layers is None else list(dict.fromkeys(layers))
    for n in names:
        if n not in all_layers:
            get_layer(model, n)  # raises with the list of valid names
    callbacks: dict[str, Callable[[torch.Tensor], None]] = {}
    for n, fn in (on_output or {}).items():
        if n not in all_layers:
            get_layer(model, n)
        if n not in names:
            raise ValueError(f"on_output names layer {n!r}, which is not among the captured layers")
        if not callable(fn):
            raise TypeError(f"on_output[{n!r}] must be callable, got {type(fn).__name__}")
        callbacks[n] = fn
    key = origin_of(model)
    copy = _COPY_AT_CAPTURE.get(key, frozenset())
    with forward_errors(x, model):
        out, acts, modified, called = _capture_pass(model, x, all_layers, names, call, callbacks, copy)
    if modified:
        with _COPY_LOCK:
            _COPY_AT_CAPTURE[key] = _COPY_AT_CAPTURE.get(key, frozenset()) | frozenset(modified)
        rest = {n: fn for n, fn in callbacks.items() if n not in called}
        out, acts, _, more = _capture_pass(model, x, all_layers, names, call, rest, True)
        called |= more
    for n, fn in callbacks.items():
        if n not in called and n in acts:
            fn(acts[n])
    out = out.detach() if isinstance(out, torch.Tensor) else out
    return out, acts


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the layers whose output for ``x`` is 4-D (N x C x H x W), in execution order
    (plain containers, which repeat their last child's output, left out)."""
    from .layers import layers_with_output

    _, acts = capture_activations(model, x)
    return layers_with_output(model, acts, (4,))


# ---------------------------------------------------------------- logits only
_NOTICE = threading.local()


@contextlib.contextmanager
def softmax_notice_off() -> Iterator[None]:
    """Within the block, on this thread only, :func:`logits_only` does not warn (for views
    that tell the user themselves; ``warnings.catch_warnings`` is process-wide, not per thread)."""
    before = getattr(_NOTICE, "off", False)
    _NOTICE.off = True
    try:
        yield
    finally:
        _NOTICE.off = before


@contextlib.contextmanager
def logits_only(model: nn.Module, what: str | None = None) -> Iterator[None]:
    """Within the block a final Softmax, LogSoftmax or Sigmoid of ``model``
    (:func:`~cnnwidgets.core.model.final_activation`) passes its input through.

    With ``what`` (e.g. ``"attribution"``), a UserWarning says so, unless this thread is inside
    :func:`softmax_notice_off`.
    """
    last = final_activation(model)
    if last is None:
        yield
        return
    if what is not None and not getattr(_NOTICE, "off", False):
        warnings.warn(
            f"the model ends in {type(last).__name__}; {what} uses the logits before the "
            f"{'sigmoid' if isinstance(last, nn.Sigmoid) else 'softmax'} "
            "(the module is bypassed during the call)",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    with replaced_forward(last, passthrough):
        yield


# ---------------------------------------------------------------- class scores
class Scores:
    """The class scores of a model's output: the selected tensor (``output=``, see
    :func:`~cnnwidgets.core.outputs.select_output`) read by its
    :class:`~cnnwidgets.core.outputs.Head` (found on the first output seen).

    Run the model under :func:`logits_only` and pass what it returns: ``scores(out)`` is
    N x K and differentiable; ``scores.probabilities(out)`` is N x K float32 for display (the
    bypassed final activation applied once).

    Parameters
    ----------
    model : nn.Module
        The user's model (or its view): only its final activation module is looked at.
    output : int, str, callable or None
        Which part of a structured output holds the scores.
    region : box or mask, optional
        For segmentation outputs, the pixels a class score averages over
        (:func:`~cnnwidgets.core.outputs.region_mask`); all pixels by default.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(3, 1), nn.Sigmoid())
    >>> scores = Scores(net)
    >>> with logits_only(net):
    ...     out = net(torch.zeros(2, 3))
    >>> scores(out).shape, scores.head.kind, scores.head.final
    (torch.Size([2, 2]), 'binary', 'Sigmoid')
    """

    def __init__(self, model: nn.Module, output: OutputSelector = None, region: Any = None) -> None:
        self.output = check_output(output)
        self.region = region
        last = final_activation(model)  # bypassed by logits_only whatever the output selected
        self.final: str | None = None if last is None else type(last).__name__
        self.head: Head | None = None

    def select(self, out: Any) -> torch.Tensor:
        """The score tensor of ``out``; sets :attr:`head` on first use."""
        t = select_output(out, self.output)
        if self.head is None:
            self.head = Head.of(t, self.final)
        return t

    def __call__(self, out: Any) -> torch.Tensor:
        t = self.select(out)
        return self.head.scores(t, self.region)  # type: ignore[union-attr]

    def probabilities(self, out: Any) -> torch.Tensor:
        t = self.select(out)
        return self.head.probabilities(t)  # type: ignore[union-attr]

    @property
    def note(self) -> str | None:
        """What the view should say about the head (:attr:`Head.note`), once known."""
        return None if self.head is None else self.head.note

"""Shared plumbing for the anywidget classes: bundled front-end files and safe handlers."""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import os
import pathlib
import typing
from typing import Any

import anywidget
import ipywidgets
import traitlets

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"

log = logging.getLogger("cnnwidgets")


class InvalidValue(ValueError, traitlets.TraitError):
    """A trait value was rejected: a ValueError for users, a TraitError for traitlets (which
    then rolls the value back)."""


class InvalidType(TypeError, traitlets.TraitError):
    """A trait value of the wrong type was rejected (a bool where a number is expected): a
    TypeError for users, a TraitError for traitlets (which then rolls the value back)."""


def checked(validator):
    """Wrap a ``@validate`` body so that its ValueError becomes :class:`InvalidValue`."""

    @functools.wraps(validator)
    def wrapper(self, proposal):
        try:
            return validator(self, proposal)
        except (InvalidValue, InvalidType):
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidValue(str(exc)) from None

    return wrapper


def _listed(choices) -> str:
    names = [repr(c) for c in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class Choice(traitlets.Enum):
    """An ``Enum`` trait whose choices come from one of the core's ``Literal`` aliases (one list
    per choice, kept in the core), e.g. ``Choice(Normalize, "global")``. A value outside them is
    an :class:`InvalidValue` (a ValueError) that names every choice and what was given.

    >>> from cnnwidgets.core.filters import Normalize
    >>> Choice(Normalize, "global").values
    ('global', 'filter', 'tile')
    """

    def __init__(self, choices, default_value, **kwargs) -> None:
        values = typing.get_args(choices) if typing.get_origin(choices) is typing.Literal else tuple(choices)
        if not values:
            raise TypeError(f"Choice needs a Literal alias or a sequence of choices, got {choices!r}")
        if default_value not in values:
            raise ValueError(f"default {default_value!r} is not one of {_listed(values)}")
        super().__init__(values, default_value, **kwargs)
        self.values = tuple(values)

    def validate(self, obj, value):
        if value in self.values and not isinstance(value, bool):
            return value
        raise InvalidValue(f"{self.name} must be {_listed(self.values)}, got {_short_repr(value)}")


def one_of(proposal, choices: tuple[str, ...]) -> str:
    """The proposed value if it is one of ``choices``, else a ValueError that names them all
    (for ``@validate`` bodies wrapped in :func:`checked`)."""
    value = proposal["value"]
    if value not in choices:
        raise ValueError(f"{proposal['trait'].name} must be {_listed(choices)}, got {value!r}")
    return value


class Int(traitlets.Int):
    """``traitlets.Int`` that refuses bools (``True`` is an ``int`` to Python, and JSON
    ``true``/``false`` from the page arrive as bools): every Int trait of the views is one of
    these, so a bool never reaches the compute code as a channel, a class or a count."""

    def validate(self, obj, value):
        if isinstance(value, bool):
            what = f"{self.name} must be" if self.name else "each entry must be"
            raise InvalidType(f"{what} an int, got bool {value!r}. Hint: pass a number (0 or 1), not True/False")
        return super().validate(obj, value)


class Float(traitlets.Float):
    """``traitlets.Float`` that refuses bools (which it would turn into 0.0 or 1.0)."""

    def validate(self, obj, value):
        if isinstance(value, bool):
            what = f"{self.name} must be" if self.name else "each entry must be"
            raise InvalidType(f"{what} a number, got bool {value!r}. Hint: pass a number, not True/False")
        return super().validate(obj, value)


def bounded_int(value: Any, name: str, lo: int, hi: int, hint: str = "") -> int:
    """``value`` as an int in ``lo..hi``: a TypeError for a bool or a non-integer, a ValueError
    out of range; both name ``name``, the range and what was given (plus ``hint``)."""
    from ..core._validate import as_int

    v = as_int(value, name)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {v}" + (f". Hint: {hint}" if hint else ""))
    return v


def bounded_float(value: Any, name: str, lo: float, hi: float, hint: str = "", *, above: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``above``): a TypeError
    for a bool or a non-number, a ValueError for NaN, infinity or out of range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    v = float(value)
    low_ok = v > lo if above else v >= lo
    if not (math.isfinite(v) and low_ok and v <= hi):
        span = f"{'>' if above else '>='} {lo:g} and <= {hi:g}"
        raise ValueError(f"{name} must be a finite number {span}, got {v}" + (f". Hint: {hint}" if hint else ""))
    return v


def int_in(proposal, lo: int, hi: int, hint: str = "") -> int:
    """:func:`bounded_int` for a ``@validate`` body (wrapped in :func:`checked`)."""
    return bounded_int(proposal["value"], proposal["trait"].name, lo, hi, hint)


def float_in(proposal, lo: float, hi: float, hint: str = "", *, above: bool = False) -> float:
    """:func:`bounded_float` for a ``@validate`` body (wrapped in :func:`checked`)."""
    return bounded_float(proposal["value"], proposal["trait"].name, lo, hi, hint, above=above)


#: Largest label value: labels reach the page as int16 codes.
MAX_LABEL = 32767


def check_labels(labels: Any) -> Any:
    """``labels`` (a sequence, array or tensor of class indices), checked: integers (not
    floats, bools or strings) in ``0..MAX_LABEL``; returned as an int64 numpy array, or None.

    Raises
    ------
    TypeError
        For a non-integer dtype (float labels would be truncated, NaN would become a huge
        negative number), with a hint to cast.
    ValueError
        For a label out of range (the page draws labels as 16-bit codes).
    """
    if labels is None:
        return None
    import numpy as np
    import torch

    arr = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if arr.dtype == object and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr):
        values = [int(v) for v in arr]  # Python ints too large for int64
    elif arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"labels must be integer class indices, got dtype {arr.dtype}. Hint: cast them first, e.g. "
            "labels.astype(int) or labels.long() (after checking they are whole numbers, not NaN), "
            "or map class names to indices"
        )
    else:
        values = arr
    if len(values):
        lo, hi = (values.min(), values.max()) if isinstance(values, np.ndarray) else (min(values), max(values))
        if lo < 0 or hi > MAX_LABEL:
            raise ValueError(
                f"labels must be class indices in 0..{MAX_LABEL}, got {int(lo) if lo < 0 else int(hi)}. Hint: "
                "number the classes 0..K-1, e.g. codes = numpy.unique(labels, return_inverse=True)[1]"
            )
    return np.asarray(values, dtype=np.int64)


def _short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a page may send megabytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf: not valid JSON) replaced by None,
    inside dicts, lists and tuples too; bytes and other values are returned as they are."""
    if isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


#: The messages each view's page sends (``model.send({type, ...})``), by bundle name: one table,
#: read here and imported by js/src/lib/messages.js, so the two sides cannot drift.
MESSAGES: dict[str, tuple[str, ...]] = {
    k: tuple(v) for k, v in json.loads((pathlib.Path(__file__).with_name("messages.json")).read_text()).items()
}


def bundle(name: str) -> pathlib.Path:
    """Path of the built front-end module ``static/<name>.js``.

    Raises
    ------
    RuntimeError
        If the bundle has not been built (an install without the JS build step).
    """
    path = STATIC / f"{name}.js"
    if not path.exists():
        raise RuntimeError(
            f"front-end bundle {path} is missing. Hint: reinstall with `pip install -e .` "
            "(it runs `npm run build` in js/), or run `npm install && npm run build` in js/."
        )
    return path


STYLESHEET = STATIC / "cnnwidgets.css"


def bundle_css() -> pathlib.Path:
    """Path of the built stylesheet ``static/cnnwidgets.css`` (js/src/style.css), which every
    view loads through anywidget's ``_css``; a RuntimeError with the fix when it is missing."""
    if not STYLESHEET.exists():
        raise RuntimeError(
            f"front-end stylesheet {STYLESHEET} is missing. Hint: reinstall with `pip install -e .` "
            "(it runs `npm run build` in js/), or run `npm install && npm run build` in js/."
        )
    return STYLESHEET


def error_text(exc: BaseException) -> str:
    """An exception as a view shows it: the message of a ValueError (written for users), the
    type and message of anything else."""
    return str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"


def images_uint8(images: Any) -> Any:
    """Images B x C x H x W in [0, 1] (a tensor) as the page draws them: uint8 B x H x W x C."""
    import torch

    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def frontend_safe(method):
    """Decorate a handler of front-end events so that a bad event never raises in the kernel.

    The error is logged (and kept in ``self.last_error``) instead of raising a traceback.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - events from the page must never raise
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cnnwidgets: ignored a front-end event: %s", self.last_error)
            return None

    return wrapper


def _widgets_in(value):
    """The widgets in a trait value: a widget, or widgets inside lists, tuples and dicts."""
    if isinstance(value, ipywidgets.Widget):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _widgets_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _widgets_in(v)


def held_widgets(widget) -> list:
    """The widgets ``widget`` holds in its traits, directly or through them (a box's children,
    every widget's layout and style, a bqplot figure's marks, scales and axes ...), parents
    first; ``widget`` itself excluded. Traits not created yet are not created."""
    seen = {id(widget)}
    found = []
    stack = [widget]
    while stack:
        w = stack.pop()
        values = getattr(w, "_trait_values", {})  # never triggers a dynamic default
        for name in sorted(values):
            for child in _widgets_in(values[name]):
                if id(child) not in seen:
                    seen.add(id(child))
                    found.append(child)
                    stack.append(child)
    return found


def close_widgets(*widgets) -> None:
    """Close ``widgets`` (None skipped) and every widget they hold (:func:`held_widgets`), so
    that none stays in ipywidgets' registry of open widgets. Each widget's own ``close`` runs
    (a view's stops its threads); an error in one does not keep the others open."""
    todo = []
    for w in widgets:
        if w is not None:
            todo.append(w)
            todo.extend(held_widgets(w))
    seen = set()
    for w in todo:
        if id(w) in seen:
            continue
        seen.add(id(w))
        try:
            w.close()
        except Exception as exc:  # noqa: BLE001 - close the rest anyway
            log.warning("cnnwidgets: closing %s failed: %s: %s", type(w).__name__, type(exc).__name__, exc)


class BaseWidget(anywidget.AnyWidget):
    """Base class: a short ``repr`` that never serializes large binary traits.

    :meth:`close` also closes the widgets this one holds (its layout, a chart) and drops the
    attributes named in ``_released`` (the model, the images, what was computed from them), so
    a closed view keeps nothing large alive even while a variable still refers to it.
    """

    last_error: str | None = None
    _closed: bool = False
    #: Attributes :meth:`close` sets to None.
    _released: tuple[str, ...] = ()
    #: Name of the bundle in ``static/`` that renders this widget.
    _bundle: str = ""
    #: The traits the page may set: the controls its front end writes (``model.set`` in
    #: js/src/widgets/<bundle>.js). :meth:`set_state` drops every other key the page sends
    #: (read-only and kernel-computed traits: data, metadata, status) and re-sends the
    #: kernel's value. Each view lists its own; none by default.
    _page_writable: frozenset[str] = frozenset()

    #: What the view does with this model that the user should know (see :meth:`note`): why it
    #: runs the user's model itself (:func:`cnnwidgets.core.runner.view_note`), a wrapper it
    #: unwrapped, how it reads the output; empty otherwise. Shown above the view.
    model_note = traitlets.Unicode("").tag(sync=True)
    #: Why the page's last value for a control was refused, by trait name: shown next to that
    #: control (in the theme's error colour) until the next valid change of it.
    control_errors = traitlets.Dict(per_key_traits=None).tag(sync=True)
    #: Why the view's background work failed (a map, a run, a pass over the data): shown in the
    #: view, cleared by the next piece of work that succeeds (:meth:`report_failure`).
    view_error = traitlets.Unicode("").tag(sync=True)
    #: Why the view does not show what the shared Selection holds (an image beyond its images,
    #: a layer it cannot show, a channel its layer lacks), saying what it shows instead; empty
    #: while it follows the Selection (SelectionMixin._sel_refuse). Shown in the view.
    selection_note = traitlets.Unicode("", read_only=True).tag(sync=True)
    #: Whether this view runs the model (and so says when it cannot have a private view of it).
    _runs_model: bool = True

    def __init_subclass__(cls, **kwargs) -> None:
        # ``_esm`` and ``_css`` from the built files. With ANYWIDGET_HMR=1 (development) they
        # are paths, which anywidget reloads in open views when `npm run build` rewrites them;
        # otherwise their text: anywidget ties every view to a path's change signal with a
        # strong reference, so a closed view would never be freed.
        name = cls.__dict__.get("_bundle")
        hmr = os.environ.get("ANYWIDGET_HMR") == "1"
        if name and (STATIC / f"{name}.js").exists():
            path = STATIC / f"{name}.js"
            cls._esm = path if hmr else path.read_text(encoding="utf-8")
        if "_css" not in cls.__dict__ and STYLESHEET.exists():
            cls._css = STYLESHEET if hmr else STYLESHEET.read_text(encoding="utf-8")
        super().__init_subclass__(**kwargs)

    def __init__(self, **kwargs) -> None:
        path = bundle(self._bundle)  # a clear error when the front end was not built
        if "_esm" not in type(self).__dict__:  # built after this class was defined
            self._esm = path.read_text(encoding="utf-8")
            self._css = bundle_css().read_text(encoding="utf-8")
        super().__init__(**kwargs)
        if self._bundle in MESSAGES and not hasattr(self, "_on_page_message"):
            self.on_msg(self._dispatch_message)
        model = self.__dict__.get("_model")
        if model is not None:
            from ..core.model import unwrap_model

            self._model, wrapped = unwrap_model(model)
            self.note("wrapper", wrapped)
            if self._runs_model:
                from ..core.runner import view_note

                self.note("view", view_note(self._model))

    def report_failure(self, exc: BaseException | str | None) -> None:
        """Show why background work failed in the view (:attr:`view_error`), or clear it with
        None. The view's workers call this for a job that raised; views call it for a failure
        they catch themselves."""
        if exc is None:
            self.view_error = ""
            return
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.last_error = text
        if not self._closed:
            self.view_error = text

    #: Handler method per message type for :meth:`_dispatch_message`: ``_on_<type>``.
    def _dispatch_message(self, _widget, content, _buffers=None) -> None:
        """Route a message from the page to ``self._on_<type>(content)``; a type outside
        :data:`MESSAGES` for this view, or a handler that raises, is logged, never raised."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind not in MESSAGES.get(self._bundle, ()):
            self.last_error = (f"unknown message {_short_repr(content)} from the page; {self._bundle} "
                               f"takes {_listed(MESSAGES.get(self._bundle, ())) or 'none'}")
            log.warning("cnnwidgets: %s", self.last_error)
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            return
        try:
            handler(content)
        except Exception as exc:  # noqa: BLE001 - events from the page must never raise
            self.report_failure(exc)
            log.warning("cnnwidgets: the page's %r failed: %s", kind, self.last_error)

    def note(self, key: str, text: str | None) -> None:
        """Set (or, with None, clear) one part of :attr:`model_note`, the banner above the view
        that says what the view does with this model (a wrapper unwrapped, no private view, a
        final softmax applied once, not a CNN, ...). Parts show in the order first set."""
        notes = self.__dict__.setdefault("_notes", {})
        if text:
            notes[key] = text
        else:
            notes.pop(key, None)
        self.model_note = " ".join(notes.values())

    def close(self) -> None:
        """Close the widget and the widgets it holds, and drop its model and images. Safe to
        call twice, and on an object whose constructor raised."""
        self._closed = True
        held = held_widgets(self)
        super().close()
        close_widgets(*held)
        for name in self._released:
            if name in self.__dict__:
                setattr(self, name, None)

    def __del__(self):
        # ipywidgets closes a widget when it is garbage collected; never a message from here
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing useful can be done in a finalizer
            pass

    def set_state(self, sync_data):
        """Apply state sent by the front end; a rejected value is logged and the page re-synced.

        Values set from Python go through the same validators and raise as usual; only
        updates coming from the page land here, so a bad click never shows a traceback.
        A closed widget ignores them. Keys not in ``_page_writable`` are dropped (the page
        gets the kernel's value back), whatever the page or a script on the comm sends.
        """
        if self._closed:
            return
        # only the controls the page has: what the kernel computes or shows is not the page's to set
        refused = [k for k in sync_data if k not in self._page_writable]
        errors, resend = [], [k for k in refused if k in self.keys]
        if refused:
            given = ", ".join(f"{k!r} (got {_short_repr(sync_data[k])})" for k in refused)
            errors.append(
                f"{given} cannot be set from the page (computed by the kernel, or not a control of "
                f"this view); the page may set {', '.join(sorted(self._page_writable)) or 'nothing'}"
            )
            sync_data = {k: v for k, v in sync_data.items() if k in self._page_writable}
        if sync_data:
            try:
                super().set_state(sync_data)
            except Exception as exc:  # noqa: BLE001 - events from the page must never raise
                errors.append(f"{type(exc).__name__}: {exc}")
                resend.extend(k for k in sync_data if k in self.keys)
                # shown next to the control on the page, until its next valid change
                self.control_errors = {**self.control_errors, **{k: str(exc) for k in sync_data}}
            else:
                if any(k in self.control_errors for k in sync_data):
                    self.control_errors = {k: v for k, v in self.control_errors.items() if k not in sync_data}
        if errors:
            self.last_error = "; ".join(errors)
            log.warning("cnnwidgets: ignored a value from the page: %s", self.last_error)
        if resend:
            self.send_state(resend)

    def get_state(self, key=None, drop_defaults=False):
        """The state as sent to the page, with every NaN or infinity (not valid JSON: the page
        would drop the whole message) replaced by None, in dicts and lists too."""
        state = super().get_state(key=key, drop_defaults=drop_defaults)
        return {k: _json_safe(v) for k, v in state.items()}

    #: Traits that change with the image index, exported per image by :meth:`save_html`.
    _export_keys: tuple[str, ...] = ()

    def save_html(self, path, *, images=None, title: str | None = None):
        """Write this view into one self-contained HTML file (no kernel, no network needed).

        Parameters
        ----------
        path : str or Path
        images : sequence of int, optional
            Image indices to precompute (views that show one image at a time); the page
            switches between them with its image controls.
        title : str, optional

        Returns
        -------
        pathlib.Path
        """
        from ._export import export_html

        frames = self._export_frames(images) if images is not None else None
        return export_html([self], path, title=title or type(self).__name__, frames=[frames])

    def _export_frames(self, images):
        """``{index: {trait: value}}`` for each image index, computed by visiting it."""
        if not self._export_keys or images is None:
            return None
        original = self.index
        frames = {}
        try:
            for i in images:
                self.index = int(i)
                if hasattr(self, "wait"):
                    self.wait()
                state = self.get_state(list(self._export_keys))
                frames[int(i)] = {k: state[k] for k in self._export_keys}
        finally:
            self.index = original
            if hasattr(self, "wait"):
                self.wait()
        return frames

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def _repr_mimebundle_(self, **kwargs):
        """The widget, and beside it a static picture of what the view shows now (a PNG and an
        HTML summary, :mod:`cnnwidgets.widgets._static`) for readers of the saved notebook that
        cannot render widgets (GitHub, nbviewer, nbconvert, an editor before its kernel
        starts); a live front end ranks the widget first and shows only it. marimo renders the
        widget itself and needs no picture."""
        return with_fallback(super()._repr_mimebundle_(**kwargs), self, [self])


def in_marimo(widget) -> bool:
    """Whether ``widget`` is shown by marimo (whose comm says so), not a Jupyter front end."""
    return getattr(getattr(widget, "comm", None), "kernel", None) == "marimo"


def with_fallback(bundle, widget, views: list):
    """``bundle`` (a widget's display data, or anywidget's ``(data, metadata)``) plus the
    static pictures of ``views`` (:func:`cnnwidgets.widgets._static.fallback`); unchanged under
    marimo, for a closed widget, or when the pictures cannot be made (logged: a display never
    fails for its picture)."""
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, None)
    if not isinstance(data, dict) or getattr(widget, "_closed", False) or in_marimo(widget):
        return bundle
    from ._static import fallback

    try:
        data = {**fallback(views), **data}
    except Exception as exc:  # noqa: BLE001 - the widget itself still shows
        log.warning("cnnwidgets: no static picture for %s: %s: %s", type(widget).__name__, type(exc).__name__, exc)
        return bundle
    return data if metadata is None else (data, metadata)


class PageScheduled:
    """Updates asked for by the page run on the widget's ``_worker`` (latest request wins, the
    kernel stays free); the same updates asked for from Python run right away, so scripts and
    tests see the result on return. Needs ``_worker`` (a LatestWorker) and a ``busy`` trait."""

    _from_page = False

    def set_state(self, sync_data):
        self._from_page = True
        try:
            super().set_state(sync_data)
        finally:
            self._from_page = False

    def _schedule(self, fn) -> None:
        if self._from_page:
            self.busy = True
            self._worker.submit(fn)
        else:
            fn()


class ImageView(PageScheduled):
    """A view that shows one image of its :class:`~cnnwidgets.core.images.ImageSet` at a time
    (the ``index`` trait, checked against ``self._images``) and computes on LatestWorkers: the
    index check, :meth:`wait` and :meth:`close` written once (ActivationExplorer, SaliencyViewer).
    """

    #: The LatestWorker attributes :meth:`wait` waits for and :meth:`close` ends.
    _workers: tuple[str, ...] = ("_worker",)
    #: The threading.Event attributes :meth:`close` sets first (a pass over the data stops
    #: between batches).
    _stops: tuple[str, ...] = ()
    #: Seconds :meth:`wait` waits by default.
    _wait_timeout: float = 60.0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work of this view is done; False after ``timeout``
        seconds (default :attr:`_wait_timeout`)."""
        limit = self._wait_timeout if timeout is None else timeout
        return all(getattr(self, n).wait(limit) for n in self._workers if hasattr(self, n))

    def close(self) -> None:
        """Stop the background work, leave the Selection and close the widget (with what it
        holds); the model and the images are let go, so the view cannot be used after this."""
        self._closed = True
        for name in self._stops:
            if hasattr(self, name):
                getattr(self, name).set()
        for name in self._workers:
            if hasattr(self, name):
                getattr(self, name).close()
        if hasattr(self, "_leave"):
            self._leave()
        super().close()

    @traitlets.validate("index")
    @checked
    def _v_index(self, proposal):
        return self._images.check_index(proposal["value"])


def array_to_json(value, _widget=None):
    """ndarray -> ``{"view": memoryview, "dtype": str, "shape": [..]}`` for the page (float64
    sent as float32, which the page draws with); None stays None. The page decodes it with
    ``decodeArray`` in js/src/lib/codecs.js; the exported page keeps the same object with the
    bytes in base64."""
    if value is None:
        return None
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    return {"view": memoryview(arr.reshape(-1).view(np.uint8)), "dtype": str(arr.dtype), "shape": list(arr.shape)}


def array_from_json(value, _widget=None):
    """The inverse of :func:`array_to_json` (for a page that echoes an array back)."""
    if value is None:
        return None
    import numpy as np

    return np.frombuffer(bytes(value["view"]), dtype=value["dtype"]).reshape(value["shape"])


def ArrayTrait(**kwargs):  # noqa: N802 - reads as a trait type
    """A synced ndarray trait sent as one binary buffer with its dtype and shape (one serializer
    for every array of every view, instead of a Bytes trait plus a metadata Dict)."""
    import numpy as np

    return traitlets.Instance(np.ndarray, allow_none=True, **kwargs).tag(
        sync=True, to_json=array_to_json, from_json=array_from_json
    )

"""Shared plumbing for the anywidget classes: bundled front-end files and safe handlers."""

from __future__ import annotations

import functools
import logging
import pathlib

import anywidget
import traitlets

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"

log = logging.getLogger("cnnwidgets")


class InvalidValue(ValueError, traitlets.TraitError):
    """A trait value was rejected: a ValueError for users, a TraitError for traitlets (which
    then rolls the value back)."""


def checked(validator):
    """Wrap a ``@validate`` body so that its ValueError becomes :class:`InvalidValue`."""

    @functools.wraps(validator)
    def wrapper(self, proposal):
        try:
            return validator(self, proposal)
        except InvalidValue:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidValue(str(exc)) from None

    return wrapper


def one_of(proposal, choices: tuple[str, ...]) -> str:
    """The proposed value if it is one of ``choices``, else a ValueError that names them all
    (for ``@validate`` bodies wrapped in :func:`checked`)."""
    value = proposal["value"]
    if value not in choices:
        names = [repr(c) for c in choices]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise ValueError(f"{proposal['trait'].name} must be {listed}, got {value!r}")
    return value


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


class BaseWidget(anywidget.AnyWidget):
    """Base class: a short ``repr`` that never serializes large binary traits."""

    last_error: str | None = None
    #: Name of the bundle in ``static/`` that renders this widget.
    _bundle: str = ""

    def __init__(self, **kwargs) -> None:
        # anywidget turns a plain ``_esm`` attribute into the synced module source
        self._esm = bundle(self._bundle).read_text(encoding="utf-8")
        super().__init__(**kwargs)

    def set_state(self, sync_data):
        """Apply state sent by the front end; a rejected value is logged and the page re-synced.

        Values set from Python go through the same validators and raise as usual; only
        updates coming from the page land here, so a bad click never shows a traceback.
        """
        try:
            super().set_state(sync_data)
        except Exception as exc:  # noqa: BLE001 - events from the page must never raise
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cnnwidgets: ignored a value from the page: %s", self.last_error)
            self.send_state([k for k in sync_data if k in self.keys])

    #: Traits that change with the image index, exported per image by :meth:`save_html`.
    _export_keys: tuple[str, ...] = ()

    def _export_state(self) -> dict:
        """Data only the exported page needs, beside the synced state: what the page draws
        itself in place of child widgets it cannot render (none by default)."""
        return {}

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

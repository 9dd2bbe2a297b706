"""Selection: the shared state of an exploration, linking every view that holds it."""

from __future__ import annotations

from typing import Any

import traitlets as t

from ._base import BaseWidget, Int, checked

__all__ = ["Selection", "SelectionMixin"]

#: The state a Selection shares, and the trait of that name on each view.
SHARED = ("index", "layer", "channel", "target")


class Selection(BaseWidget):
    """What is selected right now: image index, layer, channel and target class.

    Pass one Selection to several views (``selection=sel``): a click in one view sets it,
    and every other view follows, in the page and in Python. Displaying it shows a one-line
    summary.

    Parameters
    ----------
    index : int
        Index of the selected image in the views' image set.
    layer : str
        Qualified layer name (``"features.3"``); ``""`` for none.
    channel : int
        Selected channel (feature map / filter) of that layer; -1 for none.
    target : int
        Target class index (for attribution and class objectives); -1 for the predicted
        class, -2 for the image's true label.

    Examples
    --------
    >>> from cnnwidgets import Selection
    >>> sel = Selection()
    >>> sel.channel = 5
    >>> sel.channel
    5
    """

    _bundle = "selection"
    #: The page only shows the summary (js/src/widgets/selection.js): the views set the rest.
    _page_writable = frozenset()

    index = Int(0).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    channel = Int(-1).tag(sync=True)
    target = Int(-1).tag(sync=True)

    def __init__(self, *, index: int = 0, layer: str = "", channel: int = -1, target: int = -1) -> None:
        super().__init__()
        self.index, self.layer, self.channel, self.target = index, layer, channel, target

    @t.validate("index")
    @checked
    def _check_index(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(f"index must be >= 0, got {proposal['value']}")
        return proposal["value"]

    @t.validate("channel")
    @checked
    def _check_channel(self, proposal):
        if proposal["value"] < -1:
            raise ValueError(f"channel must be >= -1 (-1 = none), got {proposal['value']}")
        return proposal["value"]

    @t.validate("target")
    @checked
    def _check_target(self, proposal):
        if proposal["value"] < -2:
            raise ValueError(
                f"target must be >= -2 (a class index, -1 = predicted, -2 = true label), got {proposal['value']}"
            )
        return proposal["value"]

    def __repr__(self) -> str:
        return f"Selection(index={self.index}, layer={self.layer!r}, channel={self.channel}, target={self.target})"


class SelectionMixin:
    """Two-way link between a view's traits and a :class:`Selection`.

    On joining, the view takes the Selection's values; where the Selection has no value yet
    the view gives it its own; a value passed explicitly to the view's constructor is kept by
    the view (and given to the Selection only if that has none). A value the view cannot show
    (a channel beyond its layer's width, a layer it does not have) is ignored by that view
    instead of raising, so views with different layers can share one Selection.

    **A channel travels with its layer.** A channel number means something only together with
    the layer it belongs to, so the Selection's channel is always a channel of the Selection's
    layer:

    * a view takes the Selection's channel only while it is on the Selection's layer, or on a
      layer with the same channels (a FilterGrid on ``features.3`` takes the channel of the ReLU
      ``features.4`` after it: :func:`~cnnwidgets.core.layers.same_channels`); a view that
      rejected the layer for another, was given a layer of its own, or does not share
      ``"layer"`` keeps its channel;
    * when a view takes the Selection's layer, it then takes the Selection's channel too;
    * when a view shares a channel or a layer, it shares both: a click on filter 5 of
      ``features.0`` sets the Selection to (``features.0``, 5) at once, so no view applies
      channel 5 to another layer (the views that take ``features.0`` follow, the others keep
      their own layer and channel).

    Values a view takes from the Selection (and the fallbacks it makes meanwhile, such as a
    channel reset for a narrower layer) are not shared back.
    """

    selection: Selection | None = None
    #: Which of SHARED this view takes part in.
    _shared: tuple[str, ...] = ()

    def _join(self, selection: Selection | None, explicit: tuple[str, ...] = (), passive: tuple[str, ...] = ()) -> None:
        if selection is None:
            self.selection = None
            return
        if not isinstance(selection, Selection):
            raise TypeError(
                f"selection must be a cnnwidgets.Selection, got {type(selection).__name__}. "
                "Hint: sel = cnnwidgets.Selection(); pass selection=sel to every view."
            )
        self.selection = selection
        self._sel_handlers: list[tuple[Any, Any, str]] = []
        for name in self._shared:
            sel_value = getattr(selection, name)
            own_default = name == "layer" and not sel_value or name in ("channel", "target") and sel_value == -1
            if name == "channel" and not self._sel_on_layer():
                pass  # the view's channel is one of another layer: neither given nor taken
            elif own_default and name not in passive:
                self._sel_push(name, getattr(self, name))  # the Selection is empty: this view fills it
            elif name in explicit or own_default:
                pass  # the view keeps what it was given (or its own default), without imposing it
            else:
                self._sel_pull(name, sel_value)

            def push(change, name=name):
                if not getattr(self, "_sel_muted", False) and not getattr(self, "_sel_pulling", 0):
                    self._sel_refuse(name, "")  # the view shows its own choice again: no note
                    self._sel_share(name, change["new"])

            def pull(change, name=name):
                self._sel_pull(name, change["new"])

            self.observe(push, names=name)
            selection.observe(pull, names=name)
            self._sel_handlers.append((self, push, name))
            self._sel_handlers.append((selection, pull, name))

    def _leave(self) -> None:
        """Unlink from the Selection (both directions) and let go of it."""
        for obj, handler, name in getattr(self, "_sel_handlers", []):
            try:
                obj.unobserve(handler, names=name)
            except ValueError:
                pass
        self._sel_handlers = []
        self.selection = None

    def _sel_on_layer(self) -> bool:
        """Whether this view is on the Selection's layer, or on one whose channels are the same
        features (:func:`~cnnwidgets.core.layers.same_channels`: a FilterGrid on a conv and a
        Selection on the ReLU after it), so that their channel numbers mean the same."""
        sel = self.selection
        if sel is None or "layer" not in self._shared:
            return False
        mine = getattr(self, "layer", None)
        if mine == sel.layer:
            return True
        model = self.__dict__.get("_model")
        if model is None or not mine or not sel.layer:
            return False
        from ..core.layers import same_channels

        return same_channels(model, mine, sel.layer)

    def _sel_push(self, name: str, value: Any) -> None:
        sel = self.selection
        if sel is not None and getattr(sel, name) != value:
            try:
                setattr(sel, name, value)
            except (ValueError, t.TraitError):
                pass

    def _sel_share(self, name: str, value: Any) -> None:
        """A change made in this view (a click, a setting from Python) goes to the Selection; a
        layer or a channel goes as the pair (layer, channel), in one update."""
        sel = self.selection
        if sel is None:
            return
        if name not in ("layer", "channel"):
            self._sel_push(name, value)
            return
        if "layer" not in self._shared:
            return  # a channel without its layer means nothing to the other views
        layer = value if name == "layer" else getattr(self, "layer", "")
        pair = {"layer": layer}
        if "channel" in self._shared:
            pair["channel"] = value if name == "channel" else getattr(self, "channel", -1)
        changed = {k: v for k, v in pair.items() if getattr(sel, k) != v}
        if not changed:
            return
        try:
            # the views see the layer and its channel together (layer first)
            with sel.hold_trait_notifications():
                for k, v in changed.items():
                    setattr(sel, k, v)
        except (ValueError, t.TraitError):
            pass  # rolled back as a whole

    def _sel_pull(self, name: str, value: Any) -> None:
        if name == "channel" and not self._sel_on_layer():
            return  # a channel of a layer this view is not on
        why = self._cannot_show(name, value)
        if why:
            self._sel_refuse(name, why)
            return
        self._sel_pulling = getattr(self, "_sel_pulling", 0) + 1
        try:
            if getattr(self, name) != value:
                try:
                    setattr(self, name, value)
                except (ValueError, t.TraitError) as exc:
                    # this view cannot show that value; it keeps its own, and says so
                    why = (f"The shared selection's {name} is {value!r}, which this view cannot show "
                           f"({str(exc).split('. Hint')[0]}): it keeps {getattr(self, name)!r}.")
            self._sel_refuse(name, why)
            if name == "layer" and "channel" in self._shared and self._sel_on_layer():
                self._sel_pull("channel", self.selection.channel)  # the layer's channel comes with it
        finally:
            self._sel_pulling -= 1

    def _cannot_show(self, name: str, value: Any) -> str:
        """Why this view cannot show the Selection's ``name`` = ``value``, in a sentence that
        says what it shows instead ("" if it can). Views word their own cases here; any other
        value the view's validators refuse gets a sentence from the validator's message."""
        return ""

    def _sel_refuse(self, name: str, why: str) -> None:
        """Keep (or with "" drop) the reason the view does not show the Selection's ``name``:
        all the reasons kept show in :attr:`~BaseWidget.selection_note`, in the view."""
        refused = self.__dict__.setdefault("_sel_refused", {})
        if why:
            refused[name] = why
        elif refused.pop(name, None) is None:
            return
        if not getattr(self, "_closed", False):
            self.set_trait("selection_note", " ".join(refused.values()))

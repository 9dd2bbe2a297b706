"""Side-by-side speed ratios: cnnwidgets vs the straightforward way, same data, same run.

Not a test: nothing fails on time. It prints one table with, for each row, our median time,
the baseline's median time, the ratio, the target and whether the target is met. The target
says which way the ratio goes: "x faster" = baseline / ours (higher is better), "x baseline"
= ours / baseline and "x pixels" = bytes sent / pixels shown (lower is better).

    cd /work/main && python tests/bench/run.py [--quick] [--only NAME]

Adding a benchmark: write a function ``def bench_x(quick: bool) -> list[Row]`` and decorate it
with ``@benchmark("x")``; it is then run in registration order (``--only x`` runs it alone).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to a pixel buffer, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

# importable from a checkout without installing
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------- framework
@dataclass
class Row:
    """One line of the table. ``baseline_s``/``ratio`` None for an absolute-time row;
    ``met`` None when there is no target to judge."""

    name: str
    ours_s: float | None
    baseline_s: float | None
    ratio: float | None
    target: str
    met: bool | None
    runs: str = ""  # e.g. "7/2": repeats of ours / of the baseline
    unit: str = "s"  # "s": ours/baseline are seconds; "B": bytes (ours) and pixels (baseline)


@dataclass
class Timing:
    median: float
    repeats: int


BENCHMARKS: list[tuple[str, Callable[[bool], list[Row]]]] = []
NOTES: dict[str, str] = {}


def benchmark(name: str, notes: str = ""):
    """Register ``fn(quick) -> list[Row]`` under ``name``; ``notes`` are printed under the table."""

    def register(fn):
        BENCHMARKS.append((name, fn))
        if notes:
            NOTES[name] = notes
        return fn

    return register


def measure(
    fn: Callable[[], object],
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 1,
    repeats: int = 7,
    budget_s: float | None = None,
) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs.

    ``setup`` (untimed) runs before each call. With ``budget_s``, stop repeating once the
    timed runs have used that much time (at least one run is always timed).
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if budget_s is not None and spent >= budget_s:
            break
    return Timing(statistics.median(times), len(times))


def ratio_row(name: str, ours: Timing, base: Timing, min_ratio: float) -> Row:
    r = base.median / ours.median if ours.median > 0 else math.inf
    return Row(
        name,
        ours.median,
        base.median,
        r,
        f">= {min_ratio:g}x faster",
        r >= min_ratio,
        f"{ours.repeats}/{base.repeats}",
    )


def absolute_row(name: str, ours: Timing, max_s: float) -> Row:
    return Row(
        name,
        ours.median,
        None,
        None,
        f"< {max_s * 1e3:g} ms",
        ours.median < max_s,
        f"{ours.repeats}/-",
    )


def overhead_row(name: str, ours: Timing, base: Timing, max_ratio: float) -> Row:
    """ours / baseline: how much more time than the bare computation (lower is better)."""
    r = ours.median / base.median if base.median > 0 else math.inf
    return Row(
        name,
        ours.median,
        base.median,
        r,
        f"<= {max_ratio:g}x baseline",
        r <= max_ratio,
        f"{ours.repeats}/{base.repeats}",
    )


def info_row(name: str, ours: Timing) -> Row:
    """An absolute time shown for information, without a target."""
    return Row(name, ours.median, None, None, "-", None, f"{ours.repeats}/-")


# ---------------------------------------------------------------------------- FilterGrid
def face_net() -> nn.Sequential:
    """Face classifier on 91x91 grayscale: conv 32@10x10, pool, conv 64@10x10, pool, fc 1024, fc 2."""
    torch.manual_seed(0)
    # 91 -conv10-> 82 -pool2-> 41 -conv10-> 32 -pool2-> 16
    return nn.Sequential(
        nn.Conv2d(1, 32, 10),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 10),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 16 * 16, 1024),
        nn.ReLU(),
        nn.Linear(1024, 2),
    )


def vgg16_conv5() -> nn.Sequential:
    """A VGG16 conv layer of blocks 4/5: Conv2d(512, 512, 3), 262,144 kernels."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(512, 512, 3))


def classic_filter_picture(weight: torch.Tensor) -> np.ndarray:
    """The classic notebook way: a per-pixel Python loop, then matplotlib.

    ``weight`` is (out, in, kh, kw) as stored by PyTorch; it is laid out (kh, kw, in, out)
    as the classic code expects. Returns the rendered RGBA pixel buffer.
    """
    w = weight.detach().cpu().numpy().transpose(2, 3, 1, 0)  # (kh, kw, in, out)
    kh, kw, n_in, n_out = w.shape
    n_tiles = n_in * n_out
    filters_per_row = int(math.ceil(math.sqrt(n_tiles)))
    n_rows = int(math.ceil(n_tiles / filters_per_row))
    pad = 1
    result = np.zeros((n_rows * (kh + pad) - pad, filters_per_row * (kw + pad) - pad), dtype=np.float32)
    tile = 0
    for o in range(n_out):
        for c in range(n_in):
            top = (tile // filters_per_row) * (kh + pad)
            left = (tile % filters_per_row) * (kw + pad)
            for i in range(kh):
                for j in range(kw):
                    result[top + i, left + j] = w[i, j, c, o]
            tile += 1
    lo, hi = result.min(), result.max()
    result = (result - lo) / (hi - lo)
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.imshow(result, cmap="gray", interpolation="nearest")
    ax.axis("off")
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return buf


@benchmark(
    "filter_grid",
    notes=(
        "baseline = per-pixel Python tiling loop over the weights laid out (kh, kw, in, out),\n"
        "    min-max normalize, matplotlib imshow (Agg) drawn to an RGBA buffer\n"
        "widget update = FilterGrid.refresh(): re-read weights, quantize, per-tile stats, binary\n"
        "    buffers for the page (the page rasterizes only the visible viewport itself)\n"
        "full grid image = refresh() + to_image(zoom=1): all tiles as one RGB array in Python"
    ),
)
def bench_filter_grid(quick: bool) -> list[Row]:
    from cnnwidgets import FilterGrid
    from cnnwidgets.core import conv_layers

    # warm matplotlib up once (font cache, first figure) so no baseline pays for it
    classic_filter_picture(torch.randn(2, 2, 3, 3))

    face = face_net()
    vgg = vgg16_conv5()
    cases = [
        # label, model, layer, (ours repeats, baseline repeats, baseline warm-ups)
        ("2,048 tiles, face conv 32->64 10x10", face, conv_layers(face)[1], (7, 3, 1) if quick else (21, 7, 1)),
        ("262,144 tiles, VGG16 Conv2d(512,512,3)", vgg, conv_layers(vgg)[0], (5, 1, 0) if quick else (11, 3, 0)),
    ]
    rows: list[Row] = []
    for label, model, layer, (n_ours, n_base, base_warm) in cases:
        weight = model.get_submodule(layer).weight
        grid = FilterGrid(model, layer)
        assert grid.n_tiles == weight.shape[0] * weight.shape[1], grid

        base = measure(lambda: classic_filter_picture(weight), warmup=base_warm, repeats=n_base, budget_s=15.0)
        update = measure(grid.refresh, warmup=2, repeats=n_ours)

        def full_image():
            grid.refresh()
            return grid.to_image(zoom=1)

        full = measure(full_image, warmup=2, repeats=n_ours)

        rows.append(ratio_row(f"FilterGrid {label}: widget update", update, base, 100))
        rows.append(ratio_row(f"FilterGrid {label}: full grid image", full, base, 100))
        if grid.n_tiles == 262_144:
            rows.append(absolute_row(f"FilterGrid {label}: widget update, absolute", update, 0.100))
            rows.append(absolute_row(f"FilterGrid {label}: full grid image, absolute", full, 0.100))
    return rows


# ---------------------------------------------------------------------------- ActivationExplorer
class VGG16Shaped(nn.Module):
    """VGG16's layout (as torchvision builds it) with random weights: 13 conv3 layers in
    ``features`` (ReLU(inplace=True), 5 max-pools), adaptive avgpool to 7x7, 3 linear layers.
    ``features.15`` is the ReLU after conv3_3, ``features.29`` the ReLU after conv5_3."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        c = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 1000),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def sequential_prefix(model: nn.Module, layer: str) -> nn.Sequential:
    """The layers of ``model`` up to and including ``layer`` ("features.k" -> features[:k+1])."""
    container, k = layer.rsplit(".", 1)
    return model.get_submodule(container)[: int(k) + 1]


def bare_frame(prefix: nn.Sequential, x: torch.Tensor) -> bytes:
    """Baseline for an image change: forward to the layer, min-max its maps to uint8 bytes."""
    with torch.no_grad():
        a = prefix(x)[0]
        lo, hi = a.min(), a.max()
        y = (a - lo) * (255.0 / float(max(hi - lo, 1e-12)))
        return y.to(torch.uint8).numpy().tobytes()


class SentCounter:
    """Records the comm messages a widget sends from the calling (main) thread.

    Only references are kept while timing; sizes are computed afterwards by ``total()``:
    JSON of each message's data (binary buffers removed, as ipywidgets sends it) + buffers.
    """

    def __init__(self, widget) -> None:
        self.messages: list[tuple[object, list]] = []
        self._main = threading.get_ident()
        send = widget.comm.send

        def counting_send(data=None, metadata=None, buffers=None):
            if threading.get_ident() == self._main:
                self.messages.append((data, list(buffers or [])))
            return send(data=data, metadata=metadata, buffers=buffers)

        widget.comm.send = counting_send

    def reset(self) -> None:
        self.messages.clear()

    def keys(self) -> list[str]:
        """Names of the traits in the recorded messages, binary ones included."""
        out: list[str] = []
        for d, _ in self.messages:
            if isinstance(d, dict):
                names = list(d.get("state", {})) + [path[0] for path in d.get("buffer_paths", [])]
                out += [k for k in names if k not in out]
        return out

    def total(self) -> tuple[int, int]:
        """(JSON bytes, binary buffer bytes) of the recorded messages."""
        js = sum(len(json.dumps(d)) for d, _ in self.messages)
        bb = sum(memoryview(b).nbytes for _, bufs in self.messages for b in bufs)
        return js, bb


def pixels_shown(ex) -> int:
    """uint8 values the page shows for the frame: the image (H*W*C) and the maps (C*h*w)."""
    return ex._image.size + ex._maps.size


def bytes_row(name: str, ex, counter: SentCounter) -> tuple[Row, str]:
    """Bytes the last image change sent vs the pixels it shows; and a breakdown for the notes."""
    js, bb = counter.total()
    keys = counter.keys()
    binary = [k for k in ("_image", "_maps", "_map_stats", "_order") if k in keys]
    # the buffers are exactly these binary traits (a trait whose value did not change, e.g.
    # the order of the maps under sort="index", is not sent again)
    assert {"_image", "_maps", "_map_stats"} <= set(binary), keys
    assert bb == sum(getattr(ex, k).nbytes for k in binary), (bb, binary)
    px = pixels_shown(ex)
    sent = js + bb
    row = Row(name, sent, px, sent / px, "<= 1.1x pixels", sent / px <= 1.1, "1/-", "B")
    parts = " + ".join(f"{k} {getattr(ex, k).nbytes:,}" for k in binary)
    note = (
        f"{name.split(':')[0]} (sort={ex.sort!r}): pixels shown {px:,}; sent {parts} B "
        f"+ JSON {js:,} B in {len(counter.messages)} messages"
    )
    return row, note


def _resetting(indices, counter: SentCounter):
    """``indices``, resetting ``counter`` as each one is taken (in the untimed setup), so the
    counter holds only the messages of the latest image change."""
    for i in indices:
        counter.reset()
        yield i


def _forget_display(ex, index: int) -> None:
    """Drop image ``index`` from the widget's cache of display images, wherever it keeps it."""
    for cache in (getattr(ex, "_thumbs", None), getattr(getattr(ex, "_images", None), "_display", None)):
        if isinstance(cache, dict):
            cache.pop(index, None)


#: The traits that make up a frame: the new image and the maps of the current layer (with
#: their statistics and description). ``_order`` is left out: it is not set again when it
#: does not change (sort="index").
FRAME_TRAITS = ("_image", "_maps", "_map_stats", "_maps_info")


def image_change_timing(
    ex, indices, *, warmup: int, repeats: int, budget_s: float | None = None
) -> tuple[Timing, Timing]:
    """Median times of ``ex.index = i`` for fresh images (the per-image cache never hits):
    (frame, total).

    frame = from the assignment until every trait of the new frame (``FRAME_TRAITS``) has been
    set on the widget, i.e. until the new frame's bytes are ready on the Python side (an
    observer on those traits records ``time.perf_counter()`` as each is first set from the
    calling thread); total = until the assignment returns (the rest of the forward pass and
    the prediction included).

    The deconvnet projection that the change starts in the background is waited for in the
    untimed setup, so it never overlaps a timed run.
    """
    main = threading.get_ident()
    marks: dict[str, float] = {}

    def mark(change):
        if threading.get_ident() == main:
            marks.setdefault(change["name"], time.perf_counter())

    frames: list[float] = []
    totals: list[float] = []
    spent = 0.0
    ex.observe(mark, names=list(FRAME_TRAITS))
    try:
        for k in range(warmup + max(1, repeats)):
            ex.wait()  # the previous change's background projection, untimed
            i = next(indices)
            assert i != ex.index and i not in ex._cache, i  # a cache miss: the forward pass runs
            _forget_display(ex, i)  # and the displayed image is built anew
            marks.clear()
            t0 = time.perf_counter()
            ex.index = i
            t1 = time.perf_counter()
            missing = [n for n in FRAME_TRAITS if n not in marks]
            assert not missing, f"the image change did not set {missing}"
            if k < warmup:
                continue
            frames.append(max(marks.values()) - t0)
            totals.append(t1 - t0)
            spent += t1 - t0
            if budget_s is not None and spent >= budget_s:
                break
    finally:
        ex.unobserve(mark, names=list(FRAME_TRAITS))
    return Timing(statistics.median(frames), len(frames)), Timing(statistics.median(totals), len(totals))


def baseline_timing(model, x, layer, indices, *, warmup: int, repeats: int) -> Timing:
    prefix = sequential_prefix(model, layer)
    nxt = [0]

    def setup():
        nxt[0] = next(indices)

    return measure(lambda: bare_frame(prefix, x[nxt[0] : nxt[0] + 1]), setup=setup, warmup=warmup, repeats=repeats)


@benchmark(
    "activation_explorer",
    notes=(
        "image change = `ex.index = i` from Python for an image not in the widget's cache (4\n"
        "    images), timed until the new frame's bytes are ready on the Python side: every one\n"
        "    of `_image`, `_maps`, `_map_stats`, `_maps_info` has been set for the new image\n"
        "    (an observer on them records the time). The widget runs one forward pass capturing\n"
        "    every layer and sends the frame from inside it, as soon as the current layer has\n"
        "    run. The deconvnet projection is computed after the frame, in a background thread;\n"
        "    it is waited for outside the timed region, so it is not in these times\n"
        "image change, total = the same change until `ex.index = i` returns: the rest of the\n"
        "    forward pass (deeper layers, classifier) and the prediction included\n"
        "baseline = the bare forward pass to that layer (a Sequential prefix, torch.no_grad, the\n"
        "    same single image) + min-max of that layer's maps to uint8 bytes\n"
        "image change + projection = the same change until the background projection is done\n"
        "    (for information: what the page waits for the projected image)\n"
        "layer / channel change = `ex.layer = ...` (alternating) or `ex.channel = c` for the\n"
        "    current, cached image; the projection again runs after, in the background\n"
        "bytes = everything one image change sends from Python's thread: JSON of the update\n"
        "    messages (metadata dicts, index, ...) + binary buffers (_image, _maps, _map_stats,\n"
        "    _order); pixels = uint8 values shown (image H*W*C + maps C*h*w). The projection\n"
        "    is sent later, in its own message, and is not counted\n"
        "VGG16-shaped = VGG16 layout, random weights (seed 0), 8 random 3x224x224 images"
    ),
)
def bench_activation_explorer(quick: bool) -> list[Row]:
    from cnnwidgets import ActivationExplorer, demo

    rows: list[Row] = []
    notes: list[str] = []

    # --- demo CNN (28x28 MNIST)
    d = demo.mnist("val")
    model, x = d.model.eval(), d.images
    n = x.shape[0]
    ex = ActivationExplorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std, layer="features.3")
    counter = SentCounter(ex)
    fresh = iter(range(1, n))  # every image change below gets an image not seen before
    n_ours, n_base = (21, 21) if quick else (61, 61)
    for layer in ("features.3", "features.6"):
        ex.layer = layer
        ex.wait()
        base = baseline_timing(model, x, layer, iter(range(1, n)), warmup=5, repeats=n_base)
        ours, total = image_change_timing(ex, _resetting(fresh, counter), warmup=5, repeats=n_ours)
        ex.wait()
        rows.append(overhead_row(f"ActivationExplorer demo CNN {layer}: image change", ours, base, 1.3))
        rows.append(info_row(f"ActivationExplorer demo CNN {layer}: image change, total", total))
        row, note = bytes_row(f"ActivationExplorer demo CNN {layer}: bytes per image change", ex, counter)
        rows.append(row)
        notes.append(note)

    # bytes again with the maps sorted by strength: the order then changes with the image
    ex.sort = "max"
    for layer in ("features.3", "features.6"):
        ex.layer = layer
        ex.wait()
        image_change_timing(ex, _resetting(fresh, counter), warmup=0, repeats=1)
        ex.wait()
        row, note = bytes_row(f"ActivationExplorer demo CNN {layer}: bytes per image change, sort=max", ex, counter)
        rows.append(row)
        notes.append(note)
    ex.sort = "index"

    def change_with_projection():
        ex.index = next(fresh)
        ex.wait()

    ex.layer = "features.3"
    rows.append(
        info_row(
            "ActivationExplorer demo CNN features.3: image change + projection",
            measure(change_with_projection, setup=ex.wait, warmup=2, repeats=n_ours),
        )
    )

    # layer and channel changes for the current (cached) image
    ex.wait()
    other = {"features.3": "features.6", "features.6": "features.3"}

    def flip_layer():
        ex.layer = other[ex.layer]

    lay = measure(flip_layer, setup=ex.wait, warmup=3, repeats=n_ours * 2)
    ex.layer = "features.3"
    ex.wait()
    channels = iter(range(10**6))

    def next_channel():
        ex.channel = next(channels) % 32

    ch = measure(next_channel, setup=ex.wait, warmup=3, repeats=n_ours * 2)
    ex.wait()
    rows.append(absolute_row("ActivationExplorer demo CNN features.3<->features.6: layer change", lay, 0.010))
    rows.append(absolute_row("ActivationExplorer demo CNN features.3: channel change", ch, 0.010))
    ex.close()

    # --- VGG16-shaped network at 224x224
    vgg = VGG16Shaped().eval()
    torch.manual_seed(0)
    xv = torch.randn(8, 3, 224, 224)
    cycle = itertools.cycle(range(8))  # 8 images, 4 cached: the next one is never in the cache
    next(cycle)  # image 0 is shown (and cached) after construction
    exv = ActivationExplorer(vgg, xv, layer="features.15")
    counter_v = SentCounter(exv)
    cases = [("features.15", (1, 3) if quick else (1, 5))]
    if not quick:
        cases.append(("features.29", (1, 5)))
    for layer, (warm, reps) in cases:
        exv.layer = layer
        exv.wait()
        base = baseline_timing(vgg, xv, layer, itertools.cycle(range(8)), warmup=warm, repeats=reps)
        ours, total = image_change_timing(exv, _resetting(cycle, counter_v), warmup=warm, repeats=reps)
        exv.wait()
        label = f"ActivationExplorer VGG16-shaped 224x224 {layer}"
        rows.append(overhead_row(f"{label}: image change", ours, base, 1.3))
        rows.append(info_row(f"{label}: image change, total", total))
        row, note = bytes_row(f"{label}: bytes per image change", exv, counter_v)
        rows.append(row)
        notes.append(note)
    exv.close()

    NOTES["activation_explorer"] = _AE_NOTES + "\nmeasured bytes:\n" + "\n".join(f"    {s}" for s in notes)
    return rows


_AE_NOTES = NOTES["activation_explorer"]


# ---------------------------------------------------------------------------- saliency
def measure_pair(
    ours: Callable[[], object], base: Callable[[], object], *, warmup: int = 1, repeats: int = 5,
    budget_s: float | None = None,
) -> tuple[Timing, Timing]:
    """Like :func:`measure` for two functions, alternating them (ours, baseline, ours, ...) so
    that a change in the machine's load hits both alike. ``budget_s`` counts both."""
    for _ in range(warmup):
        ours()
        base()
    t_ours: list[float] = []
    t_base: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        for fn, times in ((ours, t_ours), (base, t_base)):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
        if budget_s is not None and spent >= budget_s:
            break
    return Timing(statistics.median(t_ours), len(t_ours)), Timing(statistics.median(t_base), len(t_base))


def rgb_cnn() -> nn.Sequential:
    """A VGG-ish CNN on 3x128x128, random weights (seed 0): 4 blocks conv3 (16, 32, 64, 128
    channels) + ReLU + max-pool 2, global average pool, linear 10. ~64 M multiply-adds per
    image forward, so compute dominates per-call overhead."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 3
    for width in (16, 32, 64, 128):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def bare_batch_gradient(model: nn.Module, batch: torch.Tensor, target: int) -> torch.Tensor:
    """Baseline: the method's input images (built beforehand, untimed) as ONE batch, one
    forward, one backward of the summed target logits, the input gradient read."""
    xb = batch.clone().requires_grad_(True)
    logits = model(xb)
    logits[:, target].sum().backward()
    return xb.grad


def path_images(x: torch.Tensor, steps: int) -> torch.Tensor:
    """IG's images from a black baseline: x * a for a = 0, 1/steps, ..., 1 (steps + 1)."""
    alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype).view(-1, 1, 1, 1)
    return x * alphas


def noisy_images(x: torch.Tensor, samples: int, noise: float = 0.15) -> torch.Tensor:
    """SmoothGrad's images: x + N(0, (noise * (max - min))^2), ``samples`` of them."""
    g = torch.Generator().manual_seed(1)
    sigma = noise * float(x.max() - x.min())
    return x + sigma * torch.randn((samples, *x.shape[1:]), generator=g)


class BatchSizeRecorder:
    """Largest batch (dimension 0 of the first input) the model's forward has seen."""

    def __init__(self, model: nn.Module) -> None:
        self.largest = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.largest = max(self.largest, int(args[0].shape[0]))

    def remove(self) -> None:
        self._handle.remove()


@benchmark(
    "saliency",
    notes=(
        "ours = cnnwidgets.core.saliency.integrated_gradients(model, x, target, steps=50) (trapezoid\n"
        "    rule: 51 path images) / smoothgrad(model, x, target, samples=25, seed=0), one image,\n"
        "    default batch size (about 1.5 M input values: the demo's 51 / 25 images in one batch,\n"
        "    RGB 3x128x128 in batches of 32 + 19 / one of 25). Includes\n"
        "    the call's checks, building the path / noisy images and the weighted sum (a given\n"
        "    target needs no extra forward pass; target=None would add one for the top class)\n"
        "baseline = the same kind of images, built beforehand (51 path images x * a from black /\n"
        "    25 noisy copies of x at noise 0.15) stacked in ONE batch, requires_grad_, one forward,\n"
        "    logits[:, target].sum().backward(), read .grad. (Copies of x alone run faster than\n"
        "    noisy or scaled images: identical images make the max-pool and ReLU branches\n"
        "    predictable, so they would flatter the baseline)\n"
        "both: model.eval(), parameters requires_grad=False (as the methods set them); ours and\n"
        "    baseline alternate run by run, so load changes hit both alike\n"
        "threads = torch.set_num_threads for both sides: 1 and torch's default (2 here), restored\n"
        "    after; CNNWIDGETS_BENCH_SALIENCY_THREADS=1 (or 2, or 1,2) picks. On 2 cores shared with\n"
        "    other processes, 2 threads make every op wait for the other core, which swamps the\n"
        "    ratio (more, smaller ops in ours); the 1-thread rows are the steadier measure\n"
        "RGB CNN = 4 blocks conv3 (16, 32, 64, 128) + ReLU + max-pool, avg-pool, linear 10; random\n"
        "    weights (seed 0), one random 3x128x128 image\n"
        "largest batch seen = the largest dimension 0 of any input to the model's forward (a\n"
        "    forward pre-hook) during IG at 50 steps: memory is bounded by batch_size, not steps;\n"
        "    the time is that one call, at torch's default threads (smaller batches cost time)"
    ),
)
def bench_saliency(quick: bool) -> list[Row]:
    from cnnwidgets import demo
    from cnnwidgets.core.model import preserved_state
    from cnnwidgets.core.saliency import integrated_gradients, smoothgrad

    d = demo.mnist("val")
    with preserved_state(d.model):  # the demo model may be shared: restore its flags afterwards
        return _saliency_rows(quick, d, integrated_gradients, smoothgrad)


def _thread_counts(env_name: str, default: list[int]) -> list[int]:
    """Thread counts from the environment variable ``env_name`` ("1,2"), else ``default``."""
    env = os.environ.get(env_name, "").strip()
    counts = [int(t) for t in env.split(",") if t.strip()] if env else default
    return list(dict.fromkeys(counts))  # unique, in order


def _saliency_rows(quick: bool, d, integrated_gradients, smoothgrad) -> list[Row]:
    torch.manual_seed(0)
    cases = [
        # label, model, image, target, (warm-ups, repeats, budget in s for ours + baseline)
        ("demo CNN 1x28x28", d.model, d.images[:1], int(d.labels[0]), (2, 5, 10.0) if quick else (3, 15, 20.0)),
        ("RGB CNN 3x128x128", rgb_cnn(), torch.rand(1, 3, 128, 128), 0, (1, 3, 15.0) if quick else (1, 5, 40.0)),
    ]
    default_threads = torch.get_num_threads()
    threads = _thread_counts("CNNWIDGETS_BENCH_SALIENCY_THREADS", [1, default_threads])
    rows: list[Row] = []
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for label, model, x, target, (warm, reps, budget) in cases:
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                methods = [
                    ("Integrated Gradients 50 steps", lambda: integrated_gradients(model, x, target, steps=50),
                     path_images(x, 50)),
                    ("SmoothGrad 25 samples", lambda: smoothgrad(model, x, target, samples=25, seed=0),
                     noisy_images(x, 25)),
                ]
                for method, ours_fn, batch in methods:
                    n = batch.shape[0]
                    ours, base = measure_pair(
                        ours_fn, lambda: bare_batch_gradient(model, batch, target), warmup=warm, repeats=reps,
                        budget_s=budget,
                    )
                    name = f"Saliency {label}, {n_threads} thread{'s' if n_threads > 1 else ''}: {method}"
                    rows.append(overhead_row(f"{name} vs {n} fwd+bwd in one batch", ours, base, 1.2))
    finally:
        torch.set_num_threads(default_threads)

    # the internal batch bound: IG at 50 steps (51 path images) with small and large batch_size
    label, model, x, target, _ = cases[1]
    for bs in (8, 64):
        recorder = BatchSizeRecorder(model)
        try:
            t = measure(lambda: integrated_gradients(model, x, target, steps=50, batch_size=bs), warmup=0, repeats=1)
        finally:
            recorder.remove()
        expected = min(bs, 51)
        rows.append(
            Row(
                f"Saliency {label}: IG 50 steps, batch_size={bs}: largest batch seen = {recorder.largest}",
                t.median, None, None, f"largest batch <= {expected}", recorder.largest <= expected,
                f"{t.repeats}/-",
            )
        )
    return rows


# ---------------------------------------------------------------------------- t-SNE
def tsne_features(n: int, dim: int = 192, clusters: int = 10, seed: int = 0) -> np.ndarray:
    """``n`` x ``dim`` float32 features: ``clusters`` Gaussian clusters of equal size (unit
    variance around centres drawn from N(0, 2^2) per dimension), points in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (clusters, dim))
    labels = rng.permutation(np.arange(n) % clusters)
    return (centres[labels] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32)


@benchmark(
    "tsne",
    notes=(
        "ours = cnnwidgets.core.embedding.tsne(features, perplexity=30, seed=0, n_iter=750,\n"
        "    n_jobs=T): openTSNE, 250 early-exaggeration + 500 iterations, PCA init; gradients by\n"
        "    FFT interpolation from 10,000 points (Barnes-Hut below, openTSNE's rule: the quick\n"
        "    run's 2,000 points use Barnes-Hut)\n"
        "baseline = sklearn.manifold.TSNE(n_components=2, perplexity=30, init='pca',\n"
        "    random_state=0, max_iter=750, method='barnes_hut', n_jobs=T).fit_transform(features)\n"
        "threads: each pair runs inside threadpoolctl.threadpool_limits(T) (BLAS and OpenMP, so\n"
        "    sklearn's Barnes-Hut gradient uses T threads too) with n_jobs=T on both sides.\n"
        "    Default T = 2 (all cores here) in a full run and in --quick; set\n"
        "    CNNWIDGETS_BENCH_TSNE_THREADS=1,2 to add the single-threaded pair (~4 more minutes)\n"
        "data = Gaussian clusters (10, unit variance, centres N(0, 2^2) per dimension), float32,\n"
        "    seed 0; one timed run each (no repeats), after an untimed 300-point warm-up of both"
    ),
)
def bench_tsne(quick: bool) -> list[Row]:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from cnnwidgets.core.embedding import tsne

    n = 2_000 if quick else 10_000
    x = tsne_features(n)
    threads = _thread_counts("CNNWIDGETS_BENCH_TSNE_THREADS", [2])

    def ours(data: np.ndarray, t: int) -> np.ndarray:
        return tsne(data, perplexity=30, seed=0, n_iter=750, n_jobs=t)

    def sklearn_tsne(data: np.ndarray, t: int) -> np.ndarray:
        return TSNE(
            n_components=2, perplexity=30, init="pca", random_state=0, max_iter=750,
            method="barnes_hut", n_jobs=t,
        ).fit_transform(data)

    # untimed warm-up: imports, first calls into the compiled extensions
    warm = tsne_features(300)
    with threadpool_limits(limits=max(threads)):
        ours(warm, max(threads))
        sklearn_tsne(warm, max(threads))

    rows: list[Row] = []
    for t in threads:
        with threadpool_limits(limits=t):
            ours_t = measure(lambda: ours(x, t), warmup=0, repeats=1)
            base_t = measure(lambda: sklearn_tsne(x, t), warmup=0, repeats=1)
        size = f"{n:,} x 192{' (quick)' if quick else ''}"
        name = f"t-SNE {size}, 750 iter, {t} thread{'s' if t > 1 else ''}: openTSNE vs sklearn Barnes-Hut"
        rows.append(overhead_row(name, ours_t, base_t, 0.6))
    return rows


# ---------------------------------------------------------------------------- your own data
_DATA_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, torch
from torch import nn
sys.path.insert(0, sys.argv[3])
from cnnwidgets.core.activations import channel_stats
n, side = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(2)

class Images(torch.utils.data.Dataset):
    # 3 x 64 x 64 uint8 images made per item, then a transform (scale + normalize), as a
    # torchvision pipeline would
    def __len__(self):
        return n
    def __getitem__(self, i):
        g = np.random.default_rng(i)
        return (g.random((64, 64, 3)) * 255).astype(np.uint8), i % 10

def transform(a):
    return (torch.from_numpy(a).permute(2, 0, 1).float() / 255 - 0.5) / 0.25

torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                    nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
ds = Images()
t0 = time.perf_counter()
if side == "ours":
    from cnnwidgets.core.images import ImageSet
    st = channel_stats(net, ImageSet(ds, transform=transform, batch_size=128), "7", cache=False)
    top = np.argsort(-st.max[:, 5], kind="stable")[:9]
else:
    class T(torch.utils.data.Dataset):
        def __len__(self):
            return n
        def __getitem__(self, i):
            a, y = ds[i]
            return transform(a), y
    scores = []
    with torch.no_grad():
        for xb, _ in torch.utils.data.DataLoader(T(), batch_size=128):
            scores.append(net[:8](xb)[:, 5].flatten(1).amax(1))
    top = torch.argsort(torch.cat(scores), descending=True, stable=True)[:9].numpy()
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "top": top.tolist()}))
"""


def _data_run(n: int, side: str) -> dict:
    import subprocess
    import tempfile

    env = {**os.environ, "CNNW_CACHE_DIR": tempfile.mkdtemp(prefix="cnnw-bench-")}
    r = subprocess.run([sys.executable, "-c", _DATA_SCRIPT, str(n), side, str(ROOT)], capture_output=True,
                       text=True, env=env, timeout=3600)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


@benchmark(
    "data",
    notes=(
        "data = a Dataset of N images of 3 x 64 x 64 (uint8 made per item, then a transform to a\n"
        "    normalized float tensor), batch 128, 2 threads, each side in a fresh process\n"
        "ours = core.channel_stats(net, ImageSet(dataset, transform=...), layer, cache=False): the\n"
        "    pass behind top images (max and mean of all 64 channels of the layer, into N x 64 arrays)\n"
        "baseline = a plain DataLoader loop running the net only up to that layer and keeping one\n"
        "    channel's max per image; peak RSS is the process's maximum resident set (ru_maxrss)\n"
        "t-SNE rows: openTSNE (FFT gradients) on N x 128 features beside scikit-learn's Barnes-Hut on\n"
        "    a 10,000-point subsample, whose time is scaled by (N log N) / (10,000 log 10,000)"
    ),
)
def bench_data(quick: bool) -> list[Row]:
    rows: list[Row] = []
    sizes = (5_000,) if quick else (5_000, 20_000)
    for n in sizes:
        ours = _data_run(n, "ours")
        base = _data_run(n, "plain")
        assert ours["top"] == base["top"], (ours["top"], base["top"])  # the same answer
        rows.append(overhead_row(f"top images over {n:,} images 3x64x64 (Dataset + transform) vs plain DataLoader",
                                 Timing(ours["s"], 1), Timing(base["s"], 1), 1.1))
        rows.append(Row(f"  peak RSS at N = {n:,}: ours {ours['rss_mb']:.0f} MB, plain loop {base['rss_mb']:.0f} MB "
                        f"(the data as float32: {n * 3 * 64 * 64 * 4 / 2**20:.0f} MB)", None, None, None, "-", None))
    rows.extend(_tsne_large_rows(quick))
    return rows


def _tsne_large_rows(quick: bool) -> list[Row]:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from cnnwidgets.core.embedding import tsne

    n = 20_000 if quick else 100_000
    sub = 5_000 if quick else 10_000
    x = tsne_features(n, dim=128)
    with threadpool_limits(limits=2):
        ours = measure(lambda: tsne(x, perplexity=30, seed=0, n_iter=750, n_jobs=2), warmup=0, repeats=1)
        base = measure(lambda: TSNE(n_components=2, perplexity=30, init="pca", random_state=0, max_iter=750,
                                    method="barnes_hut", n_jobs=2).fit_transform(x[:sub]), warmup=0, repeats=1)
    scaled = base.median * (n * math.log(n)) / (sub * math.log(sub))
    return [ratio_row(f"t-SNE {n:,} x 128, 750 iter, 2 threads: openTSNE vs sklearn ({sub:,} measured, "
                      f"{base.median:.1f} s, scaled by N log N)", ours, Timing(scaled, 1), 1.0)]


@benchmark("tsne_200k", notes="tsne_200k: figures from tests/browser/test_tsne_large_browser.py (run it first)")
def bench_tsne_200k(quick: bool) -> list[Row]:
    path = ROOT / "tests" / "browser" / "_artifacts" / "tsne_200k.json"
    if not path.exists():
        return [Row("200,000-point map in the browser: run tests/browser/test_tsne_large_browser.py first",
                    None, None, None, "-", None)]
    fig = json.loads(path.read_text())
    text = ", ".join(f"{k} {v:.1f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in fig.items())
    return [Row(f"200,000-point map (browser test): {text}", None, None, None, "-", None)]


# ---------------------------------------------------------------------------- output
def _fmt_time(s: float | None, unit: str = "s") -> str:
    if s is None:
        return "-"
    if unit == "B":
        return f"{s:,.0f} B"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s < 1e-4:
        return f"{s * 1e6:.0f} us"
    return f"{s * 1e3:.1f} ms"


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:,.0f}x" if r >= 10 else f"{r:.2f}x"


def _fmt_met(m: bool | None) -> str:
    return "-" if m is None else ("yes" if m else "NO")


def print_table(rows: list[Row]) -> None:
    header = ("benchmark", "ours", "baseline", "ratio", "target", "met", "runs")
    body = [
        (
            r.name,
            _fmt_time(r.ours_s, r.unit),
            _fmt_time(r.baseline_s, r.unit),
            _fmt_ratio(r.ratio),
            r.target,
            _fmt_met(r.met),
            r.runs,
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    align = ["<", ">", ">", ">", "<", "<", ">"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print(line(b))


def machine_info() -> str:
    return (
        f"machine: {platform.machine()} {os.cpu_count()} cores (torch threads {torch.get_num_threads()}) | "
        f"python {platform.python_version()} | torch {torch.__version__} | numpy {np.__version__} | "
        f"matplotlib {matplotlib.__version__}"
    )


# ---------------------------------------------------------------------------- OIPOptimizer
def _bare_oip_loop(model: nn.Module, layer_prefix: nn.Module, channel: int, steps: int, lr: float,
                   mean: float, std: float, shape: tuple[int, int, int] = (1, 28, 28)) -> torch.Tensor:
    """The straightforward loop: gray + noise start, forward to the layer, mean of one map,
    gradient normalized by its RMS, step, clamp to [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = (0.5 + (torch.rand(1, *shape, generator=g) - 0.5) * (20 / 255)).requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        act = layer_prefix((x - mean) / std)
        value = act[:, channel].mean()
        (grad,) = torch.autograd.grad(value, x)
        with torch.no_grad():
            x += lr * grad / (grad.pow(2).mean().sqrt() + 1e-8)
            x.clamp_(0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    return x.detach()


def _vgg_to_conv3_3() -> nn.Sequential:
    torch.manual_seed(0)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256]
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers).eval()


@benchmark(
    "oip",
    notes=(
        "widget loop = OIPOptimizer.run(steps) on the demo CNN (features.6, one channel, RMS steps):\n"
        "    background thread, per-step callback, throttled live updates (<= 15/s), log snapshots,\n"
        "    the final class check; bare loop = the same objective and step rule written as a plain\n"
        "    torch loop on a Sequential prefix. Both with torch.set_num_threads(1) (two threads on two\n"
        "    shared cores swing 10x), run alternately, ratio = median of the per-pair ratios\n"
        "batch mode = one optimize() call with B channels as a batch vs B calls of one channel,\n"
        "    VGG16-shaped network up to conv3_3 (random weights) at 3 x 128 x 128, alternately;\n"
        "    at torch's default thread count (the batch keeps both cores busy) and, for information,\n"
        "    at one thread (where a 128 x 128 image already fills the core and batching gains little);\n"
        "    raw torch rows: the same prefix in plain torch, one fwd+bwd of a batch vs the images one\n"
        "    by one -- what batching itself gains on this machine, an upper bound for batch mode\n"
        "target conv layers compute only the targeted channels in both modes (core.optimize)"
    ),
)
def bench_oip(quick: bool) -> list[Row]:
    import cnnwidgets
    from cnnwidgets.core import optimize as opt

    rows: list[Row] = []
    d = cnnwidgets.demo.mnist("val")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rows.append(_oip_widget_row(d, cnnwidgets, quick))
        vgg = _vgg_to_conv3_3()
        rows.append(_oip_vgg_widget_row(vgg, cnnwidgets, quick))
        for n_threads in dict.fromkeys([threads, 1]):
            torch.set_num_threads(n_threads)
            rows.append(_oip_batch_row(vgg, opt, n_threads, quick, target=n_threads == threads))
            rows.append(_raw_batch_row(vgg, n_threads, quick))
        torch.set_num_threads(1)
        rows.append(_oip_small_batch_row(d, opt, quick))
        rows.extend(_oip_thread_rows(d, cnnwidgets, threads, quick))
        rows.append(_channels_last_row(vgg, opt, threads, quick))
        torch.set_num_threads(threads)
        n_steps = 20 if quick else 200
        all128 = measure(lambda: opt.optimize(d.model, opt.channel("features.6", list(range(128))), (1, 28, 28),
                                              batch=128, steps=n_steps, lr=0.02, mean=d.mean, std=d.std, seed=0,
                                              snapshots=None), warmup=0, repeats=1)
        rows.append(info_row(f"OIP all 128 maps of demo features.6 (batch of 128), {n_steps} steps, "
                             f"{threads} thread{'s' if threads > 1 else ''}", all128))
    finally:
        torch.set_num_threads(threads)
    return rows


def _paired_ratio(ours: Callable[[], object], base: Callable[[], object], *, warmup: int,
                  repeats: int) -> tuple[Timing, Timing, float]:
    """Alternate ``ours`` and ``base``; return both medians and the median of base/ours per pair
    (a pair runs back to back, so a change of the machine's load hits both alike)."""
    for _ in range(warmup):
        ours()
        base()
    t_ours: list[float] = []
    t_base: list[float] = []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (base, t_base)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    ratio = statistics.median(b / o for o, b in zip(t_ours, t_base))
    return Timing(statistics.median(t_ours), repeats), Timing(statistics.median(t_base), repeats), ratio


def _oip_widget_row(d, cnnwidgets, quick: bool) -> Row:
    steps = 150 if quick else 300
    w = cnnwidgets.OIPOptimizer(d.model, "features.6", channel=5, images=d.images[:1], mean=d.mean, std=d.std,
                                lr=0.02)
    prefix = d.model.features[:7]
    try:
        ours, base, r = _paired_ratio(lambda: w.run(steps=steps),
                                      lambda: _bare_oip_loop(d.model, prefix, 5, steps, 0.02, d.mean[0], d.std[0]),
                                      warmup=3, repeats=7 if quick else 15)
    finally:
        w.close()
    return Row(f"OIPOptimizer demo features.6: widget loop vs bare torch loop, {steps} steps, 1 thread "
               f"({steps / ours.median:.0f} vs {steps / base.median:.0f} steps/s)",
               ours.median, base.median, r, ">= 0.9x bare steps/s", r >= 0.9, f"{ours.repeats}/{base.repeats}")


def _oip_small_batch_row(d, opt, quick: bool) -> Row:
    """Batch mode where it pays: small images (the demo's 28 x 28), where one image per step
    leaves the core waiting on per-call overhead."""
    b, steps = (8, 20) if quick else (32, 50)
    chans = list(range(b))
    kw = dict(steps=steps, lr=0.02, mean=d.mean, std=d.std, seed=0, snapshots=None)
    ours, base, r = _paired_ratio(
        lambda: opt.optimize(d.model, opt.channel("features.6", chans), (1, 28, 28), batch=b, **kw),
        lambda: [opt.optimize(d.model, opt.channel("features.6", c), (1, 28, 28), **kw) for c in chans],
        warmup=1, repeats=3 if quick else 5)
    return Row(f"OIP batch mode, demo features.6 28x28, 1 thread: {b} channels x {steps} steps as one batch vs one at a "
               "time", ours.median, base.median, r, "- (information)", None, f"{ours.repeats}/{base.repeats}")


def _oip_thread_rows(d, cnnwidgets, threads: int, quick: bool) -> list[Row]:
    """The README's thread-count tip: the widget on the demo with one torch thread vs torch's
    default, for one image and for a batch of the widget's largest batch (MAX_BATCH = 64 maps)."""
    if threads == 1:
        return []
    rows = []
    most = cnnwidgets.OIPOptimizer.MAX_BATCH
    for label, chans, steps in (("one image", 5, 100 if quick else 200), (f"{most} maps", list(range(most)), 10 if quick else 20)):
        w = cnnwidgets.OIPOptimizer(d.model, "features.6", channel=chans, images=d.images[:1], mean=d.mean,
                                    std=d.std, lr=0.02)

        def run_with(n: int) -> None:
            torch.set_num_threads(n)  # the widget's thread takes the setting when it starts
            w.run(steps=steps)

        try:
            ours, base, r = _paired_ratio(lambda: run_with(1), lambda: run_with(threads), warmup=1,
                                          repeats=3 if quick else 5)
        finally:
            w.close()
            torch.set_num_threads(1)
        rows.append(Row(f"OIPOptimizer demo features.6, {label}, {steps} steps: 1 thread vs {threads} threads",
                        ours.median, base.median, r, "- (information)", None, f"{ours.repeats}/{base.repeats}"))
    return rows


def _channels_last_row(vgg: nn.Module, opt, threads: int, quick: bool) -> Row:
    """What the channels-last layout gains: optimize() on 3 x 128 x 128 images with the layout
    as chosen (channels-last) vs forced NCHW, batch of 8, torch's default threads."""
    b, steps = (4, 2) if quick else (8, 3)
    chans = list(range(b))
    kw = dict(batch=b, steps=steps, lr=0.02, seed=0, snapshots=None)
    from cnnwidgets.core.optimize import _forward  # the runner reads the threshold there

    default = _forward.CHANNELS_LAST_MIN_PIXELS

    def nchw():
        _forward.CHANNELS_LAST_MIN_PIXELS = 10**12
        try:
            opt.optimize(vgg, opt.channel("14", chans), (3, 128, 128), **kw)
        finally:
            _forward.CHANNELS_LAST_MIN_PIXELS = default

    torch.set_num_threads(threads)
    ours, base, r = _paired_ratio(lambda: opt.optimize(vgg, opt.channel("14", chans), (3, 128, 128), **kw), nchw,
                                  warmup=0, repeats=2 if quick else 3)
    torch.set_num_threads(1)
    return Row(f"OIP VGG16-shaped conv3_3 128x128, batch of {b}, {threads} threads: channels-last vs NCHW layout",
               ours.median, base.median, r, "- (information)", None, f"{ours.repeats}/{base.repeats}")


def _raw_batch_row(vgg: nn.Module, n_threads: int, quick: bool) -> Row:
    """What batching can gain at all here: plain torch forward + backward to the input through
    the same prefix, a batch of B images vs B single images (no cnnwidgets code)."""
    b = 4 if quick else 8
    for p in vgg.parameters():
        p.requires_grad_(False)

    def fwd_bwd(x: torch.Tensor) -> None:
        x = x.detach().requires_grad_(True)
        out = vgg(x)
        torch.autograd.grad(out[:, :b].mean(), x)

    xs = torch.rand(b, 3, 128, 128)
    ours, base, r = _paired_ratio(lambda: fwd_bwd(xs), lambda: [fwd_bwd(xs[i : i + 1]) for i in range(b)],
                                  warmup=1, repeats=2 if quick else 5)
    for p in vgg.parameters():
        p.requires_grad_(True)
    return Row(f"raw torch, same prefix, {n_threads} thread{'s' if n_threads > 1 else ''}: fwd+bwd of a batch of {b} "
               f"vs {b} single images (the ceiling for batching)", ours.median, base.median, r, "- (information)", None,
               f"{ours.repeats}/{base.repeats}")


def _oip_vgg_widget_row(vgg: nn.Module, cnnwidgets, quick: bool) -> Row:
    """The widget loop where a step is real work: one channel of conv3_3 at 3 x 128 x 128."""
    steps = 4 if quick else 10
    w = cnnwidgets.OIPOptimizer(vgg, "14", channel=5, input_shape=(3, 128, 128), lr=0.02)
    try:
        ours, base, r = _paired_ratio(lambda: w.run(steps=steps),
                                      lambda: _bare_oip_loop(vgg, vgg[:15], 5, steps, 0.02, 0.0, 1.0, (3, 128, 128)),
                                      warmup=1, repeats=2 if quick else 5)
    finally:
        w.close()
    return Row(f"OIPOptimizer VGG16-shaped conv3_3 128x128: widget loop vs bare torch loop, {steps} steps, 1 thread "
               f"({steps / ours.median:.1f} vs {steps / base.median:.1f} steps/s)", ours.median, base.median, r,
               "- (information)", None, f"{ours.repeats}/{base.repeats}")


def _oip_batch_row(vgg: nn.Module, opt, n_threads: int, quick: bool, *, target: bool) -> Row:
    b, vsteps = (4, 3) if quick else (8, 5)
    chans = list(range(b))
    ours, base, r = _paired_ratio(
        lambda: opt.optimize(vgg, opt.channel("14", chans), (3, 128, 128), batch=b, steps=vsteps, lr=0.02, seed=0,
                             snapshots=None),
        lambda: [opt.optimize(vgg, opt.channel("14", c), (3, 128, 128), steps=vsteps, lr=0.02, seed=0,
                              snapshots=None) for c in chans],
        warmup=0, repeats=1 if quick else 3)
    name = (f"OIP batch mode, VGG16-shaped to conv3_3 128x128, {n_threads} thread{'s' if n_threads > 1 else ''}: "
            f"{b} channels x {vsteps} steps as one batch vs one at a time")
    if not target:
        return Row(name, ours.median, base.median, r, "- (information)", None, f"{ours.repeats}/{base.repeats}")
    return Row(name, ours.median, base.median, r, ">= 1.4x filter-steps/s", r >= 1.4, f"{ours.repeats}/{base.repeats}")


# ---------------------------------------------------------------------------- OIP beside Lucent
OIP_LUCENT_NOTES = (
    "the issue's recipe on both sides: the demo CNN (1 x 28 x 28, MNIST normalization), channels 0..7\n"
    "    of features.6 (pre-ReLU conv), one run of 128 steps per channel (batch 1), Fourier image\n"
    "    (lucent param.image(28, channels=1): sigmoid, no colour decorrelation for 1 channel; ours\n"
    "    param='fourier', the same parameterization), Adam at lr 0.05 (lucent: torch.optim.Adam on\n"
    "    -mean; ours step_rule='adam', maximize), seed s = torch.manual_seed(s) + np.random.seed(s)\n"
    "    for lucent and seed=s for ours (the same starting spectrum); 1 torch thread\n"
    "lucent: render_vis(preprocess=False, transforms=[..., (x - 0.1307) / 0.3081], fixed_image_size=28):\n"
    "    its normalize() is ImageNet's 3-channel one, and without fixed_image_size it upsamples\n"
    "    images under 224 px to 224 before the model\n"
    "objective = one function on both sides' final images: mean of the channel's map of\n"
    "    features[:7] on (img - mean) / std, averaged over the 8 channels (and the seeds)\n"
    "'same jitter' row: both sides get lucent's own jitter(2) callable (0..1 px, zero fill; ours\n"
    "    accepts any fn(img) -> img), so only the parameterization, optimizer and loop differ;\n"
    "    'own jitter' row: each library's jitter(2) -- ours moves by -2..2 px (reflection), a\n"
    "    stronger augmentation than lucent's 0..1 px, for information\n"
    "time ratio = Lucent's time / ours for the 8 runs, pairs alternated (higher = ours faster); in the\n"
    "    'same jitter' row ours runs lucent's kornia translate (a warp) instead of its own crop\n"
    "    and is slower than with its own jitter; lucent also runs the whole model every step (no\n"
    "    early stop after the target layer, hooks on every module)\n"
    "lucent is not a dependency: without it the row prints how to install it and adds nothing. Run by\n"
    "    hand in /tmp/lucentvenv (torch-lucent 0.1.8, kornia 0.4.1), full mode (seeds 0, 1, 2): same\n"
    "    jitter: ours 11.040 vs Lucent 11.040 (8 of 8 channels >=), 1.74x faster; own jitter(2) each:\n"
    "    ours 10.760 vs 11.040, 3.26x faster. Rerun there after merging into run.py: the same objectives,\n"
    "    1.68x and 2.69x faster; --quick (seed 0): 11.178 vs 11.178 (8 of 8), 2.05x; 10.648 vs 11.178, 2.22x"
)


def _lucent_optvis():
    """lucent.optvis's (param, transform, objectives, render), or None when lucent is missing.

    A placeholder torchvision (with an inert ``transforms.Normalize``) stands in during the
    import when the real one is absent or does not import; it is removed afterwards."""
    if importlib.util.find_spec("lucent") is None:
        return None
    added: list[str] = []
    if "torchvision" not in sys.modules:
        try:
            importlib.import_module("torchvision")
        except Exception:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist"
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

            class Normalize:  # what lucent.optvis.transform imports; only its normalize() uses it
                def __init__(self, *args, **kwargs):
                    raise RuntimeError("torchvision placeholder (tests/bench): lucent's normalize() is not used")

            tr.Normalize = Normalize
            tv.transforms = tr
            sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr
            added = ["torchvision", "torchvision.transforms"]
    try:
        from lucent.optvis import objectives, param, render, transform
    except Exception as exc:  # noqa: BLE001 - kornia too new, ...
        print(f"  lucent does not import ({type(exc).__name__}: {exc})", flush=True)
        return None
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return param, transform, objectives, render


def _oip_scores(model, images: torch.Tensor, chans: list[int], mean: float, std: float) -> torch.Tensor:
    """The one scoring function: mean of map c of features.6 for image c's final image."""
    with torch.no_grad():
        maps = model.features[:7]((images.float() - mean) / std)
    return maps[torch.arange(len(chans)), chans].mean(dim=(1, 2))


@benchmark("oip_lucent", notes=OIP_LUCENT_NOTES)
def bench_oip_lucent(quick: bool) -> list[Row]:
    lucent = _lucent_optvis()
    if lucent is None:
        print("  lucent is not installed: in a throwaway venv, pip install --no-deps torch-lucent "
              "\"kornia==0.4.1\" decorator future (see ../shared/PEERS.md)", flush=True)
        return []
    param, transform, objectives, render = lucent
    import cnnwidgets
    from cnnwidgets.core import optimize as opt

    d = cnnwidgets.demo.mnist("val")
    model = d.model.eval()
    mean, std = d.mean[0], d.std[0]
    chans = list(range(8))
    steps = 128
    seeds = [0] if quick else [0, 1, 2]

    def lucent_runs(seed: int, jitter) -> torch.Tensor:
        out = []
        for c in chans:
            torch.manual_seed(seed)
            np.random.seed(seed)
            imgs = render.render_vis(
                model, objectives.channel("features_6", c),
                param_f=lambda: param.image(28, channels=1),
                optimizer=lambda p: torch.optim.Adam(p, lr=0.05),
                transforms=[jitter(), lambda x: (x - mean) / std],
                thresholds=(steps,), preprocess=False, progress=False, show_image=False, fixed_image_size=28)
            out.append(torch.from_numpy(imgs[-1]).permute(0, 3, 1, 2))
        return torch.cat(out)

    def our_runs(seed: int, jitter) -> torch.Tensor:
        out = []
        for c in chans:
            np.random.seed(seed)  # lucent's jitter draws from numpy's generator
            res = opt.optimize(model, opt.channel("features.6", c), (1, 28, 28), steps=steps, lr=0.05,
                               step_rule="adam", param="fourier", transforms=[jitter()], mean=d.mean, std=d.std,
                               seed=seed, snapshots=None)
            out.append(res.images)
        return torch.cat(out)

    cases = [
        ("same jitter (lucent's jitter(2) on both sides)", lambda: transform.jitter(2), lambda: transform.jitter(2)),
        ("own jitter(2) each (ours -2..2 px, lucent's 0..1 px)", lambda: opt.jitter(2), lambda: transform.jitter(2)),
    ]
    rows: list[Row] = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for k, (label, ours_jitter, their_jitter) in enumerate(cases):
            ours_s, theirs_s, ratios = [], [], []
            per_ours, per_theirs = [], []
            for seed in seeds:
                got: dict[str, torch.Tensor] = {}
                timed = k == 0  # the time ratio once: the jitter does not change it
                o, b, r = _paired_ratio(lambda: got.__setitem__("ours", our_runs(seed, ours_jitter)),
                                        lambda: got.__setitem__("lucent", lucent_runs(seed, their_jitter)),
                                        warmup=0 if quick or not timed else 1, repeats=1 if quick or not timed else 3)
                ours_s.append(o.median)
                theirs_s.append(b.median)
                ratios.append(r)
                per_ours.append(_oip_scores(model, got["ours"], chans, mean, std))
                per_theirs.append(_oip_scores(model, got["lucent"], chans, mean, std))
            so, sl = torch.stack(per_ours).mean(0), torch.stack(per_theirs).mean(0)
            mo, ml = float(so.mean()), float(sl.mean())
            print(f"  {label}: objective per channel (mean over seeds {seeds}):\n"
                  f"    ours   {' '.join(f'{v:6.2f}' for v in so.tolist())}  mean {mo:.3f}\n"
                  f"    lucent {' '.join(f'{v:6.2f}' for v in sl.tolist())}  mean {ml:.3f}\n"
                  f"    ours >= lucent on {int((so >= sl - 1e-4).sum())} of {len(chans)} channels; "
                  f"time lucent / ours {statistics.median(ratios):.2f}x", flush=True)
            name = (f"OIP vs Lucent render_vis, demo features.6 ch 0-7, {steps} steps, Fourier + Adam 0.05, {label}: "
                    f"objective {mo:.2f} vs {ml:.2f}")
            met = mo >= ml * (1 - 1e-3) if k == 0 else None  # the target: at least Lucent's, same recipe
            rows.append(Row(name, statistics.median(ours_s), statistics.median(theirs_s), statistics.median(ratios),
                            "objective >= Lucent's" if k == 0 else "- (information)", met,
                            f"{len(seeds)}x{1 if quick or k else 3}/{len(seeds)}x{1 if quick or k else 3}"))
    finally:
        torch.set_num_threads(threads)
    return rows


# ---------------------------------------------------------------------------- private model view
def _resnet_like() -> nn.Module:
    """A ResNet-18-shaped tree (4 stages x 2 basic blocks, BatchNorm, 64..512 channels): the
    module count and nesting of a real network, for the cost of building and checking a view."""
    from tests.conftest import BasicBlock  # the suite's torchvision-style block

    torch.manual_seed(0)
    stages, c = [], 64
    for i, w in enumerate((64, 128, 256, 512)):
        stages.append(nn.Sequential(BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w)))
        c = w
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


def _fwd_bwd(model: nn.Module, x: torch.Tensor) -> None:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)


@benchmark("model_view", notes=(
    "Every view and background job runs the user's model through a private view (module objects\n"
    "copied, parameters aliased, not copied). 'build' makes one; 'check' is what each call pays to\n"
    "see whether the user changed the model (rebuilt if so). The forward + backward rows run the\n"
    "input gradient through the view and through the bare model, alternated."))
def bench_model_view(quick: bool) -> list[Row]:
    import cnnwidgets
    from cnnwidgets.core import runner

    rows: list[Row] = []
    d = cnnwidgets.demo.mnist("val")
    res = _resnet_like().eval()
    for label, model in (("demo CNN", d.model), ("ResNet-18-shaped", res)):
        n_mod = sum(1 for _ in model.modules())
        rows.append(info_row(f"private view of the {label} ({n_mod} modules): build",
                             measure(lambda m=model: runner._build_view(m), warmup=3, repeats=50)))
        runner.private_model(model)
        rows.append(info_row(f"private view of the {label}: per-call check (private_model)",
                             measure(lambda m=model: runner.private_model(m), warmup=3, repeats=200)))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = [("demo CNN, 64 digits", d.model, d.images[:64].float()),
                 ("ResNet-18-shaped, 2 x 3x128x128", res, torch.randn(2, 3, 128, 128))]
        for label, model, x in cases:
            view = runner.private_model(model)
            ours, base, r = _paired_ratio(lambda: _fwd_bwd(view, x), lambda: _fwd_bwd(model, x),
                                          warmup=2, repeats=7 if quick else 21)
            r_ob = 1 / r
            rows.append(Row(f"input gradient (forward + backward) through the view vs the bare model, {label}",
                            ours.median, base.median, r_ob, "<= 1.05x baseline", r_ob <= 1.05,
                            f"{ours.repeats}/{base.repeats}"))
    finally:
        torch.set_num_threads(prev)
    return rows


# ---------------------------------------------------------------------------- beside Captum
@benchmark("captum", notes=(
    "The same four attributions by cnnwidgets.core.attribute and by Captum 0.9.0, on a ResNet-18-shaped\n"
    "net (nn.ReLU modules, BatchNorm, 1000 classes), batch 8 x 3 x 160 x 160, target class 3, each with its\n"
    "defaults otherwise (Captum's IG and NoiseTunnel take the whole batch at once; ours batch the path or\n"
    "the noisy copies), alternated pairs. Ratio = ours / Captum (lower is better). Ours include the private\n"
    "view, the output reading and, for guided backprop, the torch-function mode that finds every ReLU."))
def bench_captum(quick: bool) -> list[Row]:
    try:
        from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
    except ImportError:
        print("  captum is not installed: pip install captum==0.9.0", flush=True)
        return []
    from cnnwidgets.core.saliency import attribute

    torch.manual_seed(0)
    model = _resnet_like().eval()
    x = torch.randn(8, 3, 160, 160)
    t = 3
    sigma = 0.15 * float(x.max() - x.min())
    layer = model[7]  # the last stage (its second block is the layer both Grad-CAMs read)
    cases = [
        ("Integrated Gradients, 50 steps", lambda: attribute(model, x, "integrated_gradients", t, steps=50),
         lambda: IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=50)),
        ("SmoothGrad, 25 samples", lambda: attribute(model, x, "smoothgrad", t, samples=25, seed=0),
         lambda: NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=25, stdevs=sigma,
                                                        target=t, abs=False)),
        ("guided backprop", lambda: attribute(model, x, "guided_backprop", t),
         lambda: GuidedBackprop(model).attribute(x, target=t)),
        ("Grad-CAM (upsampled to the input)", lambda: attribute(model, x, "gradcam", t, layer="7.1"),
         lambda: LayerAttribution.interpolate(LayerGradCam(model, layer[1]).attribute(x, target=t, relu_attributions=True),
                                              (160, 160), interpolate_mode="bilinear")),
    ]
    rows: list[Row] = []
    for label, ours, theirs in cases:
        o, b, r = _paired_ratio(ours, theirs, warmup=1, repeats=3 if quick else 7)
        rows.append(Row(f"{label}: cnnwidgets vs Captum, ResNet-18-shaped, 8 x 3x160x160", o.median, b.median,
                        1 / r, "<= 1.05x baseline", 1 / r <= 1.05, f"{o.repeats}/{b.repeats}"))
    return rows


# ---------------------------------------------------------------------------- peer libraries
def _peer(name: str, install: str):
    """Peer library ``name`` imported by tests/peers.py (placeholders for the torchvision / ttach
    modules it imports but does not need), or None after printing how to install it."""
    if importlib.util.find_spec(name) is None:
        print(f"  {name} is not installed: {install}", flush=True)
        return None
    from _pytest.outcomes import Skipped  # what peer()'s pytest.skip raises (a BaseException)

    from tests.peers import peer

    try:
        return peer(name)
    except Skipped as exc:  # peer() found it missing after all
        print(f"  {exc}: {install}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a peer that does not import
        print(f"  {name} does not import ({type(exc).__name__}: {exc}); {install}", flush=True)
    return None


# ---------------------------------------------------------------------------- occlusion, deletion + insertion
#: Occlusion benchmark sizes: one 3 x 224 x 224 image, a 48 x 48 window every 32 pixels:
#: ceil((224 - 48) / 32) + 1 = 7 positions per side (the last window cut at the border, since 32
#: does not divide 176), 49 occluded copies + 1 clean pass; ~1-1.5 s per call on the 2 shared cores.
OCCLUSION_BENCH = dict(window=48, stride=32)


def _occlusion_case() -> tuple[nn.Module, torch.Tensor, int, int]:
    """(ResNet-18-shaped net, one 3 x 224 x 224 image, target 3, our default batch at that size)."""
    from cnnwidgets.core.saliency._common import _batch_size

    torch.manual_seed(0)
    model = _resnet_like().eval()
    x = torch.randn(1, 3, 224, 224)
    return model, x, 3, _batch_size(None, x, forward_only=True)  # 10 at 3 x 224 x 224


@benchmark("occlusion", notes=(
    "cnnwidgets.core.saliency.occlusion vs Captum 0.9.0 Occlusion on the ResNet-18-shaped net (1000\n"
    "classes), one 3 x 224 x 224 image, target 3, window 48 x 48, stride 32 (7 x 7 = 49 windows, the last\n"
    "cut at the border), baseline 0, torch's default threads. Captum gets perturbations_per_eval = our\n"
    "batch size (10 copies per pass at 224 px, from FORWARD_BATCH_VALUES), so both run the same 4 x 10 + 9\n"
    "occluded copies; Captum's default (1 copy per pass) is shown once for information (full run only).\n"
    "Alternated pairs after one warm-up pair, 3 in --quick, 7 in the full run (a single pair swung\n"
    "1.0x-1.6x on the shared cores); ratio = ours / Captum (lower is better)."))
def bench_occlusion(quick: bool) -> list[Row]:
    try:
        from captum.attr import Occlusion
    except ImportError:
        print("  captum is not installed: pip install captum==0.9.0", flush=True)
        return []
    from cnnwidgets.core.saliency.occlusion import occlusion

    model, x, t, per_eval = _occlusion_case()
    win, st = OCCLUSION_BENCH["window"], OCCLUSION_BENCH["stride"]
    rows: list[Row] = []

    o, b, r = _paired_ratio(
        lambda: occlusion(model, x, t, window=win, stride=st),
        lambda: Occlusion(model).attribute(x, sliding_window_shapes=(3, win, win), strides=(3, st, st), baselines=0.0,
                                           target=t, perturbations_per_eval=per_eval),
        warmup=1, repeats=3 if quick else 7)  # ~1 s a call: one pair alone swings 1.0x-1.6x
    rows.append(Row(f"occlusion {win}x{win} stride {st}: cnnwidgets vs Captum (perturbations_per_eval={per_eval}), "
                    "ResNet-18-shaped, 1 x 3x224x224", o.median, b.median, 1 / r, "<= 1.05x baseline", 1 / r <= 1.05,
                    f"{o.repeats}/{b.repeats}"))
    # the batch of the gradient methods (41 at 224 px) for the same occlusion: what the smaller
    # forward-only batch (FORWARD_BATCH_VALUES) gains on this machine
    from cnnwidgets.core.saliency._common import _batch_size

    big = _batch_size(None, x)
    o41, o10, r41 = _paired_ratio(lambda: occlusion(model, x, t, window=win, stride=st, batch_size=big),
                                  lambda: occlusion(model, x, t, window=win, stride=st),
                                  warmup=1, repeats=3 if quick else 5)
    rows.append(Row(f"occlusion: batches of {per_eval} (forward-only default) vs {big} (the gradient methods')",
                    o10.median, o41.median, r41, "information", None, f"{o10.repeats}/{o41.repeats}"))
    if not quick:
        default = measure(lambda: Occlusion(model).attribute(x, sliding_window_shapes=(3, win, win),
                                                             strides=(3, st, st), baselines=0.0, target=t),
                          warmup=0, repeats=1)
        rows.append(info_row("occlusion: Captum with its default perturbations_per_eval=1 (one copy per pass)",
                             default))
    return rows


@benchmark("faithfulness", notes=(
    "deletion + insertion curves (cnnwidgets.core.faithfulness.deletion_insertion) for one 3 x 224 x 224\n"
    "image on the ResNet-18-shaped net, target 3, a random attribution map, 100 steps (2 x 100 images: the\n"
    "curves share their ends), the default zero baseline and batch size (41), torch's default threads:\n"
    "time to the finished result vs the bare no-grad forward + softmax of the same 200 images in the same\n"
    "batches of 41 (the floor), alternated pairs after one warm-up pair; ratio = ours / floor, the\n"
    "median of the pairs' ratios. Ours includes the private view, ranking the pixels and building the\n"
    "step images from the ranking."))
def bench_faithfulness(quick: bool) -> list[Row]:
    from cnnwidgets.core.faithfulness import deletion_insertion

    model, x, t, per_eval = _occlusion_case()
    steps = 100
    a = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(1))
    order = torch.sort(a.sum(0).flatten(), descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    counts = (torch.arange(steps + 1) * order.numel()) // steps
    keep = torch.cat([counts, counts[1:-1]])
    ins = torch.cat([torch.zeros(steps + 1, dtype=torch.bool), torch.ones(steps - 1, dtype=torch.bool)])
    base = torch.zeros_like(x)

    def bare() -> None:
        with torch.no_grad():
            for s in range(0, len(keep), per_eval):
                m = (rank.view(1, 1, 224, 224) < keep[s:s + per_eval].view(-1, 1, 1, 1)) != ins[s:s + per_eval].view(
                    -1, 1, 1, 1)
                torch.softmax(model(torch.where(m, base, x)), dim=1)[:, t]

    # one warm-up pair: the first call pays for the batch shapes (41, 36) both sides then reuse
    ours, floor, r = _paired_ratio(lambda: deletion_insertion(model, x, a, t, steps=steps), bare,
                                   warmup=1, repeats=1 if quick else 3)
    return [
        Row(f"deletion + insertion, {steps} steps (2 x {steps} images), ResNet-18-shaped, 1 x 3x224x224: "
            "time to the result vs the bare forward passes", ours.median, floor.median, 1 / r, "<= 1.1x baseline",
            1 / r <= 1.1, f"{ours.repeats}/{floor.repeats}"),
        info_row(f"deletion + insertion, {steps} steps, ResNet-18-shaped 224 px: absolute time", ours),
    ]


# ---------------------------------------------------------------------------- beside zennit
def _vgg_like() -> nn.Module:
    """A VGG-11-shaped plain CNN at half width (no residuals): 8 conv3x3 + BatchNorm + ReLU in 5
    blocks of 32..256 channels with max pooling, adaptive average pooling to 7 x 7, classifier
    Linear(256*49, 512)-ReLU-Dropout-Linear(512, 1000). ~1.9 G multiply-adds per 224 x 224 image."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 3
    for v in (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(256 * 7 * 7, 512),
                          nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, 1000))
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding does something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


@benchmark("lrp", notes=(
    "LRP with the epsilon rule (epsilon = 1e-6) on every conv and linear layer, by\n"
    "cnnwidgets.core.saliency.lrp and by zennit 0.5.1 (LayerMapComposite: Epsilon on conv/linear, Pass on\n"
    "ReLU and BatchNorm, Norm on average pooling; SequentialMergeBatchNorm canonizer; Gradient attributor\n"
    "with output one-hot x logit, the composite registered inside the timed call, as zennit is used), on a\n"
    "half-width VGG-11-shaped CNN with BatchNorm (no residuals), batch 8 x 3 x 224 x 224, target class 3,\n"
    "at 1 and at 2 torch threads (both sides alike), alternated pairs. zennit runs on its own copy of the\n"
    "model (it changes the parameters while it runs). Ratio = ours / zennit (lower is better). Ours\n"
    "includes the private view, the torch-function mode that applies the rules, BatchNorm folding and the\n"
    "conservation figure it reports."))
def bench_lrp(quick: bool) -> list[Row]:
    install = "pip install --no-deps zennit==0.5.1"
    zennit = _peer("zennit", install)
    if zennit is None:
        return []
    try:
        import zennit.attribution
        import zennit.canonizers
        import zennit.composites
        import zennit.rules
        import zennit.types
    except ImportError as exc:
        print(f"  zennit does not import ({exc}); {install}", flush=True)
        return []
    from cnnwidgets.core.saliency.lrp import lrp

    model = _vgg_like()
    theirs_model = copy.deepcopy(model)
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    t = 3
    zt, zr = zennit.types, zennit.rules
    composite = zennit.composites.LayerMapComposite(
        layer_map=[(zt.Activation, zr.Pass()), (zt.BatchNorm, zr.Pass()), (zt.AvgPool, zr.Norm()),
                   (zt.Linear, zr.Epsilon(epsilon=1e-6))],
        canonizers=[zennit.canonizers.SequentialMergeBatchNorm()],
    )
    one_hot = torch.zeros(1, 1000)
    one_hot[0, t] = 1

    def ours() -> torch.Tensor:
        return lrp(model, x, t, rule="epsilon", epsilon=1e-6)

    def theirs() -> torch.Tensor:
        with zennit.attribution.Gradient(theirs_model, composite) as attributor:
            _, rel = attributor(x.clone(), lambda out: one_hot * out)
        return rel

    a, b = ours(), theirs()  # the same map (zennit's merged BatchNorm keeps a 1/sqrt(1 + eps) factor)
    r_corr = float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])
    print(f"  lrp vs zennit: Pearson r = {r_corr:.6f}, max |diff| / max |rel| = "
          f"{float((a - b).abs().max() / b.abs().max()):.2e}", flush=True)
    rows: list[Row] = []
    for threads in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            o, base, r = _paired_ratio(ours, theirs, warmup=1, repeats=3 if quick else 7)
        finally:
            torch.set_num_threads(prev)
        rows.append(Row(f"LRP epsilon: cnnwidgets vs zennit, VGG-11-shaped (half width, BatchNorm), 8 x 3x224x224, "
                        f"{threads} thread{'s' if threads > 1 else ''}", o.median, base.median, 1 / r,
                        "<= 1.05x baseline", 1 / r <= 1.05, f"{o.repeats}/{base.repeats}"))
    return rows


# ---------------------------------------------------------------------------- beside pytorch-grad-cam
PGC_INSTALL = "pip install --no-deps grad-cam==1.5.7 opencv-python-headless tqdm (see ../shared/PEERS.md)"


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N x H x W) scaled to [0, 1], as pytorch-grad-cam scales its own."""
    m = maps.double()
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    hi = m.flatten(1).amax(1).view(-1, 1, 1)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def _map_agreement(label: str, ours: torch.Tensor, theirs: np.ndarray) -> None:
    """Print the Pearson r, image by image, of our map (min-max scaled) and pytorch-grad-cam's."""
    a, b = _min_max(ours), torch.from_numpy(np.asarray(theirs)).double()
    r = [float(torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1]) for i in range(a.shape[0])]
    print(f"  {label} vs pytorch-grad-cam, each min-max scaled: Pearson r per image min {min(r):.6f} "
          f"(of {len(r)}), max |diff| {float((a - b).abs().max()):.2e}", flush=True)


def _pgc_rows(method: str, cls_name: str, n: int, threads: list[int], kw: dict, *, warmup: int,
              repeats: int) -> list[Row]:
    """``attribute(model, x, method, 3, layer="7.1", **kw)`` vs pytorch-grad-cam's ``cls_name`` on a
    deep copy of the ResNet-18-shaped net (the same block, ``model[7][1]``), N x 3 x 224 x 224."""
    pgc = _peer("pytorch_grad_cam", PGC_INSTALL)
    if pgc is None:
        return []
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cnnwidgets.core.saliency import attribute

    torch.manual_seed(0)
    model = _resnet_like().eval()
    theirs_model = copy.deepcopy(model)  # pytorch-grad-cam puts its hooks on the model it is given
    x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    t = 3
    targets = [ClassifierOutputTarget(t)] * n
    got: dict[str, object] = {}

    def ours() -> None:
        got["ours"] = attribute(model, x, method, t, layer="7.1", **kw)

    def theirs() -> None:
        with getattr(pgc, cls_name)(model=theirs_model, target_layers=[theirs_model[7][1]]) as cam:
            if "batch_size" in kw:
                cam.batch_size = kw["batch_size"]  # ScoreCAM's masked inputs per forward pass
            got["theirs"] = cam(input_tensor=x, targets=targets)

    label = {"scorecam": "Score-CAM", "gradcam_plus_plus": "Grad-CAM++"}[method]
    extra = f", batch_size {kw['batch_size']}" if "batch_size" in kw else ""
    rows: list[Row] = []
    prev = torch.get_num_threads()
    try:
        for k, n_threads in enumerate(threads):
            torch.set_num_threads(n_threads)
            o, b, r = _paired_ratio(ours, theirs, warmup=warmup, repeats=repeats)
            if k == 0:
                _map_agreement(label, got["ours"], got["theirs"])
            rows.append(Row(f"{label} (layer 7.1{extra}): cnnwidgets vs pytorch-grad-cam, ResNet-18-shaped, "
                            f"{n} x 3x224x224, {n_threads} thread{'s' if n_threads > 1 else ''}", o.median, b.median,
                            1 / r, "<= 1.05x baseline", 1 / r <= 1.05, f"{o.repeats}/{b.repeats}"))
    finally:
        torch.set_num_threads(prev)
    return rows


@benchmark("scorecam", notes=(
    "Score-CAM by cnnwidgets.core.attribute(model, x, 'scorecam', 3, layer='7.1', batch_size=32) and by\n"
    "pytorch-grad-cam 1.5.7 ScoreCAM(model=copy, target_layers=[copy[7][1]]) with cam.batch_size = 32,\n"
    "targets=[ClassifierOutputTarget(3)] * 1, on the ResNet-18-shaped net (1000 classes), 1 x 3 x 224 x 224,\n"
    "layer 7.1 = the last stage's second block, as in the Captum Grad-CAM row (512 channels of 7 x 7): 512\n"
    "masked inputs, so 512 forward passes per call in 16 batches of 32 on both sides (32 divides 512: the\n"
    "same batches; our default would be 41). One image and 1 torch thread (both sides) so that one call\n"
    "takes ~20 s, not minutes: at 2 threads the same call swung between 11 and 32 s with the other\n"
    "workers on the 2 cores, at 1 thread between 20 and 26 s. One pair in --quick, 3 in the full run.\n"
    "The peer gets a deep copy of the model (made once; it puts hooks on what it is given); its CAM\n"
    "object is built inside the timed call (a with block, which removes the hooks); its tqdm progress\n"
    "bar is replaced by a plain loop (no output). Alternated pairs; ratio = ours / theirs (lower is\n"
    "better). Same map: Pearson r >= 0.99999 once ours is min-max scaled, max |diff| 8e-4. Differences:\n"
    "pytorch-grad-cam upsamples the masks with align_corners=True (ours False), adds 1e-8 to the masks'\n"
    "range, builds all 512 masked images at once (308 MB) before the loop, reads each score with\n"
    ".item(), and min-max normalizes the map and resizes it with cv2 in numpy; ours builds each batch's\n"
    "masked images as it goes, returns the raw map upsampled by torch (bilinear, align_corners=False),\n"
    "and includes the private view."))
def bench_scorecam(quick: bool) -> list[Row]:
    if _peer("pytorch_grad_cam", PGC_INSTALL) is None:
        return []
    import pytorch_grad_cam.score_cam as score_cam

    bar = score_cam.tqdm
    score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, **_: it)  # no progress bars in the table's output
    try:
        return _pgc_rows("scorecam", "ScoreCAM", 1, [1], {"batch_size": 32}, warmup=0,
                         repeats=1 if quick else 3)
    finally:
        score_cam.tqdm = bar


@benchmark("gradcam_pp", notes=(
    "Grad-CAM++ by cnnwidgets.core.attribute(model, x, 'gradcam_plus_plus', 3, layer='7.1') and by\n"
    "pytorch-grad-cam 1.5.7 GradCAMPlusPlus(model=copy, target_layers=[copy[7][1]]),\n"
    "targets=[ClassifierOutputTarget(3)] * 8, on the ResNet-18-shaped net, 8 x 3 x 224 x 224 (one forward +\n"
    "one backward per call), at 1 thread and at torch's default (2 here), both sides alike; alternated\n"
    "pairs; ratio = ours / theirs (lower is better). The peer gets a deep copy of the model (made once;\n"
    "it puts hooks on what it is given); its CAM object is built inside the timed call (a with block,\n"
    "which removes the hooks). Same map: Pearson r >= 0.996 per image once ours is min-max scaled, max\n"
    "|diff| 0.07: pytorch-grad-cam adds 1e-6 to alpha's denominator, which shifts the small gradients of\n"
    "this random-weight net (checked by hand: with the last Linear's weights and bias x 100 that term is\n"
    "negligible and r = 1.000000, max |diff| 2.4e-4). Differences in the work: pytorch-grad-cam runs\n"
    "loss.backward() through the whole net into every parameter's .grad (model.zero_grad() first),\n"
    "computes alpha in numpy, then min-max normalizes and resizes each map with cv2; ours takes the\n"
    "gradient of the summed target scores with respect to the layer's output only\n"
    "(torch.autograd.grad), in torch, includes the private view and returns the raw map upsampled by\n"
    "torch (bilinear, align_corners=False)."))
def bench_gradcam_pp(quick: bool) -> list[Row]:
    default = torch.get_num_threads()
    return _pgc_rows("gradcam_plus_plus", "GradCAMPlusPlus", 8, list(dict.fromkeys([1, default])), {},
                     warmup=1, repeats=3 if quick else 7)


# ---------------------------------------------------------------------------- kernel-thread latency
def _handler_latencies(fire: Callable[[int], None], n: int, settle: Callable[[], object]) -> list[float]:
    """Wall time of ``fire(i)`` on this (the kernel's) thread, n times, letting the view settle
    between events (so each event meets the background job, not a queue of our own)."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fire(i)
        out.append(time.perf_counter() - t0)
        settle()
    return out


@benchmark("kernel_latency", notes=(
    "How long a page event keeps the kernel's thread (the handler's return) while a background\n"
    "job runs on the same model: OIP (100,000 steps, stopped afterwards) or t-SNE over 2,000\n"
    "digits. Image change and channel click on ActivationExplorer, class-bar click on\n"
    "SaliencyViewer, each on images not seen before. Target: max under 50 ms."))
def bench_kernel_latency(quick: bool) -> list[Row]:
    import cnnwidgets

    d = cnnwidgets.demo.mnist("val")
    kw = dict(mean=d.mean, std=d.std)
    n = 10 if quick else 30
    rows: list[Row] = []
    ae = cnnwidgets.ActivationExplorer(d.model, d.images, d.labels, d.classes, **kw)
    sv = cnnwidgets.SaliencyViewer(d.model, d.images, d.labels, d.classes, **kw)
    try:
        ae.wait()
        sv.wait()
        for job in ("OIP", "t-SNE"):
            if job == "OIP":
                w = cnnwidgets.OIPOptimizer(d.model, "features.6", channel=5, images=d.images[:1], **kw)
                w.run(steps=100_000, block=False)
            else:
                w = cnnwidgets.TSNEScatter(d.model, d.images[:2000], d.labels[:2000], d.classes, **kw)
            base = 100 if job == "OIP" else 1000
            events = {
                "image change": lambda i: ae.set_state({"index": base + i}),
                "channel click": lambda i: ae.set_state({"channel": (i * 7) % 64}),
                "class-bar click": lambda i: (sv.set_state({"index": base + 300 + i}),
                                              sv._bars.set_state({"selected": [(i + 3) % 10]})),
            }
            try:
                for name, fire in events.items():
                    lat = _handler_latencies(fire, n, lambda: (ae.wait(), sv.wait()))
                    med, worst = statistics.median(lat), max(lat)
                    running = "running" if getattr(w, "running", True) else "finished"
                    rows.append(Row(f"kernel thread, {name} while {job} runs ({running} at the end): median, max "
                                    f"{worst * 1e3:.1f} ms", med, None, None, "max < 50 ms", worst < 0.050, f"{n}/-"))
            finally:
                w.close()
    finally:
        ae.close()
        sv.close()
    return rows


@benchmark("static_picture", notes=(
    "static_picture: the picture a view's display carries for saved notebooks (a PNG and an HTML\n"
    "summary, made when the view is displayed, on the kernel's thread) beside drawing the same\n"
    "picture with matplotlib (imshow + savefig to PNG). Target: under 300 ms per view."))
def bench_static_picture(quick: bool) -> list[Row]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import cnnwidgets
    from cnnwidgets.widgets._static import picture

    def with_matplotlib(img: np.ndarray) -> bytes:
        fig = plt.figure(figsize=(img.shape[1] / 100, img.shape[0] / 100), dpi=100)
        fig.figimage(img)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()

    d = cnnwidgets.demo.mnist("val")
    torch.manual_seed(0)
    rgb = rgb_cnn().eval()
    x128 = torch.rand(16, 3, 128, 128)
    rows: list[Row] = []
    views = {
        "demo CNN": cnnwidgets.Explorer(d.model, d.images[:300], d.labels[:300], d.classes,
                                        mean=d.mean, std=d.std, tsne_images=300),
        "RGB CNN 3x128x128": cnnwidgets.Explorer(rgb, x128, tsne_images=16),
    }
    try:
        for what, ex in views.items():
            ex.tsne.wait()
            ex.optimizer.run(steps=20)
            for view in ex.views:
                img, _ = picture(view)
                if img is None:
                    continue
                ours = measure(view._repr_mimebundle_, repeats=3 if quick else 9)
                base = measure(lambda img=img: with_matplotlib(img), repeats=3 if quick else 9)
                row = ratio_row(f"{type(view).__name__} picture, {what} ({img.shape[1]}x{img.shape[0]} px)",
                                ours, base, 1.0)
                rows.append(replace(row, target=">= 1x matplotlib, < 300 ms",
                                    met=row.met and ours.median < 0.3))
        # the largest grid: 262,144 tiles, drawn at a smaller zoom for its picture
        big = cnnwidgets.FilterGrid(vgg16_conv5())
        try:
            img, _ = picture(big)
            ours = measure(big._repr_mimebundle_, repeats=3 if quick else 7)
            base = measure(lambda: with_matplotlib(big.to_image()), repeats=1 if quick else 3)
            row = ratio_row(f"FilterGrid picture, VGG16 512x512x3x3 ({img.shape[1]}x{img.shape[0]} px; "
                            "baseline: the full grid)", ours, base, 1.0)
            rows.append(replace(row, target=">= 1x matplotlib, < 300 ms", met=row.met and ours.median < 0.3))
        finally:
            big.close()
    finally:
        for ex in views.values():
            ex.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    p.add_argument("--only", metavar="NAME", action="append", help="run only this benchmark (repeatable)")
    args = p.parse_args(argv)

    selected = BENCHMARKS
    if args.only:
        known = [n for n, _ in BENCHMARKS]
        unknown = [n for n in args.only if n not in known]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
        selected = [(n, f) for n, f in BENCHMARKS if n in args.only]

    print(machine_info())
    print(
        f"mode: {'quick' if args.quick else 'full'}; times are medians; ratio = baseline / ours for "
        "'x faster' targets, ours / baseline for 'x baseline' and 'x pixels' targets",
        flush=True,
    )
    t0 = time.perf_counter()
    rows: list[Row] = []
    for name, fn in selected:
        print(f"running {name} ...", flush=True)
        rows.extend(fn(args.quick))
    print()
    print_table(rows)
    for name, _ in selected:
        if name in NOTES:
            print(f"\n[{name}]")
            for note in NOTES[name].splitlines():
                print(f"  {note}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

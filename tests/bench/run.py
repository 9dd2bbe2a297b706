"""Side-by-side speed ratios: cnnwidgets vs the straightforward way, same data, same run.

Not a test: nothing fails on time. It prints one table with, for each row, our median time,
the baseline's median time, the ratio (baseline / ours = "x faster"), the target and whether
the target is met.

    cd /work/main && python tests/bench/run.py [--quick] [--only NAME]

Adding a benchmark: write a function ``def bench_x(quick: bool) -> list[Row]`` and decorate it
with ``@benchmark("x")``; it is then run in registration order (``--only x`` runs it alone).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------- output
def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.2f} s"
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
        (r.name, _fmt_time(r.ours_s), _fmt_time(r.baseline_s), _fmt_ratio(r.ratio), r.target, _fmt_met(r.met), r.runs)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (about 30 s)")
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
    print(f"mode: {'quick' if args.quick else 'full'}; times are medians; ratio = baseline / ours", flush=True)
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

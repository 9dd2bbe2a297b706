"""The Explorer's grid in JupyterLab + headless Chromium: it reflows (two columns at 1,400 px,
one at 800 px), nothing overflows, its headings are legible in light and dark, the views stay
linked, and the README's screenshots ``explorer`` / ``explorer_dark`` come from here.

The views' own contrast and overflow are tested in their own files; here the per-view contrast
is printed for the lead, and only the dashboard's shell (the cell headings) is asserted.
"""

from __future__ import annotations

import pytest

from .conftest import save_screenshot
from .test_activation_explorer_browser import EX, _maps_geometry, _tile_centre, _wait_attr

pytestmark = pytest.mark.browser

GRID = ".cnnw-explorer-grid"
HEADING = ".cnnw-explorer-heading"
VIEWS = {  # cell name (explorer.VIEWS) -> the view's root
    "filters": ".cnnw-filter-grid",
    "activations": ".cnnw-activation-explorer",
    "saliency": ".cnnw-saliency-viewer",
    "optimizer": ".cnnw-oip-optimizer",
    "tsne": ".cnnw-tsne-scatter",
    "card": ".cnnw-channel-card",
}
SV = ".cnnw-saliency-viewer"

def _contrast_report(nb, selector: str) -> dict:
    return nb.contrast_report(selector)


LAYOUT_JS = """
() => {
  const grid = document.querySelector('.cnnw-explorer-grid');
  const area = (grid.closest('.jp-OutputArea-output') || document.body).getBoundingClientRect();
  const g = grid.getBoundingClientRect();
  const rect = (r) => ({ left: r.left, right: r.right, top: r.top, width: r.width, height: r.height });
  const cells = [...grid.children].map((c) => {
    const name = [...c.classList].find((k) => k.startsWith('cnnw-explorer-cell-'));
    const view = c.querySelector('.cnnw-root:not(.cnnw-explorer-heading)');
    return { name: name ? name.slice('cnnw-explorer-cell-'.length) : null, ...rect(c.getBoundingClientRect()),
             scroll: c.scrollWidth, client: c.clientWidth,
             view: view && { cls: view.className, ...rect(view.getBoundingClientRect()),
                             scroll: view.scrollWidth, client: view.clientWidth } };
  });
  return { area: rect(area), grid: rect(g), columns: getComputedStyle(grid).gridTemplateColumns, cells };
}
"""


def _layout_problems(nb, width: int, columns: int) -> list[str]:
    page = nb.page
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_function(
        "(w) => window.innerWidth === w", arg=width, timeout=10_000)
    page.wait_for_timeout(800)  # the views follow their new width (ResizeObserver)
    # bqplot lays a figure out again only once it is on screen (an IntersectionObserver gates
    # its relayout): bring each cell into view, as a reader scrolling down the dashboard does
    for cell in page.locator(f"{GRID} > *").all():
        cell.scroll_into_view_if_needed()
        page.wait_for_timeout(450)  # bqplot's relayout is debounced by 300 ms
    lay = page.evaluate(LAYOUT_JS)
    area, cells = lay["area"], lay["cells"]
    print(f"{width} px: output area {area['width']:.0f} px, grid columns {lay['columns']}")
    problems = []
    if [c["name"] for c in cells] != list(VIEWS):
        problems.append(f"cells {[c['name'] for c in cells]}, expected {list(VIEWS)}")
    lefts = sorted({round(c["left"]) for c in cells})
    if len(lefts) != columns:
        problems.append(f"{width} px: {len(lefts)} columns (cell left edges {lefts}), expected {columns}")
    if lay["grid"]["right"] > area["right"] + 1:
        problems.append(f"{width} px: the grid ends at {lay['grid']['right']:.0f}, the output area at {area['right']:.0f}")
    for c in cells:
        v = c["view"]
        if v is None or v["width"] == 0 or v["height"] == 0:
            problems.append(f"{width} px: {c['name']}: no visible view in its cell")
            continue
        if v["left"] < area["left"] - 1 or v["right"] > area["right"] + 1:
            problems.append(f"{width} px: {c['name']}: the view ({v['left']:.0f}..{v['right']:.0f}) is not inside the "
                            f"output area ({area['left']:.0f}..{area['right']:.0f})")
        if v["right"] > c["right"] + 1 or c["scroll"] > c["client"] + 1:
            problems.append(f"{width} px: {c['name']}: the view is wider than its cell (view ends at {v['right']:.0f}, "
                            f"cell at {c['right']:.0f}; cell content {c['scroll']} px in {c['client']} px)")
    overflow = nb.overflow_report(GRID)
    if overflow:
        problems.append(f"{width} px: overflow_report: {overflow[:8]}")
        for name, root in VIEWS.items():  # whose they are, for the lead
            print(f"{width} px: {name}: overflow {nb.overflow_report(root)[:6]}")
    return problems


def _contrast(nb, theme: str) -> list[str]:
    """Asserted: the headings (this dashboard's own text). Printed: each view's report, and the
    Selection line, for the lead (tested in the views' own files)."""
    heads = _contrast_report(nb, HEADING)
    print(f"{theme}: headings checked {heads['checked']}, failures {heads['failures']}")
    for name, root in {**VIEWS, "selection": ".cnnw-selection"}.items():
        rep = _contrast_report(nb, root)
        print(f"{theme}: {name}: checked {rep['checked']}, failures {rep['failures'][:6]}"
              f"{' ...' if len(rep['failures']) > 6 else ''}, white canvases {rep['white_canvases']}")
    problems = []
    if heads["checked"] < 2 * len(VIEWS):  # a title and a line about the view in every cell
        problems.append(f"{theme}: only {heads['checked']} heading texts checked")
    if heads["failures"]:
        problems.append(f"{theme}: heading contrast {heads['failures']}")
    # and every text of every view of the dashboard, together as a user sees them
    every = _contrast_report(nb, ".cnnw-explorer-grid .cnnw-root")
    if every["checked"] < 100 or every["failures"] or every["white_canvases"]:
        problems.append(f"{theme}: {every['checked']} texts checked, failures {every['failures'][:8]}, "
                        f"white canvases {every['white_canvases']}")
    return problems


def _screenshot(page, name: str) -> None:
    """The whole dashboard: a viewport tall enough to hold it (an element screenshot shows only
    what JupyterLab's scrolling notebook has on screen), no notification over it."""
    page.add_style_tag(content=".Toastify { display: none !important; }")
    height = page.evaluate("() => Math.ceil(document.querySelector('.cnnw-explorer').getBoundingClientRect().height)")
    page.set_viewport_size({"width": 1400, "height": height + 300})
    page.wait_for_timeout(500)
    page.locator(".cnnw-explorer").scroll_into_view_if_needed()
    save_screenshot(page, ".cnnw-explorer", name)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.wait_for_timeout(300)


def test_explorer_grid_reflows_is_legible_and_linked(open_notebook):
    nb = open_notebook(
        "explorer_layout.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "ex = cnnwidgets.Explorer(demo.model, demo.images[:300], demo.labels[:300], demo.classes,\n"
            "    mean=demo.mean, std=demo.std, tsne_images=300)\n"
            "ex",
        ],
        viewport=(1400, 1000),
    )
    page = nb.page
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # the notebook gets the width
    page.wait_for_selector(GRID, timeout=90_000)
    for root in VIEWS.values():
        page.wait_for_selector(root, timeout=60_000)
    _wait_attr(nb, EX, "mapsIndex", "0", timeout=60_000)
    _wait_attr(nb, SV, "heatIndex", "0", timeout=60_000)
    nb.kernel("ex.tsne.wait()")  # the finished map (no animation frame in the screenshots)
    page.wait_for_function("() => document.querySelector('.cnnw-tsne-scatter').dataset.points === '300'",
                           timeout=30_000)
    page.wait_for_timeout(500)

    problems = _layout_problems(nb, 1400, columns=2)
    if problems:  # for the report: whether the charts only missed the width change of their box
        page.evaluate("() => window.dispatchEvent(new Event('resize'))")
        page.wait_for_timeout(800)
        print("after a window resize event:", nb.overflow_report(GRID)[:6])
    problems += _contrast(nb, "light")
    _screenshot(page, "explorer")
    nb.set_theme("JupyterLab Dark")
    problems += _contrast(nb, "dark")
    _screenshot(page, "explorer_dark")
    problems += _layout_problems(nb, 800, columns=1)
    nb.set_theme("JupyterLab Dark High Contrast")
    problems += _contrast(nb, "high contrast")
    nb.set_theme("JupyterLab Light")

    # linked: the attribution's next image moves the feature maps (drawn by the page), and a
    # click on a feature map moves the filters to that channel
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.wait_for_timeout(500)
    page.locator(f"{SV} button.cnnw-next").first.click()
    _wait_attr(nb, EX, "mapsIndex", "1", timeout=30_000)
    assert nb.kernel_json("[ex.selection.index, ex.saliency.index, ex.activations.index]") == [1, 1, 1]
    geo, order = _maps_geometry(nb, "ex.activations")
    cell = 3
    page.locator(f"{EX} canvas.cnnw-maps").scroll_into_view_if_needed()
    x, y = _tile_centre(page, f"{EX} canvas.cnnw-maps", geo, cell)
    page.mouse.click(x, y)
    _wait_attr(nb, EX, "overlayChannel", str(order[cell]), timeout=30_000)
    nb.wait_kernel("[ex.selection.channel, ex.filters.channel]", [order[cell], order[cell]])
    # the channel card (the sixth cell) shows the channel selected, on the selection's layer
    layer = nb.kernel_json("ex.selection.layer")
    nb.wait_kernel("[ex.card.layer, ex.card.channel]", [layer, order[cell]])
    _wait_attr(nb, VIEWS["card"], "channel", str(order[cell]), timeout=30_000)
    _wait_attr(nb, VIEWS["card"], "layer", layer, timeout=30_000)

    print(*problems, sep="\n")
    assert problems == []
    assert not nb.errors, nb.errors

"""The theme outside JupyterLab: VS Code's --vscode-* variables and the plain fallback.

VS Code notebooks give their outputs the --vscode-* variables (and no --jp-* ones); an exported
page or nbviewer gives none. The views' one stylesheet falls back in that order. Opened from
disk in headless Chromium with the network off, the exported views are checked in a VS Code
dark theme, a VS Code light theme and with no variables at all: every text readable (WCAG AA,
4.5:1 against its computed background), the text colour the host's, no white canvas on dark.
"""

from __future__ import annotations

import pytest

import cnnwidgets

from .conftest import CONTRAST_JS, save_screenshot
from .test_export_html import _open

pytestmark = pytest.mark.browser

#: A few of the variables VS Code sets on a notebook's output (values of its Dark+/Light+ themes).
VSCODE = {
    "dark": {"--vscode-editor-foreground": "#cccccc", "--vscode-editor-background": "#1e1e1e",
             "--vscode-editorWidget-background": "#252526", "--vscode-input-background": "#3c3c3c",
             "--vscode-panel-border": "#80808059", "--vscode-focusBorder": "#007fd4",
             "--vscode-errorForeground": "#f48771", "--vscode-descriptionForeground": "#ccccccb3"},
    "light": {"--vscode-editor-foreground": "#3b3b3b", "--vscode-editor-background": "#ffffff",
              "--vscode-editorWidget-background": "#f8f8f8", "--vscode-input-background": "#ffffff",
              "--vscode-panel-border": "#e5e5e5", "--vscode-focusBorder": "#005fb8",
              "--vscode-errorForeground": "#f85149", "--vscode-descriptionForeground": "#3b3b3b"},
}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    demo = cnnwidgets.demo.mnist("val")
    out = tmp_path_factory.mktemp("hosts")
    grid = cnnwidgets.FilterGrid(demo.model, "features.0", zoom=8)
    sv = cnnwidgets.SaliencyViewer(demo.model, demo.images[:4], demo.labels[:4], demo.classes,
                                   mean=demo.mean, std=demo.std)
    sv.wait()
    paths = {"filter_grid": grid.save_html(out / "grid.html"), "saliency_viewer": sv.save_html(out / "sv.html", images=[0, 1])}
    grid.close()
    sv.close()
    return paths


def _apply(page, theme):
    if theme == "plain":
        return
    page.evaluate(
        """(vars) => { for (const [k, v] of Object.entries(vars)) document.body.style.setProperty(k, v);
                       document.body.style.background = vars['--vscode-editor-background'];
                       document.body.style.color = vars['--vscode-editor-foreground']; }""",
        VSCODE[theme],
    )


@pytest.mark.parametrize("theme", ["plain", "dark", "light"])
@pytest.mark.parametrize("view", ["filter_grid", "saliency_viewer"])
def test_exported_views_follow_vscode_and_plain_themes(browser, pages, view, theme):
    ctx, page, errors, requests = _open(browser, pages[view])
    try:
        _apply(page, theme)
        page.wait_for_timeout(200)
        report = page.evaluate(CONTRAST_JS, [".cnnw-root", 4.5])
        assert report["checked"] >= 3, report
        assert report["failures"] == [], report["failures"]
        assert report["white_canvases"] == [], report["white_canvases"]
        fg = page.evaluate("() => getComputedStyle(document.querySelector('.cnnw-root')).color")
        expected = {"plain": "rgb(29, 29, 29)", "dark": "rgb(204, 204, 204)", "light": "rgb(59, 59, 59)"}[theme]
        assert fg == expected, f"the view's text colour is {fg}, the host's is {expected}"
        if theme == "dark":
            save_screenshot(page, ".cnnw-root", f"{view}_vscode_dark")
        assert errors == [] and all(r.startswith(("file:", "blob:", "data:")) for r in requests)
    finally:
        ctx.close()

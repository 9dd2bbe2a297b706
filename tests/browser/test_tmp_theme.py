import pytest
pytestmark = pytest.mark.browser

def test_tmp(open_notebook):
    nb = open_notebook("tmp_theme.ipynb", [
        "import cnnwidgets\n"
        "demo = cnnwidgets.demo.mnist('val')\n"
        "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=8, height=400)\n"
        "grid"], viewport=(800, 900))
    nb.page.wait_for_selector(".cnnw-filter-grid canvas.cnnw-canvas", timeout=60000)
    print("light", nb.contrast_report())
    nb.set_theme("JupyterLab Dark")
    print("dark", nb.contrast_report())
    print("overflow", nb.overflow_report())
    nb.page.screenshot(path="/tmp/dark.png")

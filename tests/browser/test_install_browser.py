"""The wheel, installed without node/npm into a fresh venv, works in a real JupyterLab.

For each environment ("oldest": the oldest supported releases of the Jupyter stack;
"newest": their latest releases) the test builds the wheel from this tree, installs it into a
new ``python -m venv`` (no system site-packages, so the editable install of the development
env cannot shadow it), starts ``jupyter lab`` with that venv's python and a PATH without node
or npm, and checks in headless Chromium that a FilterGrid and a SaliencyViewer (its class chart
is bqplot) draw exactly the pixels their kernel computes, and that a control round-trips.

Everything installed lives under pytest's tmp folder, pip's cache included: nothing carries over
between runs. The installs take a few minutes.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.version import Version

from .conftest import _close_pages, _need, _notebook_opener, _start_server, _stop_server
from .test_filter_grid_browser import CANVAS, GRID, _assert_canvas_matches, _python_image, _wait_drawn
from .test_saliency_viewer_browser import SV, _heat_matches, _wait_attr

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]

#: The oldest releases supported (pyproject.toml's lower bounds). jupyterlab 4.0.2: the oldest
#: that notebook 7.0.0 accepts. jupyterlab_widgets 3.0.8 (with its twin widgetsnbextension
#: 4.0.8): the first whose front end declares JupyterLab 4 (3.0.7's wants ^3); ipywidgets 8.0.0
#: accepts it. traitlets 5.9.0 is the package's own floor (pip then takes an IPython that
#: accepts it).
OLDEST = {
    "jupyterlab": "4.0.2",
    "notebook": "7.0.0",
    "ipywidgets": "8.0.0",
    "jupyterlab_widgets": "3.0.8",
    "widgetsnbextension": "4.0.8",
    "anywidget": "0.9.0",
    "bqplot": "0.12.40",
    "traitlets": "5.9.0",
}
#: What the "newest" environment installs unpinned, so pip takes the latest releases.
NEWEST = ["jupyterlab", "notebook", "ipywidgets", "anywidget", "bqplot"]
#: Reported for each environment (what the kernel imports).
REPORTED = [*OLDEST, "jupyter_server", "ipykernel", "ipython", "torch", "numpy"]

STATIC = ["cnnwidgets.css", "filter_grid.js", "activation_explorer.js", "selection.js",
          "saliency_viewer.js", "tsne_scatter.js", "oip_optimizer.js", "channel_card.js"]
#: Executables that would let a build or a server use node.
NODE_TOOLS = {"node", "nodejs", "npm", "npx", "corepack", "yarn", "yarnpkg", "pnpm"}


def _run(cmd: list[str], env: dict, log: Path, timeout: float) -> None:
    """Run ``cmd``, its output to ``log``; fail with the log's tail if it fails."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                            cwd=log.parent).returncode
    assert rc == 0, f"{cmd[:4]} failed ({rc}):\n" + log.read_text()[-4000:]


@pytest.fixture(scope="module")
def no_node_path(tmp_path_factory) -> str:
    """A PATH with /usr/bin and /bin but no node or npm: a folder of links to every program
    there except the node tools (on this machine node lives in /usr/bin)."""
    links = tmp_path_factory.mktemp("bin-without-node")
    for folder in ("/usr/bin", "/bin"):
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            target = links / entry
            if entry not in NODE_TOOLS and not os.path.lexists(target):
                target.symlink_to(os.path.join(folder, entry))
    path = str(links)
    for tool in NODE_TOOLS:
        assert shutil.which(tool, path=path) is None, tool
    return path


def _clean_env(path: str, tmp: Path) -> dict:
    """The test's environment without anything that points Python or Jupyter at the development
    env: PATH as given, Jupyter's user folders and pip's cache in ``tmp``."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE"}}
    env.update(PATH=path, PIP_CACHE_DIR=str(tmp / "pip-cache"), PIP_NO_INPUT="1",
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"))
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """This module's scratch folder: the wheel, the venvs, pip's cache (shared by both venvs of
    one run, gone after it)."""
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def wheel(work, no_node_path) -> Path:
    """The wheel of this tree, built with no node/npm on PATH (the built bundles are there, so
    the build hook skips npm)."""
    env = _clean_env(no_node_path, work)
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO)], env,
         work / "wheel.log", timeout=300)
    (found,) = dist.glob("cnnwidgets-*.whl")
    return found


def test_wheel_holds_the_built_front_end(wheel):
    """The wheel carries every bundle and the stylesheet (hatch's ``artifacts``: they are
    git-ignored build output) and the demo's data, so no install step needs npm or a download."""
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in STATIC if f"cnnwidgets/static/{f}" not in names]
    assert missing == [], missing
    data = {n.rsplit("/", 1)[-1] for n in names if n.startswith("cnnwidgets/demo/data/")}
    assert {"mnist_cnn.pt", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= data, data
    assert not any("node_modules" in n or n.startswith("js/") for n in names)


@pytest.fixture(scope="module", params=["oldest", "newest"])
def venv(request, work, wheel, no_node_path):
    """A fresh venv with the wheel and the environment's Jupyter stack: torch first (the CPU
    build this env runs, from the wheel on disk: pinning its local version ``+cpu`` means pip
    can never fetch a CUDA build instead), then the rest in one resolve. Yields dict(name,
    python, prefix, env); the venv (about 1.6 GB) is removed after its tests."""
    _need("a CPU build of torch in the test env (its wheel on disk)", torch.__version__.endswith("+cpu"))
    name = request.param
    folder = work / name
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    bindir = folder / "bin"
    env = _clean_env(f"{bindir}{os.pathsep}{no_node_path}", work)
    env["VIRTUAL_ENV"] = str(folder)
    python = str(bindir / "python")
    log = work / f"{name}-pip.log"
    pip = [python, "-m", "pip", "install", "--no-compile", "--progress-bar", "off"]
    _run([*pip, f"torch=={torch.__version__}"], env, log, timeout=600)
    stack = [f"{k}=={v}" for k, v in OLDEST.items()] if name == "oldest" else NEWEST
    _run([*pip, str(wheel), *stack, "ipykernel"], env, log, timeout=900)
    yield {"name": name, "python": python, "prefix": folder, "env": env}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def venv_lab(venv, tmp_path_factory):
    """JupyterLab run by the venv's python: its default python3 kernel is that python."""
    info, proc, log = _start_server(tmp_path_factory, "lab", python=venv["python"], env=venv["env"])
    try:
        yield info
    finally:
        _stop_server(proc, log)


@pytest.fixture
def open_venv_notebook(venv_lab, browser):
    """open_notebook(name, cells) in the venv's JupyterLab (conftest's opener)."""
    opener, pages = _notebook_opener(venv_lab, browser)
    yield opener
    _close_pages(pages)


def _expected_versions(name: str) -> dict:
    """The versions the "oldest" env must have; for "newest", at least those of this (the
    development) env, which has the latest releases too."""
    if name == "oldest":
        return OLDEST
    return {k: importlib.metadata.version(k) for k in NEWEST}


def test_views_render_from_the_wheel(venv, open_venv_notebook, record_property):
    """The kernel is the venv's python importing the installed wheel, with no node on PATH, and
    has the environment's versions; a FilterGrid's canvas and a SaliencyViewer's map are
    exactly the pixels the kernel computes, the layer picker round-trips to the kernel, and
    bqplot draws the viewer's class chart with its tallest bar at the predicted class."""
    nb = open_venv_notebook(
        f"install_{venv['name']}.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=8, height=300)\n"
            "grid",
            "sv = cnnwidgets.SaliencyViewer(demo.model, demo.images, demo.labels, demo.classes,\n"
            "    mean=demo.mean, std=demo.std)\n"
            "sv",
        ],
        viewport=(1400, 1400),
    )
    page = nb.page

    # ---- the kernel: the venv's interpreter and the wheel's files, no node reachable
    nb.kernel("import sys, shutil, importlib.metadata")
    where = nb.kernel_json("dict(exe=sys.executable, prefix=sys.prefix, pkg=cnnwidgets.__file__,"
                           " node=shutil.which('node'), npm=shutil.which('npm'))")
    prefix = str(venv["prefix"])
    assert where["exe"].startswith(prefix) and where["prefix"] == prefix, where
    assert where["pkg"].startswith(str(venv["prefix"] / "lib")), where
    assert not where["pkg"].startswith(str(REPO)), where
    assert where["node"] is None and where["npm"] is None, where

    versions = nb.kernel_json(f"{{n: importlib.metadata.version(n) for n in {REPORTED!r}}}")
    versions["page: JupyterLab"] = page.evaluate("() => window.jupyterapp.version")
    record_property(f"versions_{venv['name']}", versions)
    print(f"\n{venv['name']}: {versions}")
    for package, version in _expected_versions(venv["name"]).items():
        if venv["name"] == "oldest":
            assert versions[package] == version, (package, versions[package])
        else:
            assert Version(versions[package]) >= Version(version), (package, versions[package], version)
    assert versions["page: JupyterLab"] == versions["jupyterlab"]

    # ---- FilterGrid: the canvas is not blank and is exactly Python's render
    _wait_drawn(nb)
    px = nb.canvas_pixels(CANVAS)
    assert len(np.unique(px.reshape(-1, 4), axis=0)) > 50, "the filter grid's canvas is (nearly) blank"
    assert _assert_canvas_matches(nb, _python_image(nb, "grid.npy")) == (0, 0)
    # a control changed in the page reaches the kernel, and the new layer is drawn
    before = int(page.get_attribute(GRID, "data-frame"))
    page.select_option(f"{GRID} select.cnnw-layer", "features.6")
    nb.wait_kernel("grid.layer", "features.6")
    page.wait_for_function("([s, n]) => Number(document.querySelector(s).dataset.frame) > n",
                           arg=[GRID, before], timeout=30_000)
    _assert_canvas_matches(nb, _python_image(nb, "grid6.npy"))

    # ---- SaliencyViewer: the map is Python's, bqplot draws the class chart (10 columns + 10 bars)
    page.wait_for_selector(f"{SV} canvas.cnnw-heat", timeout=60_000)
    _wait_attr(page, SV, "heatIndex", "0")
    heat = nb.canvas_pixels(f"{SV} canvas.cnnw-heat")
    assert len(np.unique(heat.reshape(-1, 4), axis=0)) > 20, "the saliency map's canvas is (nearly) blank"
    _heat_matches(nb)
    page.wait_for_function(f"() => document.querySelectorAll('{SV} .cnnw-chart rect.bar').length === 20",
                           timeout=30_000)
    pred = nb.kernel_json("int(sv.probabilities(0).argmax())")
    assert page.get_attribute(SV, "data-heat-target") == str(pred)
    # the second mark's 10 bars are the probabilities (the first's are the clickable columns)
    heights = page.eval_on_selector_all(f"{SV} .cnnw-chart rect.bar",
                                        "rs => rs.slice(10).map(r => r.getBoundingClientRect().height)")
    assert int(np.argmax(heights)) == pred and max(heights) > 50, heights
    assert not nb.errors, nb.errors

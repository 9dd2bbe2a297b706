"""Real-browser fixtures: a JupyterLab server on 127.0.0.1 and headless Chromium (Playwright).

The recipe follows shared/BROWSER_TESTING.md. Tests write a notebook into the server's root,
open it, run it, then drive the page and talk to the kernel through JupyterLab's own API
(``window.jupyterapp``, exposed with ``--LabApp.expose_app_in_browser``).

Under ``CI=true`` a missing browser is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

CHROMIUM = os.environ.get("CNNW_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "_artifacts"
DOCS = Path(__file__).resolve().parents[2] / "docs"
IN_CI = os.environ.get("CI", "").lower() == "true"
#: Screenshots go to tests/browser/_artifacts/screenshots/ (git-ignored); with
#: CNNW_UPDATE_DOCS=1 they are also copied into docs/ for the README. A test run never
#: modifies tracked files otherwise.
SHOTS = ARTIFACTS / "screenshots"
UPDATE_DOCS = os.environ.get("CNNW_UPDATE_DOCS") == "1"


def save_screenshot(page, selector: str, name: str) -> Path:
    """Screenshot of the element ``selector`` as ``<name>.png`` (e.g. "filter_grid_dark") in
    :data:`SHOTS`, copied to docs/ when CNNW_UPDATE_DOCS=1. Returns the path written."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.locator(selector).first.screenshot(path=str(path))
    if UPDATE_DOCS:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / path.name)
    return path


def _need(what: str, ok: bool) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"browser tests need {what}, and CI=true forbids skipping them")
    pytest.skip(f"browser tests need {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(proc, log, probe: str, what: str, timeout: float) -> None:
    """Poll ``probe`` (a URL of the server ``proc`` started, writing to the open file ``log``)
    until it answers; if the process ends or ``timeout`` seconds pass first, kill it and raise
    with the log's tail."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(probe, timeout=2).read()
            return
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                raise RuntimeError(f"{what} did not start:\n" + Path(log.name).read_text()[-3000:]) from None
            time.sleep(0.3)


def _start_server(tmp_path_factory, app: str, python: str = sys.executable, env: dict | None = None):
    """Start ``jupyter <app>`` ("lab" or "notebook") on a free port and wait until it answers.

    ``python`` runs the server (and so is the default kernel's interpreter: a kernelspec whose
    command is ``python`` means the server's); ``env`` replaces the test process's environment
    (JupyterLab's own settings variables are added to it). Returns (info, process, log file)."""
    root = tmp_path_factory.mktemp(app)
    port = _free_port()
    token = uuid.uuid4().hex
    log = open(root / "server.log", "w")
    # settings of this server alone: a theme chosen by one test run never leaks into another,
    # and no "get notified about Jupyter news?" toast covers the views in screenshots
    settings = root / "_settings"
    notes = settings / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)
    (notes / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ if env is None else env, JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1",
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / "_workspaces"))
    if app == "lab":
        extra = ["--LabApp.news_url=", "--LabApp.expose_app_in_browser=True",
                 "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    else:
        extra = ["--JupyterNotebookApp.expose_app_in_browser=True"]
    proc = subprocess.Popen(
        [
            python, "-m", "jupyter", app, "--no-browser", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--allow-root", "--ServerApp.disable_check_xsrf=True", *extra,
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_server(proc, log, f"{url}/api?token={token}", "JupyterLab", 90)
    return {"url": url, "token": token, "root": root, "app": app}, proc, log


def _stop_server(proc, log):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A running JupyterLab 4: yields dict(url, token, root, app)."""
    info, proc, log = _start_server(tmp_path_factory, "lab")
    try:
        yield info
    finally:
        _stop_server(proc, log)


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory):
    """A running Jupyter Notebook 7 server."""
    info, proc, log = _start_server(tmp_path_factory, "notebook")
    try:
        yield info
    finally:
        _stop_server(proc, log)


@pytest.fixture(scope="session")
def browser():
    _need(f"Chromium at {CHROMIUM}", os.path.exists(CHROMIUM))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic", "--enable-unsafe-swiftshader",
            ],
        )
        try:
            yield b
        finally:
            b.close()


def write_notebook(root: Path, name: str, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = root / name
    nbformat.write(nb, path)
    return path


class Notebook:
    """An open notebook page: run it, run code in its kernel, read canvases."""

    def __init__(self, page, lab, name):
        self.page = page
        self.lab = lab
        self.name = name

    def run_all(self, timeout: float = 120) -> None:
        page = self.page
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state="attached", timeout=90_000)
        page.wait_for_function("() => !!window.jupyterapp", timeout=30_000)
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }",
            timeout=90_000,
        )
        started = "() => [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
        for _attempt in range(4):
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                page.wait_for_function(started, timeout=10_000)
                break
            except Exception:
                continue
        else:
            raise AssertionError(f"{self.name}: Run All did not start any cell")

    def kernel(self, code: str, timeout: float = 60) -> str:
        """Execute ``code`` in the notebook's kernel; return what it printed (stdout)."""
        js = """
        async ([code, timeout]) => {
          const app = window.jupyterapp;
          const panel = app.shell.currentWidget;
          const kernel = panel.sessionContext.session.kernel;
          const future = kernel.requestExecute({ code, store_history: false });
          let out = ""; let err = null;
          future.onIOPub = (msg) => {
            const t = msg.header.msg_type;
            if (t === "stream") out += msg.content.text;
            if (t === "error") err = msg.content.ename + ": " + msg.content.evalue;
          };
          const timer = new Promise((_, rej) => setTimeout(() => rej(new Error("kernel timeout")), timeout * 1000));
          await Promise.race([future.done, timer]);
          return { out, err };
        }
        """
        res = self.page.evaluate(js, [code, timeout])
        if res["err"]:
            raise AssertionError(f"kernel error: {res['err']}\n{res['out']}")
        return res["out"]

    def kernel_json(self, expr: str):
        out = self.kernel(f"import json as _j; print(_j.dumps({expr}))")
        return json.loads(out.strip().splitlines()[-1])

    def wait_kernel(self, expr: str, expected, timeout: float = 20):
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.kernel_json(expr)
            if value == expected:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{expr} stayed {value!r}, expected {expected!r}")

    # ---- theme, contrast, layout (shared by every view's browser test)

    def set_theme(self, theme: str) -> None:
        """Switch JupyterLab to ``theme`` ("JupyterLab Light", "JupyterLab Dark",
        "JupyterLab High Contrast" where installed) and wait until it applies."""
        self.page.evaluate(
            "(t) => window.jupyterapp.commands.execute('apputils:change-theme', { theme: t })", theme)
        light = "false" if ("Dark" in theme or "Contrast" in theme) else "true"
        self.page.wait_for_function(
            "([name, light]) => document.body.dataset.jpThemeName === name"
            " && document.body.dataset.jpThemeLight === light"
            " && getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() !== ''",
            arg=[theme, light], timeout=30_000)
        self.page.wait_for_timeout(400)  # the views redraw their canvases on the change

    def contrast_report(self, selector: str = ".cnnw-root", minimum: float = 4.5) -> dict:
        """Every visible text element under ``selector``: its colour against its computed
        background (the first opaque background up the tree, alpha-blended), as WCAG contrast
        ratios. Returns ``{"checked": n, "failures": [{text, ratio, fg, bg, cls}...],
        "white_canvases": [...]}``; a canvas counts as white on dark when the page background
        is dark and the canvas's own computed background is white."""
        return self.page.evaluate(CONTRAST_JS, [selector, minimum])

    def overflow_report(self, selector: str = ".cnnw-root") -> list:
        """Elements under ``selector`` wider than their box (scrollWidth > clientWidth + 1,
        not counting the scroll areas meant to scroll) or sticking out of the notebook cell's
        output area. Returns a list of {cls, scroll, client, right, limit}."""
        return self.page.evaluate(OVERFLOW_JS, selector)

    def canvas_pixels(self, selector: str):
        """RGBA pixels of the canvas as a numpy array (H, W, 4)."""
        import numpy as np

        data = self.page.evaluate(
            """(sel) => {
              const c = document.querySelector(sel);
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
              return { w: c.width, h: c.height, px: Array.from(d.data) };
            }""",
            selector,
        )
        return np.asarray(data["px"], np.uint8).reshape(data["h"], data["w"], 4)


CONTRAST_JS = """
([selector, minimum]) => {
  const parse = (c) => {
    // color-mix() computes to color(srgb r g b [/ a]) with channels in 0..1
    const s = /color\\((?:srgb|display-p3) ([^)]+)\\)/.exec(c || '');
    if (s) { const p = s[1].split(/[ \\/]+/).filter(Boolean).map(Number);
             return { r: p[0] * 255, g: p[1] * 255, b: p[2] * 255, a: p.length > 3 ? p[3] : 1 }; }
    const m = /rgba?\\(([^)]+)\\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({ r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
                                   b: top.b * top.a + bottom.b * (1 - top.a), a: 1 });
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                       return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  // up the tree through shadow roots too (marimo renders each view in one)
  const up = (n) => n.parentElement || (n.getRootNode() instanceof ShadowRoot ? n.getRootNode().host : null);
  const deepAll = (sel, root = document) => [...root.querySelectorAll(sel),
    ...[...root.querySelectorAll('*')].filter((e) => e.shadowRoot).flatMap((e) => deepAll(sel, e.shadowRoot))];
  const background = (el) => {
    const layers = [];
    for (let n = el; n; n = up(n)) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const failures = []; let checked = 0; const white = [];
  for (const root of deepAll(selector)) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const el = t.parentElement;
      if (!el || seen.has(el) || !t.textContent.trim()) continue;
      seen.add(el);
      const st = getComputedStyle(el);
      const r = el.getBoundingClientRect();
      if (st.visibility === 'hidden' || st.display === 'none' || r.width === 0 || r.height === 0 || el.closest('[hidden]')) continue;
      if (el.closest('svg') && !el.closest('.cnnw-static-chart')) continue; // bqplot draws its own
      if (el.tagName === 'OPTION') continue;
      const bg = background(el);
      let fg = parse(el.closest('svg') ? st.fill : st.color);
      if (!fg) continue;
      fg = over({ ...fg, a: fg.a * Number(st.opacity || 1) }, bg);
      const q = ratio(fg, bg);
      checked += 1;
      if (q < minimum) failures.push({ text: t.textContent.trim().slice(0, 60), ratio: Math.round(q * 100) / 100,
        fg: st.color, bg: `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})`, cls: el.className && el.className.baseVal !== undefined ? el.className.baseVal : el.className });
    }
    const pageBg = background(root);
    if (lum(pageBg) < 0.2) {
      for (const c of root.querySelectorAll('canvas')) {
        const own = parse(getComputedStyle(c).backgroundColor);
        if (own && own.a > 0 && lum(own) > 0.9) white.push(c.className);
      }
    }
  }
  return { checked, failures, white_canvases: white };
}
"""

OVERFLOW_JS = """
(selector) => {
  const out = [];
  for (const root of document.querySelectorAll(selector)) {
    const area = root.closest('.jp-OutputArea-output') || root.closest('.jp-Cell') || document.body;
    const limit = area.getBoundingClientRect().right + 1;
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const st = getComputedStyle(el);
      if (st.display === 'none' || el.closest('[hidden]') || el.closest('svg')) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0) continue;
      const scrolls = /(auto|scroll)/.test(st.overflowX) || el.classList.contains('cnnw-scroll');
      const cls = (el.className && el.className.baseVal === undefined ? el.className : el.tagName) || el.tagName;
      if (!scrolls && el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0 && st.overflowX !== 'hidden')
        out.push({ cls, scroll: el.scrollWidth, client: el.clientWidth, right: r.right, limit });
      else if (r.right > limit && !el.closest('.cnnw-scroll')) out.push({ cls, scroll: el.scrollWidth, client: el.clientWidth, right: r.right, limit });
    }
  }
  return out;
}
"""


def _notebook_opener(lab, browser):
    pages = []

    def _open(name: str, cells: list[str], viewport=(1400, 1000)) -> Notebook:
        write_notebook(lab["root"], name, cells)
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"{e}\n{getattr(e, 'stack', '')}"))
        if lab["app"] == "lab":
            # a workspace of its own, reset: no notebooks restored from earlier tests
            workspace = f"t{uuid.uuid4().hex[:10]}"
            url = f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}"
        else:
            url = f"{lab['url']}/notebooks/{name}?token={lab['token']}"
        page.goto(url, timeout=90_000)
        nb = Notebook(page, lab, name)
        nb.errors = errors
        nb.run_all()
        pages.append((ctx, page, name))
        return nb

    return _open, pages


def _close_pages(pages):
    ARTIFACTS.mkdir(exist_ok=True)
    for ctx, page, name in pages:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"))
            # shut the kernel down so sessions do not pile up
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:
            pass
        ctx.close()


@pytest.fixture
def open_notebook(lab, browser):
    """open_notebook(name, cells) -> Notebook in JupyterLab 4, already running all cells."""
    opener, pages = _notebook_opener(lab, browser)
    yield opener
    _close_pages(pages)


@pytest.fixture
def open_notebook7(notebook7, browser):
    """The same in Jupyter Notebook 7."""
    opener, pages = _notebook_opener(notebook7, browser)
    yield opener
    _close_pages(pages)

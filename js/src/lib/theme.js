// Theme colours for what CSS cannot style: canvas backgrounds, gaps, highlight and text drawn
// on canvases. The values are the --cnnw-* variables of js/src/style.css, resolved on the
// view's root (so JupyterLab's, VS Code's or the plain fallbacks, whichever the host has).

const NAMES = ["fg", "fg-muted", "bg", "bg-raised", "bg-sunken", "border", "border-soft", "accent", "error", "warn", "good", "highlight"];

/** Resolved colours ({fg, fgMuted, bg, ...}) of the theme `node` is shown in. A node not in
 *  the document yet (a canvas drawn before it is attached) gets the document's theme. */
export function themeColors(node) {
  let root = node && node.closest ? node.closest(".cnnw-root") : null;
  let temp = null;
  if (!root || !root.isConnected) {
    temp = document.createElement("div");
    temp.className = "cnnw-root";
    temp.style.display = "none";
    document.body.append(temp);
    root = temp;
  }
  const probe = document.createElement("span");
  root.append(probe);
  const out = {};
  for (const name of NAMES) {
    // color-mix and var() chains resolve only through a real property: read them back from one
    probe.style.color = `var(--cnnw-${name})`;
    out[name.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = getComputedStyle(probe).color;
  }
  probe.remove();
  if (temp) temp.remove();
  out.dark = luminance(out.bg) < 0.4;
  return out;
}

/** [r, g, b] (0..255) of a computed CSS colour: "rgb(...)", "rgba(...)" or the
 *  "color(srgb r g b)" that color-mix() computes to (and marimo's "color(display-p3 r g b)",
 *  read as sRGB: close enough to draw with); null if unreadable. */
export function rgbOf(color) {
  const s = /color\((?:srgb|display-p3) ([^)]+)\)/.exec(color || "");
  if (s) return s[1].split(/[ /]+/).filter(Boolean).slice(0, 3).map((v) => Math.round(255 * Number(v)));
  const m = /rgba?\(([^)]+)\)/.exec(color || "");
  if (!m) return null;
  return m[1].split(/[ ,/]+/).filter(Boolean).slice(0, 3).map((v) => Math.round(Number(v)));
}

/** Relative luminance (WCAG) of a CSS colour string "rgb(...)"/"rgba(...)"; 1 if unreadable. */
export function luminance(color) {
  const c = rgbOf(color);
  if (!c) return 1;
  const [r, g, b] = c;
  const lin = (c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/**
 * Call `cb` when the page's theme changes (JupyterLab swaps its theme stylesheet and sets
 * data-jp-theme-* on <body>; VS Code sets a class on <body>). Returns a dispose function.
 */
export function onThemeChange(cb) {
  if (typeof MutationObserver === "undefined" || !document.body) return () => {};
  let timer = null;
  const fire = () => {
    clearTimeout(timer);
    // the new stylesheet applies a moment after the attribute changes
    timer = setTimeout(cb, 60);
  };
  const obs = new MutationObserver(fire);
  obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light", "class", "data-vscode-theme-kind"] });
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  media?.addEventListener?.("change", fire);
  return () => {
    obs.disconnect();
    media?.removeEventListener?.("change", fire);
    clearTimeout(timer);
  };
}

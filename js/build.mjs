// Bundles one ES module per widget, and the one stylesheet, into ../cnnwidgets/static/
// (no network imports). The message table (cnnwidgets/widgets/messages.json) is bundled in.
import * as esbuild from "esbuild";
import { readdirSync } from "node:fs";

const entries = readdirSync("src/widgets").filter((f) => f.endsWith(".js"));
await esbuild.build({
  entryPoints: [
    ...entries.map((f) => ({ in: `src/widgets/${f}`, out: f.replace(/\.js$/, "") })),
    { in: "src/style.css", out: "cnnwidgets" },
  ],
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: "../cnnwidgets/static",
  logLevel: "info",
});

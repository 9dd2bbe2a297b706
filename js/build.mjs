// Bundles one ES module per widget into ../cnnwidgets/static/ (no network imports).
import * as esbuild from "esbuild";
import { readdirSync } from "node:fs";

const entries = readdirSync("src/widgets").filter((f) => f.endsWith(".js"));
await esbuild.build({
  entryPoints: entries.map((f) => `src/widgets/${f}`),
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: "../cnnwidgets/static",
  logLevel: "info",
});

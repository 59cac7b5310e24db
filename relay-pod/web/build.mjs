// Bundles the session pages (relay-pod/web) into dist/web with esbuild: one app.js (uPlot
// included), one app.css and index.html, so the service serves them offline, with no CDN.
// Run by `npm run build` after tsc has type-checked this folder (relay-pod/web/tsconfig.json).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(here, "../../dist/web");
mkdirSync(outdir, { recursive: true });
await build({
  entryPoints: { app: path.join(here, "app.ts") },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outdir,
  logLevel: "warning",
});
copyFileSync(path.join(here, "index.html"), path.join(outdir, "index.html"));

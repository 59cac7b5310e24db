// tsc drops the executable bit; npm links `bin` entries, but direct execution needs it too.
import { chmodSync, existsSync } from "node:fs";
for (const file of ["dist/relay-pod/src/cli.js", "dist/operator/src/main.js"]) {
  if (existsSync(file)) chmodSync(file, 0o755);
}

#!/usr/bin/env node
import { Command } from "commander";
import { registerTrickleServer } from "./commands/trickle-server.js";
import { registerTrickleClient } from "./commands/trickle-client.js";
import { registerRun } from "./commands/run.js";
import { registerServe } from "./commands/serve.js";
import { registerDemo } from "./commands/demo.js";

const program = new Command();
program
  .name("trickle-relay")
  .description(
    "Relays Livepeer trickle streams through ComfyStream over WebRTC, and speaks the trickle protocol.",
  )
  .showHelpAfterError("(add --help for usage)");

registerTrickleServer(program);
registerTrickleClient(program);
registerRun(program);
registerServe(program);
registerDemo(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.stderr.write(`trickle-relay: ${(err as Error).message}\n`);
  process.exit(1);
}

#!/usr/bin/env node
import { Command } from "commander";

const program = new Command();
program
  .name("trickle-relay")
  .description(
    "Relays Livepeer trickle streams through ComfyStream over WebRTC, and speaks the trickle protocol.",
  )
  .showHelpAfterError("(add --help for usage)");

await program.parseAsync(process.argv);

/** `trickle-relay demo`: flags and terminal wiring; the demo itself is in ../demo/. */
import type { Command } from "commander";
import { createLogger } from "../common/log.js";
import { parseHttpUrl, parsePositiveNumber } from "../common/cli-options.js";
import { ProgressLine } from "../common/progress-line.js";
import { addSessionOptions, sessionInputFromOptions } from "./run.js";

export function registerDemo(program: Command): void {
  const command = program
    .command("demo")
    .description(
      "One command, everything local: a trickle server, a synthetic input (ffmpeg test pattern with a " +
        "running clock, encoded as a live encoder would: no B-frames, a keyframe every second), a stand-in " +
        "ComfyStream peer (or --comfystream URL), one relay session. Shows live progress, writes the output " +
        "segments to a folder (000000.ts, 000001.ts, …) and prints a summary that explains its numbers.",
    )
    .option("--duration <seconds>", "how long the synthetic input runs", parsePositiveNumber, 20)
    .option(
      "--out <dir>",
      "folder for the output segments (an earlier run's segments there are removed)",
      "demo-output",
    )
    .option("--comfystream <url>", "use this ComfyStream server instead of the stand-in peer", parseHttpUrl)
    .option("--filter <ffmpeg-filter>", "what the stand-in peer does to frames", "negate");
  addSessionOptions(command);
  command.action(async (opts) => {
    const progress = new ProgressLine(process.stderr);
    // The demo talks to a person even when its output is piped, so its log lines are readable text
    // (JSON only when asked for), printed above the progress line rather than into it.
    const logger = createLogger("trickle-relay-demo", {
      level: process.env.TRICKLE_RELAY_LOG_LEVEL ?? "warn",
      pretty: process.env.TRICKLE_RELAY_LOG_JSON !== "1",
      writePretty: (text) => progress.print(text),
    });
    const { runDemo } = await import("../demo/demo.js"); // werift and ffmpeg only when the demo runs
    const code = await runDemo(
      {
        duration: opts.duration,
        out: opts.out,
        comfystream: opts.comfystream,
        filter: opts.filter,
        session: sessionInputFromOptions(opts),
      },
      logger,
      progress,
    );
    // Everything is closed by now; a WebRTC library socket must not keep a finished demo alive.
    logger.flush();
    process.exit(code);
  });
}

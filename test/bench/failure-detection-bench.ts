/**
 * How fast a dead ComfyStream is noticed (issue 17 part 2): the relay's WebRTC peer with its
 * default liveness settings against the TS stand-in in its own process, real H.264 RTP flowing both
 * ways, then one fault per try, timed from the fault to the peer's "disconnected" state:
 *   killed          SIGKILL the stand-in (no DTLS close, nothing more sent)
 *   silent          SIGSTOP it (host gone silent; SIGCONT and kill afterwards)
 *   frames-stopped  ComfyStream's own pause_prompts: the workflow stops, ICE and RTCP go on
 *
 *   npm run bench:failure-detection [-- --tries 10 --out bench-results/failure-detection.json]
 *
 * Run inside the loopback-only namespace (the npm script does). The tests assert the behaviour
 * (test/session/peer-failure.test.ts, test/webrtc/comfystream-peer.test.ts); this measures it.
 */
import { parseArgs } from "node:util";
import { ComfyStreamPeer, type WebRtcState } from "../../relay-pod/src/webrtc/comfystream-peer.js";
import { PASSTHROUGH_WORKFLOW, startRtpSource, waitFor } from "../webrtc/helpers.js";
import { startStandinProcess } from "../session/standin-process.js";
import { ICE_ADDRESSES } from "../session/relay-harness.js";
import { machineInfo, round, writeResults } from "./results.js";

const FAULTS = ["killed", "silent", "frames-stopped"] as const;
type Fault = (typeof FAULTS)[number];

const HELP = `Usage: npm run bench:failure-detection [-- options]

Times how long the relay's WebRTC peer takes to notice a dead ComfyStream (stand-in in its own
process), over several tries per fault: killed (SIGKILL), silent (SIGSTOP), frames-stopped
(pause_prompts while ICE and RTCP go on).

Options:
  --tries N     tries per fault (default 10)
  --out FILE    results file (default bench-results/failure-detection.json, and .md beside it)
  -h, --help    this text
`;

interface Try {
  fault: Fault;
  detectedMs: number;
  /** From the last frame returned before the fault. */
  sinceLastFrameMs: number;
  reason: string;
}

async function oneTry(fault: Fault): Promise<Try> {
  const standin = await startStandinProcess({ iceAddresses: ICE_ADDRESSES });
  const peer = new ComfyStreamPeer({
    comfystreamUrl: standin.url,
    prompts: [PASSTHROUGH_WORKFLOW],
    width: 320,
    height: 240,
    iceAddresses: ICE_ADDRESSES,
  });
  const source = await startRtpSource({ seconds: 30, onPacket: (packet) => peer.sendRtp(packet) });
  try {
    await peer.connect();
    let received = 0;
    let lastFrameAt = 0;
    peer.on("rtp", () => {
      received++;
      lastFrameAt = performance.now();
    });
    await waitFor(() => received > 60, 10_000, "returned RTP");
    const lost = new Promise<number>((resolve) =>
      peer.on("state", (state: WebRtcState) => {
        if (state === "disconnected" || state === "failed") resolve(performance.now());
      }),
    );
    if (fault === "frames-stopped") await peer.request({ type: "pause_prompts" });
    const faultAt = performance.now();
    if (fault === "killed") standin.signal("SIGKILL");
    if (fault === "silent") standin.signal("SIGSTOP");
    let timer: NodeJS.Timeout | undefined;
    const detectedAt = await Promise.race([
      lost,
      new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`${fault}: not noticed in 20 s`)), 20_000)),
      ),
    ]);
    clearTimeout(timer);
    return {
      fault,
      detectedMs: round(detectedAt - faultAt, 0),
      sinceLastFrameMs: round(detectedAt - lastFrameAt, 0),
      reason: peer.lossReason ?? "",
    };
  } finally {
    source.stop();
    await peer.close().catch(() => undefined);
    await standin.stop();
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tries: { type: "string", default: "10" },
      out: { type: "string", default: "bench-results/failure-detection.json" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const tries = Number(values.tries);
  const results: Try[] = [];
  for (const fault of FAULTS) {
    for (let i = 0; i < tries; i++) {
      const result = await oneTry(fault);
      results.push(result);
      process.stderr.write(`${fault} #${i + 1}: ${result.detectedMs} ms (${result.reason})\n`);
    }
  }
  const summary = FAULTS.map((fault) => {
    const times = results.filter((r) => r.fault === fault).map((r) => r.detectedMs);
    const sinceFrame = results.filter((r) => r.fault === fault).map((r) => r.sinceLastFrameMs);
    return {
      fault,
      tries: times.length,
      detectedMs: { p50: percentile(times, 50), p95: percentile(times, 95), max: Math.max(...times) },
      sinceLastFrameMs: { p50: percentile(sinceFrame, 50), p95: percentile(sinceFrame, 95) },
      within5s: times.filter((t) => t <= 5000).length,
    };
  });
  const machine = machineInfo();
  const command = `npm run bench:failure-detection -- --tries ${tries}`;
  const markdown = [
    "# Failure detection: a dead ComfyStream noticed by the relay's peer",
    "",
    `Command: \`${command}\` on ${machine.cpu} (${machine.cores} cores, ${machine.memoryGiB} GiB), Node ${machine.node}, ${new Date().toISOString()}.`,
    "Default liveness settings (4 s timeout, checked every 250 ms); the stand-in in its own process, 320x240 H.264 RTP at 30 fps both ways on loopback.",
    "",
    "| fault | tries | fault → noticed p50 | p95 | max | last frame → noticed p50 | p95 | within 5 s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ...summary.map(
      (s) =>
        `| ${s.fault} | ${s.tries} | ${s.detectedMs.p50} ms | ${s.detectedMs.p95} ms | ${s.detectedMs.max} ms | ${s.sinceLastFrameMs.p50} ms | ${s.sinceLastFrameMs.p95} ms | ${s.within5s}/${s.tries} |`,
    ),
    "",
    "Reasons reported: " + [...new Set(results.map((r) => r.reason.replace(/\d+ ms/, "N ms")))].join("; "),
    "",
  ].join("\n");
  writeResults(
    values.out!,
    { command, machine, at: new Date().toISOString(), summary, tries: results },
    markdown,
  );
  process.stdout.write(markdown);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);

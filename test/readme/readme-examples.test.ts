/**
 * The README's standalone-service example, run as written: its `sh` block goes to bash unchanged,
 * with a ComfyStream stand-in listening where the example expects one (127.0.0.1:8889). Only what a
 * reader must fill in is filled in, by a `curl` shell function placed before the block: `ID` in a
 * URL becomes the session id that `/session/start` returned, and `[…]` becomes the example's own
 * workflow. Each curl answer is kept, and the test checks what a reader would look at.
 *
 * Issue 10: this flow answered `500 … trickle stream not found: …/mystream-out`, because the tests
 * behind it had pre-created the output channel and the README does not.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { ICE_ADDRESSES } from "../webrtc/helpers.js";

const README = path.resolve(import.meta.dirname, "../../../README.md");

/** The fenced `sh` block right after the given heading. */
function shBlockAfter(markdown: string, heading: string): string {
  const at = markdown.indexOf(heading);
  assert.ok(at >= 0, `README has a "${heading}" section`);
  const match = /```sh\n([\s\S]*?)```/.exec(markdown.slice(at));
  assert.ok(match, `a sh block under "${heading}"`);
  return match[1]!;
}

/** Before the README's lines: the curl that fills in placeholders and keeps every answer. */
function curlShim(answersDir: string): string {
  return `
answers=${JSON.stringify(answersDir)}; n=0
curl() {
  local args=() arg id=""
  [ -f "$answers/start" ] && id=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1])).session_id ?? "")' "$answers/start")
  for arg in "$@"; do
    arg="\${arg//\\/session\\/ID/\\/session\\/$id}"
    arg="\${arg//\\[…\\]/\${WORKFLOW}}"
    args+=("$arg")
  done
  n=$((n + 1))
  local name="$n"
  case "\${args[*]}" in *session/start*) name=start ;; esac
  command curl --max-time 30 "\${args[@]}" > "$answers/$name" || echo "curl failed: \${args[*]}" >> "$answers/errors"
  printf '%s %s\\n' "$name" "\${args[*]}" >> "$answers/index"
}
`;
}

describe("README: the standalone service's REST example", { skip: needsLoopbackNamespace }, () => {
  let standin: TsStandin;
  let workDir: string;

  before(async () => {
    standin = await startTsStandin({ port: 8889, iceAddresses: ICE_ADDRESSES });
    workDir = await mkdtemp(path.join(tmpdir(), "readme-rest-"));
  });
  after(async () => {
    await standin?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("runs as written: the session starts, streams through ComfyStream, and its output is cut into segments", async () => {
    const block = shBlockAfter(await readFile(README, "utf8"), "### The standalone service (REST API)");
    assert.match(block, /-out|mystream/, "the example is the one this test was written for");
    const answers = path.join(workDir, "answers");
    await writeFile(path.join(workDir, "example.sh"), `${curlShim(answers)}\nmkdir -p "$answers"\n${block}`);
    const workflow = JSON.stringify([
      {
        "1": { inputs: { images: ["2", 0] }, class_type: "SaveTensor" },
        "2": { inputs: {}, class_type: "LoadTensor" },
      },
    ]);
    // In a PID namespace of its own: when the script ends, the kernel ends everything it started.
    // A process-group kill alone left `npx trickle-relay serve` running (npm's child escaped it).
    const shell = spawn(
      "unshare",
      ["--pid", "--fork", "--kill-child", "bash", path.join(workDir, "example.sh")],
      {
        cwd: path.resolve(import.meta.dirname, "../../.."),
        detached: true, // the example's `&` jobs are in this process group, ended with it
        env: { ...process.env, WORKFLOW: workflow, TRICKLE_RELAY_ICE_ADDRESSES: ICE_ADDRESSES.join(",") },
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    shell.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exitCode = await new Promise<number | null>((resolve) => shell.on("exit", resolve));
    try {
      assert.equal(exitCode, 0, `the example failed: ${stderr.slice(-2000)}`);
      const names = await readdir(answers);
      assert.ok(
        !names.includes("errors"),
        await readFile(path.join(answers, "errors"), "utf8").catch(() => ""),
      );
      const answer = async (name: string) => JSON.parse(await readFile(path.join(answers, name), "utf8"));
      const index = (await readFile(path.join(answers, "index"), "utf8")).trim().split("\n");
      const named = (fragment: string) => index.find((line) => line.includes(fragment))!.split(" ")[0]!;

      assert.deepEqual(await answer(named("/health")), { status: "healthy" });
      const start = await answer("start");
      assert.equal(start.success, true, JSON.stringify(start));
      assert.match(start.output_stream_url, /\/ai\/trickle\/mystream-out$/);

      const status = (await answer(named("/status"))).session ?? (await answer(named("/status")));
      assert.equal(status.session_id, start.session_id);
      assert.equal(status.status, "running", JSON.stringify(status.last_error));
      assert.equal(status.webrtc_state, "connected");
      // On a busy machine the in-process stand-in is slow and the relay rightly leaves frames out
      // (peer-limited: 17 of 147 came back once with the load average at 13); what a reader checks
      // is that video comes back, cut into segments.
      assert.ok(status.frames.out >= 10, `frames out after 5 s: ${JSON.stringify(status)}`);
      assert.ok(status.segments.out >= 1, `output segments after 5 s: ${status.segments.out}`);
      assert.equal(status.output_keyframes.source, "peer");

      const prompts = await answer(named("/prompts"));
      assert.equal(prompts.success, true, JSON.stringify(prompts));
      const sessions = await answer(named("/sessions"));
      assert.ok(JSON.stringify(sessions).includes(start.session_id));
      const stopped = await answer(named("-X DELETE"));
      assert.equal(stopped.success, true, JSON.stringify(stopped));
      const metrics = await readFile(path.join(answers, named("/metrics")), "utf8");
      assert.match(metrics, /^# HELP /m);
    } finally {
      try {
        process.kill(-shell.pid!, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });
});

/**
 * Writes the derived files of test/fuzz/corpus/ts from the three base files that ffmpeg made
 * (commands in test/fuzz/corpus/README.md). Run after changing hostile-ts.ts:
 *   npm run build && node dist/test/fuzz/make-corpus.js
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { CORPUS_DIR } from "./fuzz-settings.js";
import { breakSync, flagTransportErrors, reorderPackets, scrambleContinuity } from "./hostile-ts.js";

const dir = path.join(CORPUS_DIR, "ts");
const base = readFileSync(path.join(dir, "base-h264.mpegts"));
const otherPids = readFileSync(path.join(dir, "base-h264-other-pids.mpegts"));
const audioOnly = readFileSync(path.join(dir, "base-aac-only.mpegts"));
const packets = base.length / 188;
const garbage = Buffer.alloc(1000);
for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 151 + 7) & 0xff;
garbage[10] = 0x47; // a false sync byte in the garbage
garbage[198] = 0x47; // ... and one confirmed 188 bytes later

const derived: Record<string, Buffer> = {
  "bad-sync-every-7th.mpegts": breakSync(base, 7),
  "cc-jumps-on-video.mpegts": scrambleContinuity(base, 0x100, [0, 5, 3, 9, 15, 1, 8]),
  "transport-errors.mpegts": flagTransportErrors(base),
  "garbage-between-segments.mpegts": Buffer.concat([base, garbage, base]),
  "truncated-mid-packet.mpegts": base.subarray(0, base.length - 100),
  "pat-pmt-change.mpegts": Buffer.concat([base, otherPids, base]),
  "no-video-in-pmt.mpegts": audioOnly,
  "packets-reversed.mpegts": reorderPackets(
    base,
    Array.from({ length: packets }, (_, i) => packets - 1 - i),
  ),
  "every-packet-twice.mpegts": reorderPackets(
    base,
    Array.from({ length: packets * 2 }, (_, i) => Math.floor(i / 2)),
  ),
  "no-pat.mpegts": reorderPackets(
    base,
    Array.from({ length: packets }, (_, i) => i).filter((i) => base.readUInt16BE(i * 188 + 1) & 0x1fff),
  ),
  "empty.mpegts": Buffer.alloc(0),
  "one-sync-byte.mpegts": Buffer.from([0x47]),
};
for (const [name, bytes] of Object.entries(derived)) writeFileSync(path.join(dir, name), bytes);
console.log(`wrote ${Object.keys(derived).length} files to ${dir}`);

/**
 * Finding the ffmpeg and ffprobe binaries (DESIGN.md §5): $FFMPEG_BIN -> ffmpeg-static -> PATH,
 * each candidate proven by `-version`. Separate from the command lines and the child process
 * because it is the only part that looks at the environment and the file system, and it caches
 * its answer for the whole process.
 */
import { execFile } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { silentLogger, type Logger } from "../common/log.js";

export interface ResolvedFfmpeg {
  path: string;
  source: "FFMPEG_BIN" | "ffmpeg-static" | "PATH";
  /** First line of `ffmpeg -version`, e.g. "ffmpeg version 5.1.9-0+deb12u1 Copyright ...". */
  version: string;
}

export interface ResolvedFfprobe {
  path: string;
  source: "FFPROBE_BIN" | "next to ffmpeg" | "PATH";
  version: string;
}

const INSTALL_HINT =
  "install Debian's ffmpeg (apt-get install ffmpeg), or set FFMPEG_BIN to the path of an ffmpeg binary";

let ffmpegResolution: Promise<ResolvedFfmpeg> | undefined;
let ffprobeResolution: Promise<ResolvedFfprobe> | undefined;

/**
 * Finds ffmpeg: $FFMPEG_BIN -> ffmpeg-static's path if that file exists -> `ffmpeg` on PATH. Each
 * candidate must run `-version`. The result is cached; a failure is not (so a later call can see a
 * newly installed binary).
 */
export function resolveFfmpeg(options: { logger?: Logger } = {}): Promise<ResolvedFfmpeg> {
  ffmpegResolution ??= findFfmpeg(options.logger ?? silentLogger).catch((error: unknown) => {
    ffmpegResolution = undefined;
    throw error;
  });
  return ffmpegResolution;
}

/** Finds ffprobe: $FFPROBE_BIN -> `ffprobe` next to the resolved ffmpeg -> `ffprobe` on PATH. */
export function resolveFfprobe(options: { logger?: Logger } = {}): Promise<ResolvedFfprobe> {
  ffprobeResolution ??= findFfprobe(options.logger ?? silentLogger).catch((error: unknown) => {
    ffprobeResolution = undefined;
    throw error;
  });
  return ffprobeResolution;
}

/** Forgets cached resolutions (tests, or after the environment changed). */
export function clearFfmpegResolutionCache(): void {
  ffmpegResolution = undefined;
  ffprobeResolution = undefined;
}

async function findFfmpeg(logger: Logger): Promise<ResolvedFfmpeg> {
  const tried: string[] = [];
  const fromEnv = process.env.FFMPEG_BIN;
  if (fromEnv) {
    const version = await probeVersion(fromEnv);
    if (version.ok) return found({ path: fromEnv, source: "FFMPEG_BIN", version: version.version }, logger);
    tried.push(`FFMPEG_BIN=${fromEnv} (${version.reason})`);
    logger.warn(
      { path: fromEnv, reason: version.reason },
      "FFMPEG_BIN is set but not usable; trying the next choices",
    );
  }
  const staticPath = await ffmpegStaticPath();
  if (staticPath !== undefined && staticPath !== fromEnv) {
    const version = await probeVersion(staticPath);
    if (version.ok)
      return found({ path: staticPath, source: "ffmpeg-static", version: version.version }, logger);
    tried.push(`ffmpeg-static ${staticPath} (${version.reason})`);
  } else if (staticPath === undefined) {
    tried.push("ffmpeg-static (not installed or its binary was never downloaded)");
  }
  const onPath = await findOnPath("ffmpeg");
  if (onPath !== undefined) {
    const version = await probeVersion(onPath);
    if (version.ok) return found({ path: onPath, source: "PATH", version: version.version }, logger);
    tried.push(`${onPath} on PATH (${version.reason})`);
  } else {
    tried.push("ffmpeg on PATH (not found)");
  }
  throw new Error(`No usable ffmpeg found: ${INSTALL_HINT}. Tried: ${tried.join("; ")}.`);
}

function found(resolved: ResolvedFfmpeg, logger: Logger): ResolvedFfmpeg {
  logger.info(resolved, "using ffmpeg");
  return resolved;
}

async function findFfprobe(logger: Logger): Promise<ResolvedFfprobe> {
  const tried: string[] = [];
  const fromEnv = process.env.FFPROBE_BIN;
  if (fromEnv) {
    const version = await probeVersion(fromEnv);
    if (version.ok) return { path: fromEnv, source: "FFPROBE_BIN", version: version.version };
    tried.push(`FFPROBE_BIN=${fromEnv} (${version.reason})`);
  }
  try {
    const ffmpeg = await resolveFfmpeg({ logger });
    const sibling = path.join(path.dirname(ffmpeg.path), "ffprobe");
    const version = await probeVersion(sibling);
    if (version.ok) return { path: sibling, source: "next to ffmpeg", version: version.version };
    tried.push(`${sibling} (${version.reason})`);
  } catch {
    tried.push("next to ffmpeg (no ffmpeg)");
  }
  const onPath = await findOnPath("ffprobe");
  if (onPath !== undefined) {
    const version = await probeVersion(onPath);
    if (version.ok) return { path: onPath, source: "PATH", version: version.version };
    tried.push(`${onPath} on PATH (${version.reason})`);
  } else {
    tried.push("ffprobe on PATH (not found)");
  }
  throw new Error(
    `No usable ffprobe found: install Debian's ffmpeg (apt-get install ffmpeg), or set FFPROBE_BIN. Tried: ${tried.join("; ")}.`,
  );
}

/** ffmpeg-static is an optional dependency that usually fails to install offline; tolerate its absence. */
async function ffmpegStaticPath(): Promise<string | undefined> {
  const moduleName = "ffmpeg-static"; // a variable, so TypeScript does not need the package's types
  try {
    const imported = (await import(moduleName)) as { default?: unknown };
    const candidate = imported.default;
    if (typeof candidate !== "string" || candidate === "") return undefined;
    await access(candidate, fsConstants.X_OK);
    return candidate;
  } catch {
    return undefined;
  }
}

async function findOnPath(command: string): Promise<string | undefined> {
  for (const directory of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!directory) continue;
    const candidate = path.join(directory, command);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next directory
    }
  }
  return undefined;
}

function probeVersion(
  binary: string,
): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    execFile(binary, ["-hide_banner", "-version"], { timeout: 10_000 }, (error, stdout) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code;
        resolve({ ok: false, reason: code === "ENOENT" ? "no such file" : error.message.split("\n")[0] });
        return;
      }
      const firstLine = stdout.split("\n")[0]?.trim() ?? "";
      if (!/version/i.test(firstLine))
        resolve({ ok: false, reason: `unexpected -version output "${firstLine}"` });
      else resolve({ ok: true, version: firstLine });
    });
  });
}

/**
 * What the hardening tests share: a self-signed certificate made by openssl at test time, and an
 * HTTP(S) request helper that can trust that certificate and pick its source address (fetch can do
 * neither).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestCertificate {
  dir: string;
  certPath: string;
  keyPath: string;
  cert: Buffer;
  key: Buffer;
  remove(): Promise<void>;
}

/** A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day, in a temp dir. */
export async function makeSelfSignedCertificate(): Promise<TestCertificate> {
  const dir = await mkdtemp(path.join(tmpdir(), "relay-tls-"));
  const certPath = path.join(dir, "cert.pem");
  const keyPath = path.join(dir, "key.pem");
  await run("openssl", [
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", keyPath, "-out", certPath, "-days", "1", "-subj", "/CN=localhost"],
    ...["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
  ]);
  return {
    dir,
    certPath,
    keyPath,
    cert: await readFile(certPath),
    key: await readFile(keyPath),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON, or {} when it is not JSON. */
  json: Record<string, unknown>;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Trusted CA for https URLs (the test certificate). */
  ca?: Buffer;
  /** Source address, e.g. 127.0.0.3 to be another client. */
  localAddress?: string;
}

/** One request on a fresh connection; resolves with the whole answer. */
export function request(url: string, options: RequestOptions = {}): Promise<Answer> {
  const target = new URL(url);
  const headers: Record<string, string> = { ...options.headers };
  // Node sends a DELETE's body without framing unless told its length (or chunked).
  if (options.body !== undefined && headers["transfer-encoding"] === undefined)
    headers["content-length"] = String(Buffer.byteLength(options.body));
  const common = {
    method: options.method ?? "GET",
    headers,
    agent: false as const,
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  };
  return new Promise((resolve, reject) => {
    let answered = false;
    const onResponse = (res: http.IncomingMessage) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          // not JSON; callers look at text
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    };
    const req =
      target.protocol === "https:"
        ? https.request(target, { ...common, ...(options.ca ? { ca: options.ca } : {}) }, onResponse)
        : http.request(target, common, onResponse);
    // A server that refuses a large body answers and closes while the body is still being sent.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    req.end(options.body);
  });
}

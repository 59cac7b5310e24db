/**
 * Fault injection for tests of the stand-in ComfyStream, never used by the relay: with
 * STANDIN_FAULT_INJECTION=oom-on-sigusr2 in its environment, SIGUSR2 makes the stand-in allocate
 * (and touch) memory without end, so that a container memory limit gets it OOM-killed the way a
 * ComfyStream sidecar that leaks or loads too large a model would be
 * (test/operator/real-node-faults.test.ts sends the signal with `kubectl exec`).
 */
import type { Logger } from "pino";

export const FAULT_INJECTION_ENV = "STANDIN_FAULT_INJECTION";
const CHUNK_BYTES = 16 * 1024 * 1024;

export function installFaultInjection(logger: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const fault = env[FAULT_INJECTION_ENV]?.trim();
  if (!fault) return;
  if (fault !== "oom-on-sigusr2") throw new Error(`${FAULT_INJECTION_ENV}: unknown fault "${fault}"`);
  logger.warn({ fault }, "fault injection armed: SIGUSR2 allocates memory until the process is killed");
  process.once("SIGUSR2", () => {
    logger.warn("fault injection: allocating memory until killed");
    const held: Buffer[] = [];
    // fill() makes every page resident, so the cgroup counts it (an untouched alloc might not).
    const grow = (): void => {
      held.push(Buffer.alloc(CHUNK_BYTES).fill(1));
      setTimeout(grow, 20);
    };
    grow();
  });
}

#!/usr/bin/env node
// trickle-relay-operator: flags → Operator (operator.ts). Flags are the contract in operator/README.md
// (the Helm chart templates them); keep both in step.
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  createLogger,
  collect,
  onShutdownSignal,
  parsePort,
  parsePositiveInteger,
} from "../../relay-pod/src/index.js";
import { relayDefaultsFromEnv } from "./relaysession/relay-defaults.js";
import { DEFAULT_RELAY_IMAGE, Operator, POOL_BATCH_MS, type OperatorOptions } from "./operator.js";

function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError("expected seconds > 0");
  return seconds;
}

function parseMilliseconds(value: string): number {
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 0 || ms > 10_000) {
    throw new InvalidArgumentError("expected whole milliseconds from 0 to 10000");
  }
  return ms;
}

function parsePortOrZero(value: string): number {
  return value === "0" ? 0 : parsePort(value);
}

export function buildCommand(): Command {
  return new Command()
    .name("trickle-relay-operator")
    .description(
      "Runs one relay pod per RelaySession (trickle-relay.io/v1alpha1) and keeps its status: phase, " +
        "conditions, restarts. Out of cluster with --kubeconfig (or KUBECONFIG), in cluster otherwise.",
    )
    .option("--kubeconfig <path>", "kubeconfig file (default: $KUBECONFIG, else in-cluster config)")
    .option(
      "--namespace <ns>",
      "watch only this namespace (repeatable; default: all namespaces)",
      collect,
      [] as string[],
    )
    .option("--relay-image <image>", "relay pod image when a RelaySession sets none", DEFAULT_RELAY_IMAGE)
    .option("--leader-elect", "elect a leader through a Lease before reconciling (default)", true)
    .option("--no-leader-elect", "reconcile without leader election (only with a single replica)")
    .addOption(
      new Option("--leader-election-namespace <ns>", "namespace of the Lease")
        .env("POD_NAMESPACE")
        .default("default"),
    )
    .option("--leader-election-id <name>", "name of the Lease", "trickle-relay-operator")
    .option("--lease-duration <s>", "how long a lease is valid without renewal", parseSeconds, 15)
    .option(
      "--renew-deadline <s>",
      "the leader gives up if it could not renew for this long",
      parseSeconds,
      10,
    )
    .option("--retry-period <s>", "how often to try to acquire or renew the lease", parseSeconds, 2)
    .option("--metrics-port <port>", "Prometheus /metrics port (0: off)", parsePortOrZero, 8080)
    .option("--health-port <port>", "/healthz and /readyz port", parsePort, 8081)
    .option("--bind-address <ip>", "address the metrics, health and gateway servers listen on", "0.0.0.0")
    .option("--concurrency <n>", "RelaySessions reconciled in parallel", parsePositiveInteger, 4)
    .option(
      "--watch-timeout <s>",
      "advanced: a watch (or list) that delivers nothing for this long is abandoned and relisted",
      parseSeconds,
      300,
    )
    .option(
      "--request-timeout <s>",
      "advanced: an API call of the reconciler not answered within this long fails and is retried",
      parseSeconds,
      30,
    )
    .option(
      "--pool-batch <ms>",
      "advanced: a RelayPool's round runs at most once per this many ms; sessions arriving meanwhile are allocated together (0: a round per event)",
      parseMilliseconds,
      POOL_BATCH_MS,
    )
    .option(
      "--gateway-port <port>",
      "serve the standalone service's REST API by managing RelaySessions (0: off)",
      parsePortOrZero,
      0,
    )
    .option(
      "--gateway-token-file <file>",
      "file holding the gateway's bearer token (required with --gateway-port)",
    )
    .option(
      "--gateway-namespace <ns>",
      "namespace the gateway creates RelaySessions in (default: the first --namespace, else the Lease namespace)",
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .choices(["fatal", "error", "warn", "info", "debug", "trace"])
        .default("info"),
    )
    .addHelpText(
      "after",
      "\nEnvironment: KUBECONFIG, POD_NAMESPACE (default Lease namespace), POD_NAME (leader identity)," +
        "\nRELAY_DEFAULT_RESOURCES / _NODE_SELECTOR / _TOLERATIONS (JSON), RELAY_DEFAULT_RUNTIME_CLASS_NAME," +
        "\nRELAY_DEFAULT_GPU_RESOURCE_NAME: relay pod defaults; a RelaySession's spec.pod wins." +
        "\nSee operator/README.md for the pods it creates and the permissions it needs.",
    );
}

export async function main(argv: string[]): Promise<void> {
  const command = buildCommand();
  command.parse(argv);
  const flags = command.opts();
  if (flags.renewDeadline >= flags.leaseDuration) {
    command.error("--renew-deadline must be shorter than --lease-duration");
  }
  if (flags.gatewayPort > 0 && !flags.gatewayTokenFile) {
    command.error("--gateway-port needs --gateway-token-file");
  }
  let relayDefaults;
  try {
    relayDefaults = relayDefaultsFromEnv();
  } catch (err) {
    command.error((err as Error).message);
  }
  const logger = createLogger("trickle-relay-operator", { level: flags.logLevel });
  const options: OperatorOptions = {
    kubeconfigPath: flags.kubeconfig,
    namespaces: flags.namespace,
    relayImage: flags.relayImage,
    relayDefaults,
    leaderElection: flags.leaderElect
      ? {
          namespace: flags.leaderElectionNamespace,
          name: flags.leaderElectionId,
          leaseDurationSeconds: flags.leaseDuration,
          renewDeadlineSeconds: flags.renewDeadline,
          retryPeriodSeconds: flags.retryPeriod,
        }
      : undefined,
    metricsPort: flags.metricsPort,
    healthPort: flags.healthPort,
    bindAddress: flags.bindAddress,
    concurrency: flags.concurrency,
    watchdogMs: flags.watchTimeout * 1000,
    requestTimeoutMs: flags.requestTimeout * 1000,
    poolBatchMs: flags.poolBatch,
    gateway:
      flags.gatewayPort > 0
        ? {
            port: flags.gatewayPort,
            tokenFile: flags.gatewayTokenFile,
            namespace: flags.gatewayNamespace ?? flags.namespace[0] ?? flags.leaderElectionNamespace,
          }
        : undefined,
    logger,
  };
  const operator = new Operator(options);
  onShutdownSignal(async (signal) => {
    logger.info({ signal }, "shutting down");
    await operator.stop();
    process.exit(0);
  });
  operator.on("fatal", (err: Error) => {
    logger.fatal({ err }, "operator cannot continue");
    void operator.stop().finally(() => process.exit(1));
  });
  try {
    await operator.start();
  } catch (err) {
    logger.fatal({ err }, "operator failed to start");
    await operator.stop().catch(() => undefined);
    process.exit(1);
  }
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  await main(process.argv).catch((err: unknown) => {
    process.stderr.write(`trickle-relay-operator: ${(err as Error).message}\n`);
    process.exit(1);
  });
}

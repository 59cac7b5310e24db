// RelaySessions and pods for the controller tests: the crds/examples manifests with the schema
// defaults applied (what the apiserver would store), and pods in the states a kubelet reports.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { V1Pod } from "@kubernetes/client-node";
import { parse } from "yaml";
import { findRepositoryRoot } from "../../../crds/src/generate.js";
import {
  applySchemaDefaults,
  relaySessionSpecSchema,
  type RelaySession,
  type RelaySessionInput,
  type RelaySessionStatus,
} from "../../../crds/src/index.js";
import { desiredRelayPod } from "../../../operator/src/relaysession/desired-pod.js";

export const repositoryRoot = findRepositoryRoot();
export const RELAY_IMAGE = "ghcr.io/example/trickle-relay:test";

/** A container's status as the kubelet reports it: the relay container unless `name`/`image` say. */
export function containerStatus<S extends object>(
  state: S,
  options: { name?: string; image?: string; ready?: boolean } = {},
): { name: string; image: string; imageID: string; ready: boolean; restartCount: number; state: S } {
  return {
    name: options.name ?? "relay",
    image: options.image ?? RELAY_IMAGE,
    imageID: "",
    ready: options.ready ?? false,
    restartCount: 0,
    state,
  };
}

export function readExample(file: "basic.yaml" | "sidecar-gpu.yaml"): RelaySessionInput {
  return parse(readFileSync(join(repositoryRoot, "crds/examples", file), "utf8")) as RelaySessionInput;
}

/** An example as the apiserver stores it: defaults applied, uid/namespace/generation set. */
export function storedSession(
  file: "basic.yaml" | "sidecar-gpu.yaml" = "basic.yaml",
  overrides: {
    name?: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    status?: RelaySessionStatus;
  } = {},
): RelaySession {
  const input = readExample(file);
  const session: RelaySession = {
    apiVersion: input.apiVersion,
    kind: input.kind,
    metadata: {
      ...input.metadata,
      name: overrides.name ?? input.metadata.name,
      namespace: overrides.namespace ?? "default",
      uid: overrides.uid ?? "00000000-0000-4000-8000-000000000001",
      generation: overrides.generation ?? 1,
      resourceVersion: "100",
      creationTimestamp: new Date("2030-01-01T00:00:00Z"),
    },
    spec: applySchemaDefaults(input.spec, relaySessionSpecSchema.schema) as RelaySession["spec"],
  };
  if (overrides.status) session.status = overrides.status;
  return session;
}

export const T0 = new Date("2030-01-01T00:00:00Z");
export const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);
export const iso = (seconds: number) =>
  at(seconds)
    .toISOString()
    .replace(/\.\d{3}Z$/, "Z");

type PodState =
  | { kind: "created" }
  | { kind: "scheduled" }
  | { kind: "running"; startedAt?: number }
  | { kind: "failed"; exitCode?: number; finishedAt?: number; reason?: string; message?: string }
  | { kind: "succeeded"; finishedAt?: number }
  | { kind: "relayExited"; exitCode: number; finishedAt?: number };

/** The desired pod as the apiserver returns it (uid, creationTimestamp) in `state`. */
export function podIn(
  session: RelaySession,
  state: PodState,
  options: { attempt?: number; createdAt?: number } = {},
): V1Pod {
  const pod = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: options.attempt ?? 0 });
  pod.metadata!.uid = `pod-uid-${options.attempt ?? 0}`;
  pod.metadata!.creationTimestamp = at(options.createdAt ?? 0);
  const scheduled = { type: "PodScheduled", status: "True", lastTransitionTime: at(options.createdAt ?? 0) };
  switch (state.kind) {
    case "created":
      pod.status = { phase: "Pending" };
      break;
    case "scheduled":
      pod.status = {
        phase: "Pending",
        conditions: [scheduled],
        containerStatuses: [containerStatus({ waiting: { reason: "ContainerCreating" } })],
      };
      break;
    case "running":
      pod.status = { phase: "Running", conditions: [scheduled], startTime: at(state.startedAt ?? 1) };
      break;
    case "failed":
      pod.status = {
        phase: "Failed",
        conditions: [scheduled],
        startTime: at(1),
        ...(state.reason && { reason: state.reason }),
        ...(state.message && { message: state.message }),
        containerStatuses: state.reason
          ? []
          : [
              containerStatus({
                terminated: {
                  exitCode: state.exitCode ?? 1,
                  reason: "Error",
                  finishedAt: at(state.finishedAt ?? 10),
                },
              }),
            ],
      };
      break;
    case "succeeded":
      pod.status = {
        phase: "Succeeded",
        conditions: [scheduled],
        startTime: at(1),
        containerStatuses: [
          containerStatus({
            terminated: { exitCode: 0, reason: "Completed", finishedAt: at(state.finishedAt ?? 10) },
          }),
        ],
      };
      break;
    case "relayExited":
      pod.status = {
        phase: "Running",
        conditions: [scheduled],
        startTime: at(1),
        containerStatuses: [
          containerStatus({
            terminated: { exitCode: state.exitCode, finishedAt: at(state.finishedAt ?? 10) },
          }),
          containerStatus({ running: {} }, { name: "comfystream", image: "c", ready: true }),
        ],
      };
      break;
  }
  return pod;
}

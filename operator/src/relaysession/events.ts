// Kubernetes Events about RelaySessions (core/v1, what `kubectl describe` shows). Repeats of the same
// event are folded into one Event whose count goes up, like client-go's recorder, and recording never
// fails the caller: the API calls run in the background and their errors are only logged.

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Event,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { OPERATOR_FIELD_MANAGER } from "../../../crds/src/index.js";
import type { BackgroundWrites } from "../kube/write-priority.js";
import { OPERATOR_NAME } from "./labels.js";

export type EventType = "Normal" | "Warning";

/** The object an Event is about. */
export interface InvolvedObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
}

export interface EventSink {
  /** Records an event; returns at once and never throws. */
  record(object: InvolvedObject, type: EventType, reason: string, message: string): void;
}

export interface EventRecorderOptions {
  kubeConfig: KubeConfig;
  logger: Logger;
  /** reportingComponent and source.component; default trickle-relay-operator. */
  component?: string;
  /** reportingInstance and source.host; default $POD_NAME, else the host name. */
  instance?: string;
  /** Repeats within this window update the existing Event instead of creating one. Default 10 min. */
  aggregationWindowMs?: number;
  /** Distinct events remembered for aggregation (oldest forgotten first). Default 1024. */
  maxTracked?: number;
  now?: () => Date;
  /** Event writes wait behind urgent writes (warm pod claims); default: written at once. */
  background?: BackgroundWrites;
}

interface Series {
  namespace: string;
  eventName: string;
  count: number;
  firstTimestamp: Date;
  lastTimestamp: Date;
  /** Recorded but not yet written; folded into the next write. */
  pending: number;
  /** Writes of one series run one after another. */
  writing: Promise<void>;
}

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export class EventRecorder implements EventSink {
  private readonly core: CoreV1Api;
  private readonly logger: Logger;
  private readonly component: string;
  private readonly instance: string;
  private readonly windowMs: number;
  private readonly maxTracked: number;
  private readonly now: () => Date;
  private readonly series = new Map<string, Series>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly background: BackgroundWrites | undefined;

  constructor(options: EventRecorderOptions) {
    this.background = options.background;
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.logger = options.logger;
    this.component = options.component ?? OPERATOR_NAME;
    this.instance = options.instance ?? process.env.POD_NAME ?? hostname();
    this.windowMs = options.aggregationWindowMs ?? 10 * 60_000;
    this.maxTracked = options.maxTracked ?? 1024;
    this.now = options.now ?? (() => new Date());
  }

  record(object: InvolvedObject, type: EventType, reason: string, message: string): void {
    try {
      this.enqueue(object, type, reason, message);
    } catch (error) {
      this.logger.warn({ err: error, reason }, "could not record event");
    }
  }

  /** Resolves when every event recorded so far has been written (or given up on). */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private enqueue(object: InvolvedObject, type: EventType, reason: string, message: string): void {
    const namespace = object.metadata.namespace ?? "default";
    const key = [
      namespace,
      object.kind,
      object.metadata.name,
      object.metadata.uid,
      type,
      reason,
      message,
    ].join("\u0000");
    const now = this.now();
    let series = this.series.get(key);
    if (series && now.getTime() - series.lastTimestamp.getTime() > this.windowMs) series = undefined;
    if (!series) {
      series = {
        namespace,
        // client-go's naming: involved object name + a unique suffix.
        eventName: `${object.metadata.name ?? "unknown"}.${now.getTime().toString(16)}${randomBytes(3).toString("hex")}`,
        count: 0,
        firstTimestamp: now,
        lastTimestamp: now,
        pending: 0,
        writing: Promise.resolve(),
      };
      this.series.delete(key);
      this.series.set(key, series);
      this.forgetOldest();
    } else {
      // Map order doubles as recency order.
      this.series.delete(key);
      this.series.set(key, series);
    }
    series.pending += 1;
    series.lastTimestamp = now;
    const current = series;
    const writeNow = () => this.write(current, object, type, reason, message);
    // Held back, repeats recorded meanwhile fold into this one write (pending counts them).
    const write = current.writing.then(() =>
      this.background ? this.background.background(writeNow) : writeNow(),
    );
    current.writing = write;
    this.inFlight.add(write);
    void write.finally(() => this.inFlight.delete(write));
  }

  private forgetOldest(): void {
    while (this.series.size > this.maxTracked) {
      const oldest = this.series.keys().next().value;
      if (oldest === undefined) return;
      this.series.delete(oldest);
    }
  }

  private async write(
    series: Series,
    object: InvolvedObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    if (series.pending === 0) return; // folded into an earlier write
    const count = series.count + series.pending;
    series.pending = 0;
    try {
      if (series.count > 0) {
        try {
          await this.core.patchNamespacedEvent(
            {
              namespace: series.namespace,
              name: series.eventName,
              body: { count, lastTimestamp: formatTime(series.lastTimestamp) },
              fieldManager: OPERATOR_FIELD_MANAGER,
            },
            mergePatch,
          );
          series.count = count;
          return;
        } catch (error) {
          // The Event expired (the apiserver keeps them ~1 h): start a new one.
          if (!(error instanceof ApiException && error.code === 404)) throw error;
          series.eventName = `${series.eventName.split(".")[0]}.${Date.now().toString(16)}${randomBytes(3).toString("hex")}`;
        }
      }
      const event: CoreV1Event = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: series.eventName, namespace: series.namespace },
        involvedObject: {
          apiVersion: object.apiVersion,
          kind: object.kind,
          name: object.metadata.name,
          namespace: series.namespace,
          uid: object.metadata.uid,
          resourceVersion: object.metadata.resourceVersion,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        count,
        firstTimestamp: series.firstTimestamp,
        lastTimestamp: series.lastTimestamp,
        source: { component: this.component, host: this.instance },
        reportingComponent: this.component,
        reportingInstance: this.instance,
      };
      await this.core.createNamespacedEvent({
        namespace: series.namespace,
        body: event,
        fieldManager: OPERATOR_FIELD_MANAGER,
      });
      series.count = count;
    } catch (error) {
      // A lost event is acceptable; a broken reconcile is not.
      this.logger.warn(
        { err: error, reason, namespace: series.namespace, name: object.metadata.name },
        "could not write event",
      );
    }
  }
}

function formatTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** An EventSink that keeps events in memory (for tests and dry runs). */
export class MemoryEventSink implements EventSink {
  readonly events: Array<{ name?: string; type: EventType; reason: string; message: string }> = [];
  record(object: InvolvedObject, type: EventType, reason: string, message: string): void {
    this.events.push({ name: object.metadata.name, type, reason, message });
  }
}

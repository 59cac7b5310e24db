/**
 * Operator fault tests: the real operator binary (child processes), a real kube-apiserver + etcd +
 * controller manager (garbage collection), and relay pods run by the local kubelet harness. The relay
 * container runs a stand-in (operator-harness.ts fakeRelayCommand) that reports `status.relay` with
 * WebRTC connected through its own ServiceAccount, so a healthy session is Running without WebRTC.
 *
 * Each scenario checks what a user would look at — `kubectl get rls`, the pods, restarts, the Lease
 * holder, /readyz, /metrics — after one fault:
 *
 * 1. the network path goes silent mid-burst (TCP proxy black-holed, sockets kept open, reconciles in
 *    flight) → the watchdog (--watch-timeout) relists, calls stuck on dead connections give up
 *    (--request-timeout) instead of pinning workers for undici's 300 s, and every session, one
 *    created during the outage included, gets its pod once traffic flows again (whether a call is
 *    in flight at the instant of the black-hole is up to timing; usually several are);
 * 2. 410 Gone: the RelaySession storage is rebuilt by a CRD spec change (as a CRD upgrade does), the
 *    cleanly ended watch resumes from a resourceVersion the new watch cache never had → relist;
 * 3. the apiserver crashes and comes back while sessions exist, one deleted before, one created after;
 * 4. the operator SIGKILLed while creating 30 sessions' pods → a fresh operator finishes the job with
 *    exactly one pod per session, no duplicates, no orphans;
 * 5. two replicas under leader election: one Lease holder, only it reconciles; SIGKILL → the standby
 *    takes over after the lease expires; SIGTERM → the lease is released and taken over at once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CoordinationV1Api, CoreV1Api, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { RelaySession } from "../../crds/src/index.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { startLocalKubelet, type LocalKubelet } from "../infra/local-kubelet.js";
import { StallingProxy } from "./kube/stalling-proxy.js";
import {
  fakeRelayCommand,
  repoRoot,
  sleep,
  startOperator,
  tempDir,
  waitFor,
  writeKubeconfig,
  type OperatorProcess,
} from "./operator-harness.js";

const assets = await resolveEnvtestAssets();
const CRD_NAME = "relaysessions.trickle-relay.io";

describe(
  "operator faults (real apiserver, operator binary, local kubelet)",
  { skip: assets.skipReason },
  () => {
    let cp: ControlPlane;
    let kubelet: LocalKubelet;
    let adminKc: KubeConfig;
    let core: CoreV1Api;
    let coordination: CoordinationV1Api;
    let workDir: string;
    const cleanups: Array<() => Promise<unknown> | unknown> = [];
    /** Operators of the running test, for failure context. */
    let current: OperatorProcess[] = [];

    before(async () => {
      const temp = await tempDir("trickle-relay-faults-");
      workDir = temp.dir;
      cleanups.push(temp.remove);
      cp = await startControlPlane({ controllerManager: true, crdPaths: [join(repoRoot, "crds")] });
      cleanups.push(() => cp.stop());
      adminKc = new KubeConfig();
      adminKc.loadFromFile(cp.kubeconfigPath);
      core = adminKc.makeApiClient(CoreV1Api);
      coordination = adminKc.makeApiClient(CoordinationV1Api);
      kubelet = await startLocalKubelet({
        kubeConfig: adminKc,
        commands: { "trickle-relay": await fakeRelayCommand(workDir, 5000) },
        resyncIntervalMs: 2000,
      });
      cleanups.push(() => kubelet.stop());
    });

    after(async () => {
      for (const operator of current) await operator.stop().catch(() => undefined);
      for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
    });

    // -------------------------------------------------------------------------------------------
    // Helpers: kubectl for what a user sees, the typed client for tight polling.

    async function kubectlOk(args: string[], input?: string): Promise<string> {
      const result = await cp.kubectl(args, { input });
      assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
      return result.stdout;
    }

    async function createNamespace(namespace: string): Promise<void> {
      await kubectlOk(["create", "namespace", namespace]);
    }

    function sessionYaml(namespace: string, names: string[]): string {
      return names
        .map((name) =>
          [
            "apiVersion: trickle-relay.io/v1alpha1",
            "kind: RelaySession",
            `metadata: {name: ${name}, namespace: ${namespace}}`,
            "spec:",
            `  trickle: {inputUrl: "http://127.0.0.1:9/live/${name}"}`,
            '  comfystream: {url: "http://127.0.0.1:9"}',
          ].join("\n"),
        )
        .join("\n---\n");
    }

    async function applySessions(namespace: string, names: string[]): Promise<void> {
      await kubectlOk(["apply", "-f", "-"], sessionYaml(namespace, names));
    }

    async function getSessions(namespace: string): Promise<RelaySession[]> {
      const out = await kubectlOk(["get", "rls", "-n", namespace, "-o", "json"]);
      return (JSON.parse(out) as { items: RelaySession[] }).items;
    }

    async function listPods(namespace: string): Promise<V1Pod[]> {
      return (await core.listNamespacedPod({ namespace })).items;
    }

    async function podNames(namespace: string): Promise<string[]> {
      return (await listPods(namespace)).map((pod) => pod.metadata?.name ?? "").sort();
    }

    async function leaseHolder(namespace: string, name: string): Promise<string> {
      try {
        const lease = await coordination.readNamespacedLease({ namespace, name });
        return lease.spec?.holderIdentity ?? "";
      } catch {
        return "";
      }
    }

    /** `kubectl get rls` rows as {name, phase, restarts} (the printer columns a user reads). */
    async function rlsTable(
      namespace: string,
    ): Promise<Array<{ name: string; phase: string; restarts: string }>> {
      const out = await kubectlOk(["get", "rls", "-n", namespace, "--no-headers"]);
      return out
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((row) => {
          const cells = row.trim().split(/\s+/);
          // NAME PHASE WEBRTC FPS QUEUE RESTARTS AGE (empty cells collapse, so count from the end)
          return { name: cells[0]!, phase: cells[1]!, restarts: cells[cells.length - 2]! };
        });
    }

    /** Every named session Running on its first pod `NAME-relay-0`, without restarts. */
    async function waitAllRunning(namespace: string, names: string[], timeoutMs: number): Promise<void> {
      await waitFor(
        `${names.length} session(s) in ${namespace} Running on attempt 0`,
        timeoutMs,
        async () => {
          const sessions = await getSessions(namespace);
          return names.every((name) => {
            const session = sessions.find((s) => s.metadata?.name === name);
            return (
              session?.status?.phase === "Running" &&
              session.status.podName === `${name}-relay-0` &&
              (session.status.restarts ?? 0) === 0
            );
          });
        },
        500,
      );
    }

    /**
     * The namespace holds exactly one live relay pod per session, `NAME-relay-0`, owned by that
     * session (uid), labelled attempt 0; the sessions show Running with 0 restarts in `kubectl get rls`.
     */
    async function assertOnePodEach(namespace: string, names: string[]): Promise<void> {
      const sessions = await getSessions(namespace);
      const pods = await listPods(namespace);
      assert.deepEqual(
        pods.map((pod) => pod.metadata?.name).sort(),
        names.map((name) => `${name}-relay-0`).sort(),
        "exactly one pod per session, attempt 0, and nothing else",
      );
      for (const pod of pods) {
        const sessionName = pod.metadata?.labels?.["trickle-relay.io/session"];
        const session = sessions.find((s) => s.metadata?.name === sessionName);
        assert.ok(session, `pod ${pod.metadata?.name} belongs to an existing session`);
        assert.equal(pod.metadata?.ownerReferences?.[0]?.uid, session.metadata?.uid);
        assert.equal(pod.metadata?.labels?.["trickle-relay.io/attempt"], "0");
        assert.equal(pod.metadata?.deletionTimestamp, undefined);
      }
      const table = await rlsTable(namespace);
      for (const name of names) {
        const row = table.find((r) => r.name === name);
        assert.deepEqual(row && { phase: row.phase, restarts: row.restarts }, {
          phase: "Running",
          restarts: "0",
        });
      }
    }

    /** Runs `body`; on failure appends the operators' log tails. */
    async function withContext(operators: () => OperatorProcess[], body: () => Promise<void>): Promise<void> {
      try {
        await body();
      } catch (err) {
        const logs = operators()
          .map((op) => `\n--- ${op.name} output (tail) ---\n${op.output().slice(-2500)}`)
          .join("");
        (err as Error).message += logs;
        throw err;
      }
    }

    async function launch(options: Parameters<typeof startOperator>[0]): Promise<OperatorProcess> {
      const operator = await startOperator(options);
      current.push(operator);
      return operator;
    }

    async function stopAll(): Promise<void> {
      await Promise.all(current.map((operator) => operator.stop()));
      current = [];
    }

    // -------------------------------------------------------------------------------------------

    test("silent watch mid-burst: the watchdog notices, hung calls time out, everything gets its pod", async () => {
      const namespace = "faults-silent";
      await createNamespace(namespace);
      const proxy = await StallingProxy.start(cp.server);
      cleanups.push(() => proxy.close());
      const kubeconfigPath = await writeKubeconfig(proxy.kubeConfig(adminKc), workDir);
      const watchTimeoutSeconds = 6;
      const operator = await launch({
        name: "operator",
        kubeconfigPath,
        args: [
          ...["--no-leader-elect", "--namespace", namespace],
          ...["--watch-timeout", String(watchTimeoutSeconds), "--request-timeout", "4"],
        ],
      });
      const burst = Array.from({ length: 8 }, (_, i) => `burst-${i}`);
      await withContext(
        () => current,
        async () => {
          await operator.waitReady();
          const watchdog = `operator_informer_watch_restarts_total{informer="relaysessions/${namespace}",reason="watchdog"}`;
          const watchdogBefore = (await operator.metric(watchdog)) ?? 0;
          // The network path dies while the operator is busy: reconciles are in flight.
          await applySessions(namespace, burst);
          await waitFor(
            "the first pod of the burst",
            30_000,
            async () => (await listPods(namespace)).length > 0,
            20,
          );
          proxy.blackhole(true);
          const outageStart = Date.now();
          await applySessions(namespace, ["during"]);
          await sleep(1000);
          const podsInOutage = await podNames(namespace);
          // The operator hears nothing, and its watches stay open: only its watchdog can tell.
          await waitFor("the watchdog fired", (watchTimeoutSeconds + 10) * 1000, async () =>
            ((await operator.metric(watchdog)) ?? 0) > watchdogBefore ? true : undefined,
          );
          const noticedAfterMs = Date.now() - outageStart;
          assert.equal(await operator.readyz(), 200, "/readyz stays 200: the cache is still there");
          // Dark a little longer than the watchdog, then traffic flows again (the stalled connections
          // stay open and dead; new ones work).
          await sleep(Math.max(0, (watchTimeoutSeconds + 2) * 1000 - (Date.now() - outageStart)));
          assert.deepEqual(await podNames(namespace), podsInOutage, "nothing got through in the outage");
          assert.ok(!podsInOutage.includes("during-relay-0"));
          proxy.blackhole(false);
          const restored = Date.now();
          await waitFor("pod during-relay-0", 40_000, async () =>
            (await podNames(namespace)).includes("during-relay-0"),
          );
          const duringPodMs = Date.now() - restored;
          await waitFor(
            "a pod for every session",
            40_000,
            async () => (await listPods(namespace)).length === 9,
          );
          const allPodsMs = Date.now() - restored;
          await waitAllRunning(namespace, [...burst, "during"], 30_000);
          await assertOnePodEach(namespace, [...burst, "during"]);
          assert.ok(
            operator.logged("watch silent too long; restarting with a relist").length >= 1,
            "the operator logged the watchdog restart",
          );
          assert.equal(await operator.readyz(), 200);
          console.log(
            `silent watch: ${podsInOutage.length}/8 burst pods before the outage; noticed after ` +
              `${noticedAfterMs} ms (--watch-timeout ${watchTimeoutSeconds}); after traffic flowed again: ` +
              `the outage's session's pod in ${duringPodMs} ms, all 9 pods in ${allPodsMs} ms; ` +
              `${operator.logged("reconcile failed; retrying with backoff").length} reconcile(s) failed ` +
              `(calls cut off by the outage or the request timeout) and were retried`,
          );
        },
      );
      await stopAll();
      await proxy.close();
      await kubectlOk(["delete", "rls", "--all", "-n", namespace, "--wait=false"]);
    });

    test("410 Gone: the watch resumes from an expired resourceVersion → relist, reconciling goes on", async () => {
      const namespace = "faults-gone";
      await createNamespace(namespace);
      const operator = await launch({
        name: "operator",
        kubeconfigPath: cp.kubeconfigPath,
        args: ["--no-leader-elect", "--namespace", namespace],
      });
      await withContext(
        () => current,
        async () => {
          await operator.waitReady();
          await applySessions(namespace, ["first"]);
          await waitAllRunning(namespace, ["first"], 30_000);
          const gone = `operator_informer_gone_total{informer="relaysessions/${namespace}"}`;
          const lists = `operator_informer_lists_total{informer="relaysessions/${namespace}"}`;
          assert.equal((await operator.metric(gone)) ?? 0, 0);
          const listsBefore = (await operator.metric(lists)) ?? 0;

          // A CRD spec change makes the apiserver rebuild the RelaySession storage: open watches end
          // cleanly, and the new watch cache starts at the current etcd revision, so the operator's
          // re-watch from its last resourceVersion is answered 410 Expired.
          await kubectlOk([
            "patch",
            "crd",
            CRD_NAME,
            "--type=json",
            "-p",
            JSON.stringify([
              {
                op: "add",
                path: "/spec/versions/0/schema/openAPIV3Schema/description",
                value: "RelaySession (description edited by the operator fault test)",
              },
            ]),
          ]);
          await waitFor("a 410 Gone seen by the RelaySession informer", 20_000, async () =>
            ((await operator.metric(gone)) ?? 0) >= 1 ? true : undefined,
          );
          await waitFor("the relist after 410", 10_000, async () =>
            ((await operator.metric(lists)) ?? 0) > listsBefore ? true : undefined,
          );
          assert.ok(operator.logged("watch expired (410 Gone); relisting").length >= 1);

          await applySessions(namespace, ["second"]);
          await waitAllRunning(namespace, ["first", "second"], 30_000);
          await assertOnePodEach(namespace, ["first", "second"]);
          assert.equal(await operator.readyz(), 200);
        },
      );
      await stopAll();
    });

    test("apiserver crash and restart: the operator recovers and the state converges", async () => {
      const namespace = "faults-restart";
      await createNamespace(namespace);
      const operator = await launch({
        name: "operator",
        kubeconfigPath: cp.kubeconfigPath,
        args: ["--no-leader-elect", "--namespace", namespace, "--watch-timeout", "20"],
      });
      const readyzSamples: number[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          readyzSamples.push(await operator.readyz());
          await sleep(200);
        }
      })();
      await withContext(
        () => current,
        async () => {
          await operator.waitReady();
          readyzSamples.length = 0;
          await applySessions(namespace, ["doomed", "survivor"]);
          await waitAllRunning(namespace, ["doomed", "survivor"], 30_000);
          const survivorUid = (await getSessions(namespace)).find((s) => s.metadata?.name === "survivor")
            ?.metadata?.uid;

          await kubectlOk(["delete", "rls", "doomed", "-n", namespace, "--wait=false"]);
          const crashAt = Date.now();
          await cp.restartApiserver({ crash: true });
          const downMs = Date.now() - crashAt;
          await applySessions(namespace, ["newcomer"]);

          await waitAllRunning(namespace, ["survivor", "newcomer"], 60_000);
          await waitFor(
            "doomed's pod garbage-collected",
            60_000,
            async () => !(await podNames(namespace)).includes("doomed-relay-0"),
          );
          await assertOnePodEach(namespace, ["survivor", "newcomer"]);
          const survivor = (await getSessions(namespace)).find((s) => s.metadata?.name === "survivor");
          assert.equal(survivor?.metadata?.uid, survivorUid);
          assert.equal(await operator.readyz(), 200);
          sampling = false;
          await sampler;
          assert.ok(readyzSamples.length > 10);
          assert.deepEqual(
            [...new Set(readyzSamples)],
            [200],
            "/readyz stayed 200 through the outage (the cache outlives the connection)",
          );
          const errors = await operator.metrics();
          assert.match(
            errors,
            new RegExp(`operator_informer_errors_total\\{informer="relaysessions/${namespace}"\\} [1-9]`),
          );
          console.log(`apiserver restart: down/up in ${downMs} ms`);
        },
      ).finally(() => {
        sampling = false;
      });
      await sampler;
      await stopAll();
    });

    test("operator SIGKILLed mid-reconcile of 30 sessions: a new one finishes with one pod each", async () => {
      const namespace = "faults-kill";
      await createNamespace(namespace);
      const names = Array.from({ length: 30 }, (_, i) => `s${String(i).padStart(2, "0")}`);
      const first = await launch({
        name: "operator-1",
        kubeconfigPath: cp.kubeconfigPath,
        // Two at a time, so a kill on the first created pod lands with most still to do.
        args: ["--no-leader-elect", "--namespace", namespace, "--concurrency", "2"],
        metrics: false,
      });
      let second: OperatorProcess | undefined;
      await withContext(
        () => current,
        async () => {
          await first.waitReady();
          // Killed on its first "created relay pod" line, watched from before the apply: the
          // operator reconciles while kubectl is still creating sessions, and polling for the first
          // pod once found all 30 there by the time the kill landed.
          const killed = first.killWhenLogged("created relay pod", "SIGKILL");
          await applySessions(namespace, names);
          assert.equal(await killed, "SIGKILL");
          // Requests already sent may still land; let them, then count.
          await sleep(1000);
          const podsAtKill = (await listPods(namespace)).length;
          assert.ok(
            podsAtKill < names.length,
            `killed mid-way (${podsAtKill} of ${names.length} pods existed)`,
          );

          second = await launch({
            name: "operator-2",
            kubeconfigPath: cp.kubeconfigPath,
            args: ["--no-leader-elect", "--namespace", namespace],
          });
          await second.waitReady();
          await waitAllRunning(namespace, names, 90_000);
          await assertOnePodEach(namespace, names);
          // The second operator created only the pods that were missing (no duplicate attempts).
          assert.equal(second.logged("created relay pod").length, names.length - podsAtKill);
          const roles = await kubectlOk(["get", "roles", "-n", namespace, "-o", "name"]);
          assert.equal(roles.trim().split("\n").length, names.length, "one Role per session");
          console.log(`SIGKILL mid-reconcile: ${podsAtKill}/${names.length} pods existed at the kill`);
        },
      );
      await stopAll();
      // Free the 30 stand-in relays before the next scenario.
      await kubectlOk(["delete", "rls", "--all", "-n", namespace, "--wait=false"]);
    });

    test("two replicas: one leader reconciles; SIGKILL → takeover after the lease; SIGTERM → fast hand-over", async () => {
      const namespace = "faults-leader";
      const lease = "faults-operator";
      await createNamespace(namespace);
      const electionArgs = [
        "--leader-elect",
        ...["--leader-election-namespace", namespace, "--leader-election-id", lease],
        ...["--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1"],
        ...["--namespace", namespace],
      ];
      const replica = (id: string) =>
        launch({ name: id, kubeconfigPath: cp.kubeconfigPath, args: electionArgs, env: { POD_NAME: id } });
      const isLeaderMetric = "trickle_relay_operator_leader";
      const reconciles = async (op: OperatorProcess) =>
        (await op.metrics())
          .split("\n")
          .filter((line) => line.startsWith("trickle_relay_operator_reconcile_total{"))
          .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);

      const a = await replica("replica-a");
      const b = await replica("replica-b");
      await withContext(
        () => current,
        async () => {
          await Promise.all([a.waitReady(), b.waitReady()]);
          const holder = await waitFor("a Lease holder", 20_000, async () => {
            const id = await leaseHolder(namespace, lease);
            return id === "replica-a" || id === "replica-b" ? id : undefined;
          });
          const [leader, standby] = holder === "replica-a" ? [a, b] : [b, a];
          await waitFor(
            "the leader's metric",
            10_000,
            async () => (await leader.metric(isLeaderMetric)) === 1,
          );
          // What a user runs:
          const shown = await kubectlOk([
            "get",
            "lease",
            lease,
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
          ]);
          assert.equal(shown, leader.name);

          await applySessions(namespace, ["led"]);
          await waitAllRunning(namespace, ["led"], 30_000);
          // Only the leader reconciles and writes; the standby only keeps its cache warm (and ready).
          for (let i = 0; i < 5; i++) {
            assert.equal(await leader.metric(isLeaderMetric), 1);
            assert.equal(await standby.metric(isLeaderMetric), 0);
            await sleep(200);
          }
          assert.ok((await reconciles(leader)) > 0);
          assert.equal(await reconciles(standby), 0, "the standby reconciled nothing");
          assert.equal(standby.logged("created relay pod").length, 0);
          assert.equal(leader.logged("created relay pod").length, 1);
          assert.equal(await standby.readyz(), 200, "a standby is ready (caches synced)");

          // SIGKILL: no release; the standby must wait out the lease, then take over.
          assert.equal(await leader.kill("SIGKILL"), "SIGKILL");
          const killedAt = Date.now();
          await applySessions(namespace, ["after-kill"]);
          await waitFor("the standby holds the Lease", 20_000, async () =>
            (await leaseHolder(namespace, lease)) === standby.name ? true : undefined,
          );
          const takeoverMs = Date.now() - killedAt;
          assert.ok(takeoverMs >= 2500, `took over only after the lease expired (${takeoverMs} ms)`);
          assert.ok(takeoverMs <= 9000, `took over within lease duration + retry (${takeoverMs} ms)`);
          await waitAllRunning(namespace, ["led", "after-kill"], 30_000);
          assert.equal(await standby.metric(isLeaderMetric), 1);
          assert.equal(
            standby.logged("created relay pod").length,
            1,
            "the new leader created after-kill's pod",
          );

          // A fresh standby, then a graceful stop of the leader: it releases, the standby takes over.
          const c = await replica("replica-c");
          await c.waitReady();
          await sleep(1500);
          assert.equal(
            await leaseHolder(namespace, lease),
            standby.name,
            "a new replica does not steal the lease",
          );
          assert.equal(await c.metric(isLeaderMetric), 0);
          const termAt = Date.now();
          const exit = standby.kill("SIGTERM");
          await waitFor(
            "replica-c holds the Lease",
            10_000,
            async () => ((await leaseHolder(namespace, lease)) === "replica-c" ? true : undefined),
            50,
          );
          const handoverMs = Date.now() - termAt;
          assert.equal(await exit, 0, "graceful exit");
          assert.ok(handoverMs < 3000, `graceful hand-over took ${handoverMs} ms`);
          await applySessions(namespace, ["after-term"]);
          await waitAllRunning(namespace, ["led", "after-kill", "after-term"], 30_000);
          await assertOnePodEach(namespace, ["led", "after-kill", "after-term"]);
          assert.equal(c.logged("created relay pod").length, 1);
          const transitions = (await coordination.readNamespacedLease({ namespace, name: lease })).spec
            ?.leaseTransitions;
          assert.ok((transitions ?? 0) >= 2, `leaseTransitions ${transitions}`);
          console.log(
            `leader election: SIGKILL takeover ${takeoverMs} ms, SIGTERM hand-over ${handoverMs} ms`,
          );
        },
      );
      await stopAll();
    });
  },
);

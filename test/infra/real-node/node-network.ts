/**
 * The network of the real test node, all inside the loopback-only network namespace the tests run
 * in (test/infra/run-tests.sh): nothing here ever touches the host's namespace (it refuses to run
 * outside TRICKLE_RELAY_NETNS=1).
 *
 * - A name for the namespace (/run/netns/trickle-relay-node-PID, a bind mount of this process's
 *   netns) so that the daemons start with `nsenter --net=…` like in specs §4.3b, and a person can
 *   look inside while a test runs (`ip netns exec trickle-relay-node-PID ss -ltnp`).
 * - The `kubernetes` Service address 10.0.0.1 on `lo` and a TCP forwarder 10.0.0.1:443 → the
 *   apiserver's 127.0.0.1 port: a stand-in for kube-proxy, so that a pod's in-cluster config
 *   (KUBERNETES_SERVICE_HOST/PORT, injected by the kubelet) reaches the apiserver.
 * - A veth pair whose one end holds 192.0.2.1/32 (TEST-NET-1, never routed anywhere): a stand-in
 *   for a pod's eth0. WebRTC stacks skip loopback interfaces when gathering candidates, and a relay
 *   pod gets no TRICKLE_RELAY_ICE_ADDRESSES from its spec, so without a non-loopback address its
 *   ICE would find no candidate at all. The pair is connected to nothing.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { createServer, connect, type Server, type Socket } from "node:net";
import { inLoopbackOnlyNamespace } from "../netns.js";
import { run, runChecked } from "./process.js";

/** The first address of the control plane's --service-cluster-ip-range 10.0.0.0/24. */
export const KUBERNETES_SERVICE_IP = "10.0.0.1";
export const POD_ADDRESS = "192.0.2.1";
const VETH = ["trnode0", "trnode1"] as const;

export interface NodeNetwork {
  /** `nsenter --net=/run/netns/NAME` (the same namespace as this process). */
  netnsPrefix: string[];
  netnsName: string;
  /** Removes the forwarder, the addresses, the veth pair and the namespace's name. */
  stop(): Promise<void>;
}

export async function setUpNodeNetwork(apiserverPort: number): Promise<NodeNetwork> {
  if (!inLoopbackOnlyNamespace) {
    throw new Error(
      "the real test node runs only inside the loopback-only namespace of test/infra/run-tests.sh",
    );
  }
  // Never add anything to a namespace that is not the private one: it holds only lo (and what an
  // earlier node of this process left).
  const links = (await runChecked("ip", ["-o", "link", "show"]))
    .split("\n")
    .map((line) => line.split(":")[1]?.trim().split("@")[0])
    .filter((name): name is string => !!name);
  const foreign = links.filter((name) => name !== "lo" && !VETH.includes(name as (typeof VETH)[number]));
  if (foreign.length > 0) {
    throw new Error(
      `refusing to set up the node network: this namespace has interfaces besides lo (${foreign.join(", ")})`,
    );
  }

  const netnsName = `trickle-relay-node-${process.pid}`;
  const netnsPath = `/run/netns/${netnsName}`;
  await mkdir("/run/netns", { recursive: true });
  await writeFile(netnsPath, "");
  await runChecked("mount", ["--bind", `/proc/${process.pid}/ns/net`, netnsPath]);

  await ipIgnoringExisting(["addr", "add", `${KUBERNETES_SERVICE_IP}/32`, "dev", "lo"]);
  await ipIgnoringExisting(["link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]]);
  for (const name of VETH) {
    // No IPv6 link-local addresses: they would be ICE candidates too.
    await runChecked("ip", ["link", "set", name, "addrgenmode", "none"]);
    await runChecked("ip", ["link", "set", name, "up"]);
  }
  await ipIgnoringExisting(["addr", "add", `${POD_ADDRESS}/32`, "dev", VETH[0]]);

  const forwarder = await forward(KUBERNETES_SERVICE_IP, 443, "127.0.0.1", apiserverPort);
  let stopped = false;
  return {
    netnsPrefix: ["nsenter", `--net=${netnsPath}`, "--"],
    netnsName,
    async stop() {
      if (stopped) return;
      stopped = true;
      await forwarder.close();
      await run("ip", ["link", "del", VETH[0]]);
      await run("ip", ["addr", "del", `${KUBERNETES_SERVICE_IP}/32`, "dev", "lo"]);
      await run("umount", [netnsPath]);
      await rm(netnsPath, { force: true });
    },
  };
}

async function ipIgnoringExisting(args: string[]): Promise<void> {
  const result = await run("ip", args);
  if (result.code !== 0 && !/File exists/.test(result.stderr)) {
    throw new Error(`ip ${args.join(" ")} failed: ${result.stderr.trim()}`);
  }
}

/** A plain TCP forwarder (TLS passes through: the apiserver's certificate names 10.0.0.1). */
async function forward(
  host: string,
  port: number,
  targetHost: string,
  targetPort: number,
): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, targetHost);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((listening, failed) => {
    server.once("error", failed);
    server.listen(port, host, () => listening());
  });
  return {
    close: () =>
      new Promise<void>((closed) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => closed());
      }),
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of the test kube-apiserver that can go silent the way a dead
 * network path does: connections stay open but nothing more gets through, and no FIN or RST ever
 * reaches either side. TLS passes through untouched, so clients still verify the apiserver.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";

interface Connection {
  client: Socket;
  upstream: Socket | undefined;
  stalled: boolean;
}

export class StallingProxy {
  private readonly connections = new Set<Connection>();
  private blackholed = false;
  private readonly server: Server;
  private listeningPort = 0;

  private constructor(host: string, port: number) {
    this.server = createServer((client) => this.accept(client, host, port));
  }

  get port(): number {
    return this.listeningPort;
  }

  /** Proxies to `target` (https://127.0.0.1:PORT or host:port). */
  static async start(target: string): Promise<StallingProxy> {
    const url = new URL(target.includes("://") ? target : `tcp://${target}`);
    const host = url.hostname;
    const port = Number(url.port);
    const proxy = new StallingProxy(host, port);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once("error", reject);
      proxy.server.listen(0, "127.0.0.1", resolve);
    });
    const address = proxy.server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    proxy.listeningPort = address.port;
    return proxy;
  }

  /** Connections whose client side is still open. */
  get openConnections(): number {
    return [...this.connections].filter((c) => !c.client.destroyed).length;
  }

  /** Every connection open now stops forwarding in both directions, and is never closed by us. */
  stallOpenConnections(): void {
    for (const connection of this.connections) connection.stalled = true;
  }

  /** Stalls open connections and makes new ones stall from the start (accepted, never forwarded). */
  blackhole(on = true): void {
    this.blackholed = on;
    if (on) this.stallOpenConnections();
  }

  /** A copy of `base` whose clusters point at this proxy. */
  kubeConfig(base: KubeConfig): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: base.clusters.map((cluster) => ({
        ...cluster,
        server: `https://127.0.0.1:${this.port}`,
        // The apiserver's certificate is for 127.0.0.1, whatever the port.
      })),
      users: base.users,
      contexts: base.contexts,
      currentContext: base.getCurrentContext(),
    });
    return kc;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.connections) {
      client.destroy();
      upstream?.destroy();
    }
    this.connections.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, host: string, port: number): void {
    const connection: Connection = { client, upstream: undefined, stalled: this.blackholed };
    this.connections.add(connection);
    client.on("error", () => {});
    client.on("close", () => {
      if (!connection.stalled) connection.upstream?.destroy();
      this.connections.delete(connection);
    });
    if (connection.stalled) return;
    const upstream = connect(port, host);
    connection.upstream = upstream;
    upstream.on("error", () => {});
    client.on("data", (data) => {
      if (!connection.stalled) upstream.write(data);
    });
    upstream.on("data", (data) => {
      if (!connection.stalled) client.write(data);
    });
    client.on("end", () => {
      if (!connection.stalled) upstream.end();
    });
    upstream.on("end", () => {
      if (!connection.stalled) client.end();
    });
    upstream.on("close", () => {
      if (!connection.stalled) client.destroy();
    });
  }
}

// An HTTP CONNECT proxy on loopback that gives clients a DNS name for a test server: it tunnels NAME:PORT to a
// port on 127.0.0.1 and records, then refuses, every other destination (a client's fallback to Docker Hub lands here).
import { connect, createServer, type Socket } from 'node:net';

export interface ConnectProxy {
  url: string;
  /** HTTP_PROXY and HTTPS_PROXY (both cases) pointing here; Go clients never proxy loopback addresses themselves. */
  env: NodeJS.ProcessEnv;
  /** Every request it refused, as `METHOD TARGET`, e.g. `CONNECT registry-1.docker.io:443`. */
  refused(): string[];
  stop(): Promise<void>;
}

/** routes: `name:port` → the port on 127.0.0.1 that answers for it. */
export async function startConnectProxy(routes: Record<string, number>): Promise<ConnectProxy> {
  const refused: string[] = [];
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  };
  const server = createServer((client) => {
    track(client);
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 16_384) client.destroy();
        return;
      }
      client.off('data', onData);
      const [method = '', destination = ''] = (head.split('\r\n')[0] ?? '').split(' ');
      const port = method === 'CONNECT' ? routes[destination] : undefined;
      if (port === undefined) {
        refused.push(`${method} ${destination}`);
        client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const target = connect({ host: '127.0.0.1', port }, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        // What the client sent after its CONNECT request (a TLS ClientHello) goes through first.
        const rest = Buffer.from(head.slice(end + 4), 'latin1');
        if (rest.length > 0) target.write(rest);
        client.pipe(target).pipe(client);
      });
      track(target);
      target.once('close', () => client.destroy());
      client.once('close', () => target.destroy());
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('connect proxy: no port');
  const url = `http://127.0.0.1:${address.port}`;
  return {
    url,
    env: { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url },
    refused: () => [...refused],
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

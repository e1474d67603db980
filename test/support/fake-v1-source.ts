// A fake Docker Registry v1 source (registry and index) on 127.0.0.1 for mirror tests: serves an image
// chain, tags, image lists and search, can demand Basic credentials on the index and its own tokens on the
// registry (the v1 token flow), misbehaves per layer on request, and records every request's headers.
//
//   const source = await startFakeV1Source({ repository: 'faults/app', images: makeV1Chain(...) });
//   source.setLayerMode(id, 'cut')   'ok' | 'cut' | 'size-lie' | 'size-lie-chunked' | 'wrong-bytes' | 'status-500' | 'status-401'
//   source.requests                  every request: method, path, headers
//   source.count('GET', /re/)        requests whose path matches
//   source.issuedTokens              tokens the index granted
// Every answer also carries Set-Cookie and a private header, which a mirror must not pass on.

import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { serveOnLoopback } from './fault-upstream.js';
import type { V1Image } from './v1-client.js';

export type LayerMode = 'ok' | 'cut' | 'size-lie' | 'size-lie-chunked' | 'wrong-bytes' | 'status-500' | 'status-401';

export interface FakeV1SourceOptions {
  repository: string;
  /** Oldest first; the newest is tagged `latest`. */
  images: V1Image[];
  /** Credentials the index demands (Basic) before it grants a token. */
  credentials?: { username: string; password: string };
  /** Registry routes demand `Authorization: Token <a token the index granted>`. */
  requireToken?: boolean;
  searchResults?: Array<{ name: string; description: string }>;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

export interface FakeV1Source {
  url: string;
  host: string;
  requests: RecordedRequest[];
  issuedTokens: string[];
  setLayerMode(id: string, mode: LayerMode): void;
  count(method: string, path: RegExp): number;
  stop(): Promise<void>;
}

/** The headers a mirror must never hand to its clients. */
export const SOURCE_ONLY_HEADERS = { 'set-cookie': 'source-session=secret; Path=/', 'x-source-private': 'internal-detail', 'proxy-authenticate': 'Basic realm="source"' };

export async function startFakeV1Source(options: FakeV1SourceOptions): Promise<FakeV1Source> {
  const images = new Map(options.images.map((image) => [image.id, image]));
  const modes = new Map<string, LayerMode>();
  const requests: RecordedRequest[] = [];
  const issuedTokens: string[] = [];
  const newest = options.images[options.images.length - 1];

  const send = (res: ServerResponse, status: number, body: Buffer | string, headers: Record<string, string> = {}): void => {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
    res.writeHead(status, { ...SOURCE_ONLY_HEADERS, 'content-type': 'application/json', 'content-length': String(bytes.length), ...headers });
    res.end(bytes);
  };
  const ancestry = (id: string): string[] => {
    const chain: string[] = [];
    for (let current = images.get(id); current !== undefined; current = current.parent === undefined ? undefined : images.get(current.parent)) chain.push(current.id);
    return chain;
  };
  const authorized = (headers: IncomingHttpHeaders): boolean => {
    if (!options.requireToken) return true;
    const token = /^Token (.+)$/.exec(headers.authorization ?? '')?.[1];
    return token !== undefined && issuedTokens.includes(token);
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers });
    req.resume();
    if (path === '/v1/_ping' || path === '/_ping') return send(res, 200, '{}');
    if (path === '/v1/search') return send(res, 200, JSON.stringify({ query: 'x', num_results: 0, results: options.searchResults ?? [] }));
    if (path === `/v1/repositories/${options.repository}/images`) {
      const credentials = options.credentials;
      if (credentials !== undefined && req.headers.authorization !== `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`) {
        return send(res, 401, '{"error": "Requires authorization"}', { 'www-authenticate': 'Basic realm="index"' });
      }
      const headers: Record<string, string> = { 'x-docker-endpoints': 'registry.source.invalid' };
      if (req.headers['x-docker-token'] === 'true') {
        const token = `signature=${randomBytes(8).toString('hex')},repository="${options.repository}",access=read`;
        issuedTokens.push(token);
        headers['x-docker-token'] = token;
      }
      return send(res, 200, JSON.stringify(options.images.map((image) => ({ id: image.id, checksum: image.checksum }))), headers);
    }
    if (!authorized(req.headers)) return send(res, 401, '{"error": "Requires authorization"}', { 'www-authenticate': 'Token' });
    if (path === `/v1/repositories/${options.repository}/tags`) return send(res, 200, JSON.stringify(newest === undefined ? {} : { latest: newest.id }));
    const match = /^\/v1\/images\/([a-f0-9]+)\/(json|ancestry|layer)$/.exec(path);
    const image = match ? images.get(match[1] ?? '') : undefined;
    if (!match || image === undefined) return send(res, 404, '{"error": "Image not found"}');
    const mode = modes.get(image.id) ?? 'ok';
    if (match[2] === 'ancestry') return send(res, 200, JSON.stringify(ancestry(image.id)));
    if (match[2] === 'json') {
      const size = image.layer.length + (mode === 'size-lie' || mode === 'size-lie-chunked' ? 10 : 0);
      return send(res, 200, image.json, { 'x-docker-size': String(size), 'x-docker-checksum-payload': image.checksum });
    }
    switch (mode) {
      case 'status-500':
        return send(res, 500, '{"error": "internal failure at 10.1.2.3:5000"}');
      case 'status-401':
        return send(res, 401, '{"error": "Requires authorization"}');
      case 'cut': {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(image.layer.length) });
        res.write(image.layer.subarray(0, image.layer.length >> 1), () => res.destroy());
        return;
      }
      case 'size-lie-chunked':
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(image.layer);
        return;
      case 'wrong-bytes': {
        const wrong = Buffer.from(image.layer);
        wrong[wrong.length >> 1] = (wrong[wrong.length >> 1] ?? 0) ^ 0xff;
        return send(res, 200, wrong, { 'content-type': 'application/octet-stream' });
      }
      default:
        return send(res, 200, image.layer, { 'content-type': 'application/octet-stream' });
    }
  });
  const listening = await serveOnLoopback(server);
  return {
    url: `http://127.0.0.1:${listening.port}`,
    host: `127.0.0.1:${listening.port}`,
    requests,
    issuedTokens,
    setLayerMode: (id, mode) => modes.set(id, mode),
    count: (method, path) => requests.filter((request) => request.method === method && path.test(request.path)).length,
    stop: () => listening.stop(),
  };
}

// A small Docker 1.x client speaking the Registry v1 protocol, as docker 1.3 did: push an image chain
// (repository, then per image not yet there: json, chunked layer and checksum; then tags and the image list) and pull one
// (_ping, the index's image list with a token, tags, ancestry, then json and layer of each ancestor), using
// the token and endpoints the index returns. Every request is bounded in time.

import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { deterministicBytes } from './images.js';

export const DOCKER_USER_AGENT = 'docker/1.3.2 go/go1.3.3 git-commit/39fa2fa kernel/3.16.0-4-amd64 os/linux arch/amd64';
const REQUEST_TIMEOUT_MS = 30_000;

export interface V1Image {
  id: string;
  parent: string | undefined;
  /** The image json exactly as pushed. */
  json: Buffer;
  layer: Buffer;
  /** The payload checksum docker computes: sha256 of json + "\n" + layer. */
  checksum: string;
}

export interface V1Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface V1RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** A Buffer is sent with Content-Length; an array of chunks is sent chunked. */
  body?: Buffer | Buffer[];
  timeoutMs?: number;
}

/** One HTTP request without keep-alive; rejects on a connection error, a broken body or the timeout. */
export function v1Request(url: string, options: V1RequestOptions = {}): Promise<V1Response> {
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  return new Promise<V1Response>((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    if (Buffer.isBuffer(options.body)) headers['content-length'] = String(options.body.length);
    // The path goes out as written (a URL object would resolve `..`): tests send hostile paths too.
    const parsed = /^http:\/\/([^/:]+):(\d+)(\/.*)$/.exec(url);
    if (!parsed) throw new Error(`not an http://host:port/path URL: ${url}`);
    const request = httpRequest({ host: parsed[1], port: Number(parsed[2]), path: parsed[3], method: options.method ?? 'GET', headers, agent: false });
    const timer = setTimeout(() => request.destroy(new Error(`${options.method ?? 'GET'} ${url}: no complete answer within ${timeoutMs} ms`)), timeoutMs);
    request.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.once('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      response.once('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) });
      });
    });
    if (Array.isArray(options.body)) {
      for (const chunk of options.body) request.write(chunk);
      request.end();
    } else {
      request.end(options.body);
    }
  });
}

/** A chain of images, oldest first, each the parent of the next, with deterministic layers. */
export function makeV1Chain(label: string, layers: Array<{ size: number; seed: number }>): V1Image[] {
  const images: V1Image[] = [];
  let parent: string | undefined;
  for (const [index, spec] of layers.entries()) {
    const id = createHash('sha256').update(`${label}-${index}-${spec.seed}`).digest('hex');
    const layer = deterministicBytes(spec.size, spec.seed);
    const json = Buffer.from(
      JSON.stringify({
        id,
        ...(parent === undefined ? {} : { parent }),
        created: '2014-10-01T00:00:00.000000000Z',
        container_config: { Cmd: ['/bin/sh', '-c', `#(nop) layer ${index}`] },
        docker_version: '1.3.2',
        architecture: 'amd64',
        os: 'linux',
        Size: spec.size,
      }),
    );
    const checksum = `sha256:${createHash('sha256').update(json).update('\n').update(layer).digest('hex')}`;
    images.push({ id, parent, json, layer, checksum });
    parent = id;
  }
  return images;
}

export interface PulledImage {
  id: string;
  json: Buffer;
  jsonHeaders: IncomingHttpHeaders;
  layer: Buffer;
}

export interface PullResult {
  tags: Record<string, string>;
  /** Newest first, as the registry sent it. */
  ancestry: string[];
  /** Oldest first, as docker downloads them. */
  images: PulledImage[];
  indexHeaders: IncomingHttpHeaders;
  /** The registry the index pointed at. */
  registry: string;
}

export class V1Client {
  constructor(
    /** http://host:port of the index (and, unless it says otherwise, the registry). */
    readonly indexUrl: string,
    /** Extra headers on every request (e.g. a client's own credentials or cookies, which must go nowhere). */
    private readonly extraHeaders: Record<string, string> = {},
  ) {}

  async ping(): Promise<V1Response> {
    return this.expect(await v1Request(`${this.indexUrl}/v1/_ping`, { headers: this.headers() }), [200], 'ping');
  }

  /** docker push: the whole v1 sequence against one index/registry. */
  async push(repository: string, tag: string, images: V1Image[]): Promise<void> {
    await this.ping();
    const list = Buffer.from(JSON.stringify(images.map((image) => ({ id: image.id }))));
    const opened = this.expect(
      await v1Request(`${this.indexUrl}/v1/repositories/${repository}/`, {
        method: 'PUT',
        headers: this.headers({ 'x-docker-token': 'true', 'content-type': 'application/json' }),
        body: list,
      }),
      [200, 201],
      'PUT repository',
    );
    const token = String(opened.headers['x-docker-token'] ?? '');
    if (token === '') throw new Error('the index granted no token for the push');
    const registry = this.registryOf(opened.headers);
    const auth = { authorization: `Token ${token.replace(/^Token\s+/, '')}` };
    for (const image of images) {
      // As docker 1.x: an image the registry already has is not pushed again.
      const known = await v1Request(`${registry}/v1/images/${image.id}/json`, { headers: this.headers(auth) });
      if (known.status === 200) continue;
      await this.send(`${registry}/v1/images/${image.id}/json`, 'PUT', { ...auth, 'content-type': 'application/json' }, image.json, 'PUT json');
      // Docker streams the layer chunked, in pieces of whatever size the tar writer produces.
      const chunks: Buffer[] = [];
      for (let offset = 0; offset < image.layer.length; offset += 32 * 1024 + 7) chunks.push(image.layer.subarray(offset, offset + 32 * 1024 + 7));
      await this.send(`${registry}/v1/images/${image.id}/layer`, 'PUT', { ...auth, 'content-type': 'application/octet-stream' }, chunks, 'PUT layer');
      await this.send(`${registry}/v1/images/${image.id}/checksum`, 'PUT', { ...auth, 'x-docker-checksum-payload': image.checksum }, Buffer.alloc(0), 'PUT checksum');
    }
    const newest = images[images.length - 1];
    if (newest === undefined) throw new Error('nothing to push');
    await this.send(`${registry}/v1/repositories/${repository}/tags/${tag}`, 'PUT', { ...auth, 'content-type': 'application/json' }, Buffer.from(JSON.stringify(newest.id)), 'PUT tag');
    const checksums = Buffer.from(JSON.stringify(images.map((image) => ({ id: image.id, checksum: image.checksum }))));
    this.expect(
      await v1Request(`${this.indexUrl}/v1/repositories/${repository}/images`, {
        method: 'PUT',
        headers: this.headers({ ...auth, 'x-docker-token': 'true', 'content-type': 'application/json' }),
        body: checksums,
      }),
      [204],
      'PUT images',
    );
  }

  /** docker pull: ping, the image list with a token, the tags, the ancestry, then each image's json and layer. */
  async pull(repository: string, tag: string): Promise<PullResult> {
    await this.ping();
    const index = this.expect(
      await v1Request(`${this.indexUrl}/v1/repositories/${repository}/images`, { headers: this.headers({ 'x-docker-token': 'true' }) }),
      [200],
      'GET images',
    );
    const token = String(index.headers['x-docker-token'] ?? '');
    const registry = this.registryOf(index.headers);
    const auth: Record<string, string> = token === '' ? {} : { authorization: `Token ${token.replace(/^Token\s+/, '')}` };
    const tags = JSON.parse((await this.send(`${registry}/v1/repositories/${repository}/tags`, 'GET', auth, undefined, 'GET tags')).body.toString('utf8')) as Record<string, string>;
    const id = tags[tag];
    if (id === undefined) throw new Error(`tag ${tag} not in ${JSON.stringify(tags)}`);
    const ancestry = JSON.parse((await this.send(`${registry}/v1/images/${id}/ancestry`, 'GET', auth, undefined, 'GET ancestry')).body.toString('utf8')) as string[];
    const images: PulledImage[] = [];
    for (const ancestor of [...ancestry].reverse()) {
      const json = await this.send(`${registry}/v1/images/${ancestor}/json`, 'GET', auth, undefined, 'GET json');
      const layer = await this.send(`${registry}/v1/images/${ancestor}/layer`, 'GET', auth, undefined, 'GET layer');
      images.push({ id: ancestor, json: json.body, jsonHeaders: json.headers, layer: layer.body });
    }
    return { tags, ancestry, images, indexHeaders: index.headers, registry };
  }

  private async send(url: string, method: string, headers: Record<string, string>, body: Buffer | Buffer[] | undefined, what: string): Promise<V1Response> {
    return this.expect(await v1Request(url, { method, headers: this.headers(headers), ...(body === undefined ? {} : { body }) }), [200], what);
  }

  private headers(headers: Record<string, string> = {}): Record<string, string> {
    return { 'user-agent': DOCKER_USER_AGENT, ...this.extraHeaders, ...headers };
  }

  private registryOf(headers: IncomingHttpHeaders): string {
    const endpoint = String(headers['x-docker-endpoints'] ?? '').split(',')[0]?.trim();
    return endpoint === undefined || endpoint === '' ? this.indexUrl : `http://${endpoint}`;
  }

  private expect(response: V1Response, statuses: number[], what: string): V1Response {
    if (!statuses.includes(response.status)) {
      throw new Error(`${what}: expected ${statuses.join(' or ')}, got ${response.status}: ${response.body.toString('utf8').slice(0, 300)}`);
    }
    return response;
  }
}

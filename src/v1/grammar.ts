// The grammar of the Docker Registry v1 API, as docker-registry 0.9 spoke it: image ids, tags, repository
// names, request paths, payload checksums, User-Agent facts and Python-style JSON. Pure: no I/O.

import { createHash, type Hash } from 'node:crypto';
import type { V1RepositoryName } from '../store/layout.js';
import { V1Error } from './errors.js';

const IMAGE_ID = /^(?:[a-f0-9]{16}|[a-f0-9]{64})$/;
// Python 2's \w without re.UNICODE.
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const NAMESPACE = /^[a-z0-9_-]{2,255}$/;
const REPOSITORY = /^[a-z0-9_.-]{1,255}$/;

export function isImageId(text: string): boolean {
  return IMAGE_ID.test(text);
}

export function isTag(text: string): boolean {
  return TAG.test(text);
}

/** `name` or `namespace/name`; one component lives in namespace `library`. Throws REPOSITORY_NAME_INVALID. */
export function parseRepositoryName(text: string): V1RepositoryName {
  const parts = text.split('/');
  const [first = '', second] = parts;
  const name = parts.length === 1 ? { namespace: 'library', repository: first } : { namespace: first, repository: second ?? '' };
  if (parts.length > 2 || !NAMESPACE.test(name.namespace)) {
    throw new V1Error('REPOSITORY_NAME_INVALID', {
      message: `Invalid namespace name (${clip(name.namespace)}), only [a-z0-9-_] are allowed, size between 2 and 255`,
    });
  }
  // Dots alone would name a folder outside the repository's own.
  if (!REPOSITORY.test(name.repository) || /^\.+$/.test(name.repository)) {
    throw new V1Error('REPOSITORY_NAME_INVALID', { message: `Invalid repository name (${clip(name.repository)}), only [a-z0-9-_.] are allowed` });
  }
  return name;
}

export function repositoryPath(name: V1RepositoryName): string {
  return `${name.namespace}/${name.repository}`;
}

function clip(text: string): string {
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}

// ---- request paths ----

export type V1ImageResource = 'json' | 'layer' | 'ancestry' | 'checksum';

export type V1Route =
  | { kind: 'ping' }
  | { kind: 'image'; id: string; resource: V1ImageResource }
  | { kind: 'repository'; name: V1RepositoryName }
  | { kind: 'tags'; name: V1RepositoryName }
  | { kind: 'tag'; name: V1RepositoryName; tag: string }
  | { kind: 'tag-json'; name: V1RepositoryName; tag: string }
  | { kind: 'repository-json'; name: V1RepositoryName }
  | { kind: 'properties'; name: V1RepositoryName }
  | { kind: 'index-images'; name: V1RepositoryName }
  | { kind: 'auth'; name: V1RepositoryName }
  | { kind: 'users' }
  | { kind: 'user'; username: string }
  | { kind: 'search' };

type RepositoryRoute = Extract<V1Route, { name: V1RepositoryName }>;
type RepositorySuffix = RepositoryRoute extends infer Route ? (Route extends unknown ? Omit<Route, 'name'> : never) : never;

/**
 * The resource a path (without its query) names; undefined for an unknown path. An image id or a
 * repository name that breaks the grammar throws (404 Invalid image ID, 400 Invalid repository name);
 * tags are returned as sent: whether a bad one is a 400 or a 404 depends on the method.
 */
export function parseV1Path(path: string): V1Route | undefined {
  if (path === '/_ping' || path === '/v1/_ping') return { kind: 'ping' };
  if (path === '/v1/search') return { kind: 'search' };
  if (path === '/v1/users' || path === '/v1/users/') return { kind: 'users' };
  const user = /^\/v1\/users\/([^/]+)\/$/.exec(path);
  if (user) return { kind: 'user', username: user[1] ?? '' };
  const image = /^\/v1\/images\/([^/]*)\/(json|layer|ancestry|checksum)$/.exec(path);
  if (image) {
    const id = image[1] ?? '';
    if (!isImageId(id)) throw new V1Error('INVALID_IMAGE_ID');
    return { kind: 'image', id, resource: image[2] as V1ImageResource };
  }
  if (!path.startsWith('/v1/repositories/')) return undefined;
  const segments = path.slice('/v1/repositories/'.length).split('/');
  // Like werkzeug, the reading with the longer static suffix wins: `a/tags/json` is tag `json` of `a`.
  for (const length of [1, 2]) {
    if (segments.length < length || segments.slice(0, length).some((segment) => segment === '')) continue;
    const route = repositoryRoute(segments.slice(length));
    if (route === undefined) continue;
    return { ...route, name: parseRepositoryName(segments.slice(0, length).join('/')) };
  }
  return undefined;
}

function repositoryRoute(suffix: string[]): RepositorySuffix | undefined {
  const [first, second, third] = suffix;
  switch (suffix.length) {
    case 0:
      return { kind: 'repository' };
    case 1:
      if (first === '') return { kind: 'repository' };
      if (first === 'tags') return { kind: 'tags' };
      if (first === 'json') return { kind: 'repository-json' };
      if (first === 'properties') return { kind: 'properties' };
      if (first === 'images') return { kind: 'index-images' };
      if (first === 'auth') return { kind: 'auth' };
      return undefined;
    case 2:
      return first === 'tags' && second !== '' ? { kind: 'tag', tag: second ?? '' } : undefined;
    case 3:
      return first === 'tags' && second !== '' && third === 'json' ? { kind: 'tag-json', tag: second ?? '' } : undefined;
    default:
      return undefined;
  }
}

// ---- checksums ----

/** docker's payload checksum, `sha256:` + hex(sha256(json + "\n" + layer)), computed as the layer streams. */
export class PayloadChecksum {
  private readonly hash: Hash;

  constructor(json: Uint8Array) {
    this.hash = createHash('sha256').update(json).update('\n');
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

const CHECKSUM = /^[a-z0-9+.]+:[a-f0-9]{64}$/;

/** The checksums a header (or its repeated lines) carries; docker-registry sent one line per checksum. */
export function parseChecksumHeader(value: string | string[] | undefined): string[] {
  const lines = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return lines.flatMap((line) => line.split(',')).map((entry) => entry.trim()).filter((entry) => CHECKSUM.test(entry));
}

/** Only plain sha256 payload checksums can be verified; tarsums of docker < 0.10 cannot. */
export function verifiableChecksums(checksums: readonly string[]): string[] {
  return checksums.filter((checksum) => checksum.startsWith('sha256:'));
}

/** The `_checksum` file: a JSON list, as docker-registry wrote it. */
export function checksumsFile(checksums: readonly string[]): Buffer {
  return Buffer.from(pythonJson(checksums));
}

/** Reads a `_checksum` file; docker-registry also accepted a bare string from older versions. */
export function parseChecksumsFile(bytes: Buffer): string[] {
  const text = bytes.toString('utf8');
  const parsed = parseJson(bytes);
  if (parsed.ok) {
    if (Array.isArray(parsed.value)) return parsed.value.filter((entry): entry is string => typeof entry === 'string');
    if (typeof parsed.value === 'string') return [parsed.value];
  }
  return text.trim() === '' ? [] : [text.trim()];
}

// ---- JSON ----

export type JsonParse = { ok: true; value: unknown } | { ok: false };

/** Strict UTF-8 JSON, as Python's json.loads(data.decode('utf8')): a bad byte is a parse failure. */
export function parseJson(bytes: Uint8Array): JsonParse {
  try {
    return { ok: true, value: JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown };
  } catch {
    return { ok: false };
  }
}

/**
 * Python's json.dumps (separators ', ' and ': ', non-ASCII escaped), keys sorted as docker-registry's
 * responses sort them unless `sortKeys` is false.
 */
export function pythonJson(value: unknown, sortKeys = true): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return pythonString(value);
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((entry) => pythonJson(entry, sortKeys)).join(', ')}]`;
  const entries = Object.entries(value as Record<string, unknown>);
  if (sortKeys) entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, entry]) => `${pythonString(key)}: ${pythonJson(entry, sortKeys)}`).join(', ')}}`;
}

function pythonString(text: string): string {
  return JSON.stringify(text).replace(/[\u0080-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface ImageJson {
  id: string;
  parent: string | undefined;
}

/** Validates an image json as docker-registry's PUT did; throws its errors. */
export function parseImageJson(bytes: Uint8Array, expectedId: string): ImageJson {
  const parsed = parseJson(bytes);
  const value = parsed.ok ? parsed.value : undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.keys(value).length === 0) {
    throw new V1Error('INVALID_JSON');
  }
  const record = value as Record<string, unknown>;
  if (!('id' in record)) throw new V1Error('JSON_WITHOUT_ID');
  if (record.id !== expectedId) throw new V1Error('JSON_ID_MISMATCH');
  const parent = record.parent;
  if (parent === undefined || parent === null || parent === '') return { id: expectedId, parent: undefined };
  if (typeof parent !== 'string' || !isImageId(parent)) throw new V1Error('PARENT_UNKNOWN');
  return { id: expectedId, parent };
}

/** An ancestry list: image ids, newest (the image itself) first. */
export function parseAncestry(bytes: Uint8Array, id: string): string[] | undefined {
  const parsed = parseJson(bytes);
  if (!parsed.ok || !Array.isArray(parsed.value)) return undefined;
  const ids = parsed.value as unknown[];
  if (ids[0] !== id || !ids.every((entry) => typeof entry === 'string' && isImageId(entry))) return undefined;
  return ids as string[];
}

/** A tag list: `{tag: image id}`. */
export function parseTagList(bytes: Uint8Array): Record<string, string> | undefined {
  const parsed = parseJson(bytes);
  if (!parsed.ok || typeof parsed.value !== 'object' || parsed.value === null || Array.isArray(parsed.value)) return undefined;
  const entries = Object.entries(parsed.value as Record<string, unknown>);
  if (!entries.every(([tag, id]) => isTag(tag) && typeof id === 'string' && isImageId(id))) return undefined;
  return Object.fromEntries(entries) as Record<string, string>;
}

/** The index's image list of a repository: `[{"id": …, "checksum"?: …}]`. */
export function parseIndexImages(bytes: Uint8Array): Array<{ id: string; checksum?: string }> | undefined {
  const parsed = parseJson(bytes);
  if (!parsed.ok || !Array.isArray(parsed.value)) return undefined;
  const images: Array<{ id: string; checksum?: string }> = [];
  for (const entry of parsed.value as unknown[]) {
    if (typeof entry !== 'object' || entry === null) return undefined;
    const { id, checksum } = entry as { id?: unknown; checksum?: unknown };
    if (typeof id !== 'string') return undefined;
    images.push(typeof checksum === 'string' ? { id, checksum } : { id });
  }
  return images;
}

/**
 * docker-registry's update of a repository's image list: the pushed entries, then the known ones; per id
 * the last entry wins unless an earlier one already carries a checksum; only id and checksum are kept.
 */
export function mergeIndexImages(pushed: ReadonlyArray<{ id: string; checksum?: string }>, known: ReadonlyArray<{ id: string; checksum?: string }>): Array<{ id: string; checksum?: string }> {
  const images = new Map<string, { id: string; checksum?: string }>();
  for (const entry of [...pushed, ...known]) {
    if (images.get(entry.id)?.checksum !== undefined) continue;
    images.set(entry.id, entry.checksum === undefined ? { id: entry.id } : { id: entry.id, checksum: entry.checksum });
  }
  return [...images.values()];
}

// ---- repository and tag json ----

/** What docker-registry served for a repository or tag nobody described. */
export const DEFAULT_REPOSITORY_JSON = {
  last_update: null,
  docker_version: null,
  docker_go_version: null,
  arch: 'amd64',
  os: 'linux',
  kernel: null,
} as const;

/** The `product/version` pairs of a User-Agent, the later of two equal products winning. */
export function userAgentProducts(userAgent: string): Record<string, string> {
  const products: Record<string, string> = {};
  for (const match of userAgent.matchAll(/([^\s/]+)\/([^\s/]+)/g)) products[match[1] ?? ''] = match[2] ?? '';
  return products;
}

/** The tag json docker-registry wrote from the pusher's User-Agent (`docker/1.3.2 go/go1.3.3 kernel/… os/linux arch/amd64`). */
export function tagJsonFromUserAgent(userAgent: string, nowMs: number): Record<string, string | number> {
  const products = userAgentProducts(userAgent);
  const props: Record<string, string | number> = { last_update: Math.floor(nowMs / 1000) };
  if (products.docker !== undefined) props.docker_version = products.docker;
  if (products.go !== undefined) props.docker_go_version = products.go;
  for (const key of ['arch', 'kernel', 'os']) {
    const value = products[key];
    if (value !== undefined) props[key] = value.toLowerCase();
  }
  return props;
}

// ---- search ----

export interface SearchResult {
  name: string;
  description: string | null;
}

export interface SearchAnswer {
  query: string;
  num_results: number;
  results: SearchResult[];
}

/** Reads a source's search answer; undefined when it is not one. */
export function parseSearchAnswer(bytes: Uint8Array): SearchResult[] | undefined {
  const parsed = parseJson(bytes);
  const results = parsed.ok ? (parsed.value as { results?: unknown } | null)?.results : undefined;
  if (!Array.isArray(results)) return undefined;
  const valid: SearchResult[] = [];
  for (const result of results as unknown[]) {
    const { name, description } = (result ?? {}) as { name?: unknown; description?: unknown };
    if (typeof name !== 'string') return undefined;
    valid.push({ ...(result as object), name, description: typeof description === 'string' ? description : null });
  }
  return valid;
}

/** The mirror's merge: a source entry replaces local ones of the same name, others are appended. */
export function mergeSearchResults(local: readonly SearchResult[], source: readonly SearchResult[]): SearchResult[] {
  const merged = [...local];
  for (const entry of source) {
    let replaced = false;
    merged.forEach((existing, index) => {
      if (existing.name === entry.name) {
        merged[index] = entry;
        replaced = true;
      }
    });
    if (!replaced) merged.push(entry);
  }
  return merged;
}

/** docker-registry's search matched the term anywhere in the name or description, ignoring ASCII case. */
export function matchesSearch(result: SearchResult, term: string): boolean {
  const needle = term.toLowerCase();
  return result.name.toLowerCase().includes(needle) || (result.description ?? '').toLowerCase().includes(needle);
}

// Upload sessions in a cluster. A session lives in the node that started it (its temporary, its running hash), and
// its id names that node: `<node id>.<uuid>`. A request for another node's session is forwarded to that node's
// internal endpoint (upload-route.ts) with the cluster's secret, its body streamed through, and its answer (the
// status, or the error with its headers) comes back as the owner gave it. So a chunked push may land on any node
// behind a load balancer. When the owner is gone, so is the session: 404 BLOB_UPLOAD_UNKNOWN, and the client
// starts its push again (as after a restart of a single node).

import { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import type { RepositoryRef } from '../meta/metadata-store.js';
import type { Digest } from '../oci/digest.js';
import type { ChunkRange, UploadStatus } from '../registry/content-service.js';
import { ErrorCode, RegistryError, type ErrorCodeName } from '../registry/errors.js';
import { UUID_PATTERN, type UploadSessions, type UploadSessionStore } from '../registry/uploads.js';
import { clusterAuthorization } from './fill-route.js';
import { CLUSTER_UPLOADS_PATH } from './upload-route.js';

/** A session id's node: the node id (a UUID, as randomUUID() writes it) before the dot. */
const OWNER_OF_SESSION = new RegExp(`^(${UUID_PATTERN})\\.`);

/** The error headers an owner's answer may carry that the client needs too. */
const PASSED_HEADERS = ['range', 'docker-upload-uuid', 'retry-after'] as const;

export interface UploadOwners {
  /** The address another node advertises; undefined when no such node is a member. */
  advertiseOf(nodeId: string): Promise<string | undefined>;
}

export interface ClusterUploadsOptions {
  nodeId: string;
  secret: string;
  owners: UploadOwners;
  /** The longest a forwarded request may wait for the owner's answer, or for more of it (an upload's idle limit). */
  forwardIdleMs: number;
  /** How the other nodes are reached (the cluster's, with this node's certificate under mutual TLS). */
  peers: Dispatcher;
}

/** The session ids this node hands out start with this. */
export function sessionPrefixOf(nodeId: string): string {
  return `${nodeId}.`;
}

export class ClusterUploads implements UploadSessionStore {
  constructor(
    private readonly local: UploadSessions,
    private readonly options: ClusterUploadsOptions,
  ) {}

  start(repository: RepositoryRef): Promise<UploadStatus> {
    return this.local.start(repository);
  }

  whole(repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<void> {
    return this.local.whole(repository, digest, body);
  }

  async status(id: string, repository: RepositoryRef): Promise<UploadStatus> {
    const owner = this.elsewhere(id);
    return owner === undefined ? this.local.status(id, repository) : statusOf(await this.forward(owner, 'GET', id, repository, {}));
  }

  async append(id: string, repository: RepositoryRef, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<UploadStatus> {
    const owner = this.elsewhere(id);
    return owner === undefined ? this.local.append(id, repository, body, range) : statusOf(await this.forward(owner, 'PATCH', id, repository, { body, range }));
  }

  async complete(id: string, repository: RepositoryRef, digest: Digest, body: AsyncIterable<Uint8Array>, range: ChunkRange | undefined): Promise<void> {
    const owner = this.elsewhere(id);
    if (owner === undefined) return this.local.complete(id, repository, digest, body, range);
    await this.forward(owner, 'PUT', id, repository, { body, range, digest });
  }

  async cancel(id: string, repository: RepositoryRef): Promise<void> {
    const owner = this.elsewhere(id);
    if (owner === undefined) return this.local.cancel(id, repository);
    await this.forward(owner, 'DELETE', id, repository, {});
  }

  /** The node that holds the session, when it is another: the id's part before the dot, a node id (a UUID). */
  private elsewhere(id: string): string | undefined {
    const match = OWNER_OF_SESSION.exec(id);
    return match?.[1] === undefined || match[1] === this.options.nodeId ? undefined : match[1];
  }

  private async forward(
    owner: string,
    method: 'GET' | 'PATCH' | 'PUT' | 'DELETE',
    id: string,
    repository: RepositoryRef,
    parts: { body?: AsyncIterable<Uint8Array>; range?: ChunkRange | undefined; digest?: Digest },
  ): Promise<string> {
    const advertise = await this.options.owners.advertiseOf(owner);
    if (advertise === undefined) throw gone(id, 'the node holding this upload is no longer in the cluster; start the upload again');
    const query = new URLSearchParams({ registry: repository.registry, name: repository.name, ...(parts.digest === undefined ? {} : { digest: parts.digest }) });
    const headers: Record<string, string> = { authorization: clusterAuthorization(this.options.secret) };
    if (parts.range !== undefined) headers['content-range'] = `${parts.range.start}-${parts.range.end}`;
    if (parts.body !== undefined) headers['content-type'] = 'application/octet-stream';
    let response;
    try {
      response = await request(`${advertise}${CLUSTER_UPLOADS_PATH}${encodeURIComponent(id)}?${query.toString()}`, {
        method,
        headers,
        dispatcher: this.options.peers,
        ...(parts.body === undefined ? {} : { body: Readable.from(parts.body, { objectMode: false }) }),
        headersTimeout: this.options.forwardIdleMs,
        bodyTimeout: this.options.forwardIdleMs,
      });
    } catch (error) {
      // Refused, reset, unknown host: that node is gone, and the session with it. A timeout or anything else (the
      // client's own body failing among them): the session may live on, or a PUT may even have completed.
      if (isConnectionFailure(error)) throw gone(id, `the node holding this upload cannot be reached (${(error as Error).message}); start the upload again`);
      throw new RegistryError('UNAVAILABLE', { message: 'the node holding this upload did not answer in time; retry', cause: error });
    }
    let text: string;
    try {
      text = await response.body.text();
    } catch (error) {
      throw new RegistryError('UNAVAILABLE', { message: 'the node holding this upload did not answer in full; retry', cause: error });
    }
    if (response.statusCode < 300) return text;
    throw ownersError(response.statusCode, response.headers, text);
  }
}

function gone(id: string, message: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_UNKNOWN', { message, detail: { id: id.slice(0, 100) } });
}

/** Errors of a connection that could not be made or was cut: the node is not there. */
function isConnectionFailure(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT'].includes(code);
}

function statusOf(text: string): UploadStatus {
  let parsed: Partial<UploadStatus> | undefined;
  try {
    parsed = JSON.parse(text) as Partial<UploadStatus>;
  } catch {
    parsed = undefined;
  }
  if (typeof parsed?.id !== 'string' || typeof parsed.size !== 'number') throw new RegistryError('UNAVAILABLE', { message: 'the node holding this upload gave an unreadable answer' });
  return { id: parsed.id, size: parsed.size };
}

/** The owner's error as it gave it (its code, message, detail, status and the headers a client needs). */
function ownersError(status: number, headers: Record<string, string | string[] | undefined>, text: string): RegistryError {
  let entry: { code?: unknown; message?: unknown; detail?: unknown } | undefined;
  try {
    entry = (JSON.parse(text) as { errors?: { code?: unknown; message?: unknown; detail?: unknown }[] }).errors?.[0];
  } catch {
    entry = undefined;
  }
  const code = typeof entry?.code === 'string' && Object.hasOwn(ErrorCode, entry.code) ? (entry.code as ErrorCodeName) : undefined;
  // 401/403: the owner refused this node's secret; anything else unreadable: the owner failed.
  if (code === undefined) return new RegistryError('UNAVAILABLE', { message: `the node holding this upload answered ${status}; retry` });
  const passed: Record<string, string> = {};
  for (const name of PASSED_HEADERS) {
    const value = headers[name];
    if (typeof value === 'string') passed[name] = value;
  }
  return new RegistryError(code, { status, message: typeof entry?.message === 'string' ? entry.message : undefined, detail: entry?.detail, headers: passed });
}

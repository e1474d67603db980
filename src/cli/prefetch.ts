// `regmirror prefetch`: pulls images through a running mirror over the plain v2 API so that it caches them — each
// manifest (of an index, the children of the wanted platforms), then every config and layer once, hashed as it streams.

import { STATUS_CODES } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { formatSize } from '../config/size.js';
import { digestOf, DigestWriter, isDigest, type Digest } from '../oci/digest.js';
import { manifestReference, parseImageReference, type ImageReference } from '../oci/image-reference.js';
import { isIndexMediaType, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES, parseManifest, type BlobDescriptor, type ManifestParse } from '../oci/manifest.js';
import { formatPlatform, parsePlatform, selectChildren, type PlatformSpec } from '../oci/platform.js';
import { headerValue } from '../upstream/fetcher.js';
import { describeError } from './describe-error.js';
import {
  blobLine,
  imageLine,
  overallLine,
  renderFrame,
  shortDigest,
  TerminalFrame,
  type BlobProgress,
  type ImageOutcome,
  type ProgressState,
  type Terminal,
} from './prefetch-progress.js';
import type { Output } from './data-directory.js';

export const DEFAULT_SERVER = 'http://127.0.0.1:5000';

export interface PrefetchFlags {
  server: string;
  /** USER:PASSWORD for a mirror with auth (else REGMIRROR_PREFETCH_CREDS; else anonymous). */
  creds?: string | undefined;
  /** Of an index, the children of these platforms; all of them when none is given. */
  platform?: string[] | undefined;
}

export interface PrefetchOutput extends Output {
  /** Set when standard output is a terminal: the progress is drawn on it as bars. */
  terminal: Terminal | undefined;
}

/** Blobs fetched at once; more would only share the same link to the mirror. */
const BLOB_CONCURRENCY = 3;
const MANIFEST_CONCURRENCY = 3;
/** The mirror may have to ask its upstream (a token, a connection) before it answers. */
const HEADERS_TIMEOUT_MS = 60_000;
/** The longest pause between two chunks of a body: a blob of any size streams, one that stalls fails. */
const BODY_IDLE_TIMEOUT_MS = 60_000;
/** A whole manifest, headers and body. */
const MANIFEST_DEADLINE_MS = 120_000;
/** An index of indexes is allowed; deeper nesting is not seen in the wild. */
const MAX_INDEX_DEPTH = 3;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

/** Pulls the images; resolves with the exit status: 0 all pulled, 1 any failed, 2 bad usage (before any request). */
export async function runPrefetch(
  references: readonly string[],
  flags: PrefetchFlags,
  output: PrefetchOutput = standardOutput(),
  environment: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const usage = readUsage(references, flags);
  if (!usage.ok) {
    for (const problem of usage.problems) output.err(`regmirror prefetch: ${problem}`);
    return 2;
  }
  const creds = flags.creds ?? environment.REGMIRROR_PREFETCH_CREDS;
  if (creds !== undefined && !creds.includes(':')) {
    output.err('regmirror prefetch: --creds: expected USER:PASSWORD');
    return 2;
  }
  const client = new MirrorClient(usage.origin, creds);
  const prefetch = new Prefetch(client, usage.platforms, (blob) => {
    if (output.terminal === undefined) output.out(blobLine(blob));
  });
  const frame = output.terminal === undefined ? undefined : new TerminalFrame(output.terminal, (size) => renderFrame(prefetch.state, Date.now(), size));
  const print = (write: () => void): void => (frame === undefined ? write() : frame.above(write));
  frame?.start();
  try {
    const outcomes = await Promise.all(
      usage.images.map(async (image) => {
        const outcome = await prefetch.pull(image);
        print(() => {
          output.out(imageLine(outcome));
          for (const error of outcome.errors) output.err(`regmirror prefetch: ${outcome.reference} failed: ${error}`);
        });
        return outcome;
      }),
    );
    frame?.stop();
    output.out(overallLine(outcomes, prefetch.state.blobs, Date.now() - prefetch.state.startedAt));
    return outcomes.some((outcome) => outcome.errors.length > 0) ? 1 : 0;
  } finally {
    frame?.stop();
    await client.close();
  }
}

interface RequestedImage {
  /** As the user wrote it. */
  text: string;
  reference: ImageReference;
}

type Usage = { ok: true; origin: string; platforms: PlatformSpec[]; images: RequestedImage[] } | { ok: false; problems: string[] };

/** Everything the command was given, checked before any request; every problem at once. */
export function readUsage(references: readonly string[], flags: PrefetchFlags): Usage {
  const problems: string[] = [];
  const server = readServer(flags.server);
  if (!server.ok) problems.push(`--server ${flags.server}: ${server.reason}`);
  const platforms: PlatformSpec[] = [];
  for (const text of flags.platform ?? []) {
    const parsed = parsePlatform(text);
    if (parsed.ok) platforms.push(parsed.platform);
    else problems.push(`--platform ${text}: ${parsed.reason}`);
  }
  const images: RequestedImage[] = [];
  for (const text of references) {
    const parsed = parseImageReference(text);
    if (parsed.ok) images.push({ text, reference: parsed.reference });
    else problems.push(`${JSON.stringify(text)}: malformed reference: ${parsed.reason}`);
  }
  if (references.length === 0) problems.push('no image to prefetch');
  if (!server.ok || problems.length > 0) return { ok: false, problems };
  return { ok: true, origin: server.origin, platforms, images };
}

function readServer(text: string): { ok: true; origin: string } | { ok: false; reason: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, reason: 'not a URL (e.g. http://127.0.0.1:5000)' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: 'the mirror is reached over http:// or https://' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'credentials in the URL are not supported' };
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return { ok: false, reason: 'the v2 API is at the root of the mirror: give its URL without a path' };
  return { ok: true, origin: url.origin };
}

interface FetchedManifest {
  digest: Digest;
  parsed: Extract<ManifestParse, { ok: true }>;
}

/** One run: the progress of every blob, each blob fetched once however many images list it. */
class Prefetch {
  private readonly blobs: BlobProgress[] = [];
  readonly state: ProgressState = { startedAt: Date.now(), blobs: this.blobs, resolving: 0 };
  private readonly fetches = new Map<Digest, Promise<void>>();
  private readonly blobSlots = new Slots(BLOB_CONCURRENCY);
  private readonly manifestSlots = new Slots(MANIFEST_CONCURRENCY);

  constructor(
    private readonly client: MirrorClient,
    private readonly platforms: readonly PlatformSpec[],
    private readonly blobEnded: (blob: BlobProgress) => void,
  ) {}

  /** Never rejects: what went wrong is in the outcome's errors. */
  async pull(image: RequestedImage): Promise<ImageOutcome> {
    const startedAt = Date.now();
    const outcome: ImageOutcome = { reference: image.text, digest: undefined, manifests: 0, blobs: 0, bytes: 0, elapsedMs: 0, errors: [] };
    const { name, digest } = image.reference;
    let wanted: BlobDescriptor[] = [];
    this.state.resolving += 1;
    try {
      const top = await this.manifest(name, manifestReference(image.reference), { digest, size: undefined });
      outcome.digest = top.digest;
      wanted = await this.blobsOf(name, top, outcome, 0);
    } catch (error) {
      outcome.errors.push(describeError(error));
    } finally {
      this.state.resolving -= 1;
    }
    const unique = [...new Map(wanted.map((blob) => [blob.digest, blob])).values()];
    const settled = await Promise.allSettled(unique.map((blob) => this.blob(name, blob)));
    for (const result of settled) if (result.status === 'rejected') outcome.errors.push(describeError(result.reason));
    outcome.blobs = unique.length;
    outcome.bytes = unique.reduce((sum, blob) => sum + (blob.size ?? 0), 0);
    outcome.elapsedMs = Date.now() - startedAt;
    return outcome;
  }

  /** The blobs a manifest needs: its own config and layers, or those of an index's children of the wanted platforms. */
  private async blobsOf(name: string, manifest: FetchedManifest, outcome: ImageOutcome, depth: number): Promise<BlobDescriptor[]> {
    outcome.manifests += 1;
    if (!isIndexMediaType(manifest.parsed.mediaType)) return manifest.parsed.blobs;
    if (depth >= MAX_INDEX_DEPTH) throw new PrefetchFailure(`index ${shortDigest(manifest.digest)}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    const { children } = manifest.parsed;
    const selected = selectChildren(children, this.platforms);
    if (selected.length === 0 && children.length > 0) {
      const listed = children.map((child) => (child.platform === undefined ? 'no platform' : formatPlatform(child.platform)));
      throw new PrefetchFailure(`no manifest for ${this.platforms.map(formatPlatform).join(', ')} in the index (it has ${[...new Set(listed)].join(', ')})`);
    }
    const fetched = await Promise.all(selected.map((child) => this.manifest(name, child.digest, child)));
    const nested = await Promise.all(fetched.map((child) => this.blobsOf(name, child, outcome, depth + 1)));
    return nested.flat();
  }

  private manifest(name: string, reference: string, expected: { digest: Digest | undefined; size: number | undefined }): Promise<FetchedManifest> {
    const what = `manifest ${isDigest(reference) ? shortDigest(reference) : reference}`;
    return this.manifestSlots.run(async () => {
      const response = await this.client.get(what, `/v2/${name}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, AbortSignal.timeout(MANIFEST_DEADLINE_MS));
      if (response.statusCode !== 200) throw await answerFailure(what, response);
      const bytes = await readWhole(what, response.body, MAX_MANIFEST_BYTES);
      const digest = digestOf(bytes);
      const announced = headerValue(response.headers['docker-content-digest']);
      if (expected.digest !== undefined && digest !== expected.digest) throw new PrefetchFailure(`${what}: the mirror sent bytes that hash to ${digest}`);
      if (announced !== undefined && announced !== digest) throw new PrefetchFailure(`${what}: its bytes hash to ${digest}, not to its Docker-Content-Digest ${announced}`);
      if (expected.size !== undefined && bytes.length !== expected.size) throw new PrefetchFailure(`${what}: ${bytes.length} bytes, where the index declares ${expected.size}`);
      const parsed = parseManifest(bytes, headerValue(response.headers['content-type']));
      if (!parsed.ok) throw new PrefetchFailure(`${what}: ${parsed.reason}`);
      return { digest, parsed };
    });
  }

  /** Fetches a blob, or joins the fetch of it another image started. */
  private blob(name: string, descriptor: BlobDescriptor): Promise<void> {
    const running = this.fetches.get(descriptor.digest);
    if (running !== undefined) return running;
    const progress: BlobProgress = { ...descriptor, received: 0, phase: 'waiting', startedAt: undefined, endedAt: undefined };
    this.blobs.push(progress);
    const ended = (phase: 'done' | 'failed'): void => {
      progress.phase = phase;
      progress.endedAt = Date.now();
      this.blobEnded(progress);
    };
    const fetch = this.blobSlots.run(() => this.fetchBlob(name, progress)).then(
      () => ended('done'),
      (error: unknown) => {
        ended('failed');
        throw error;
      },
    );
    this.fetches.set(descriptor.digest, fetch);
    return fetch;
  }

  /** Streams a blob's body, hashing and counting it as it arrives; it must be the declared size and hash to its digest. */
  private async fetchBlob(name: string, progress: BlobProgress): Promise<void> {
    const what = `${progress.role} ${shortDigest(progress.digest)}`;
    progress.phase = 'active';
    progress.startedAt = Date.now();
    const response = await this.client.get(what, `/v2/${name}/blobs/${progress.digest}`, {});
    if (response.statusCode !== 200) throw await answerFailure(what, response);
    const hash = new DigestWriter();
    try {
      for await (const chunk of response.body) {
        hash.update(chunk as Buffer);
        progress.received = hash.size;
        if (progress.size !== undefined && hash.size > progress.size) {
          throw new PrefetchFailure(`${what}: the mirror sent more than the ${progress.size} bytes the manifest declares`);
        }
      }
    } catch (error) {
      response.body.destroy();
      if (error instanceof PrefetchFailure) throw error;
      throw new PrefetchFailure(`${what}: the body broke off after ${hash.size} bytes`, { cause: error });
    }
    if (progress.size !== undefined && hash.size !== progress.size) {
      throw new PrefetchFailure(`${what}: the mirror sent ${hash.size} bytes, the manifest declares ${progress.size}`);
    }
    const digest = hash.digest();
    if (digest !== progress.digest) throw new PrefetchFailure(`${what}: the mirror sent bytes that hash to ${digest}`);
  }
}

/** Why an image could not be pulled, said for the terminal. */
class PrefetchFailure extends Error {
  override readonly name = 'PrefetchFailure';
}

/**
 * The mirror over HTTP: one keep-alive pool, deadlines, no redirect followed (the mirror answers itself). A 401
 * with a Bearer challenge runs the docker token flow once per scope (with --creds, or anonymously) and retries.
 */
class MirrorClient {
  private readonly agent = new Agent({ headersTimeout: HEADERS_TIMEOUT_MS, bodyTimeout: BODY_IDLE_TIMEOUT_MS, connections: BLOB_CONCURRENCY + MANIFEST_CONCURRENCY });
  /** Tokens by scope (the challenge's), as promises: the requests of one repository share one token request. */
  private readonly tokens = new Map<string, Promise<string>>();

  constructor(
    private readonly origin: string,
    private readonly creds: string | undefined,
  ) {}

  async get(what: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const first = await this.send(what, path, headers, signal, undefined);
    const challenge = first.statusCode === 401 ? parseBearerChallenge(headerValue(first.headers['www-authenticate'])) : undefined;
    if (challenge === undefined) return first;
    await first.body.dump();
    const key = `${challenge.realm} ${challenge.service} ${challenge.scope}`;
    let token = this.tokens.get(key);
    if (token === undefined) {
      token = this.fetchToken(what, challenge);
      this.tokens.set(key, token);
      token.catch(() => this.tokens.delete(key));
    }
    return this.send(what, path, headers, signal, `Bearer ${await token}`);
  }

  private async send(what: string, path: string, headers: Record<string, string>, signal: AbortSignal | undefined, authorization: string | undefined): Promise<Dispatcher.ResponseData> {
    try {
      const all = { 'user-agent': 'regmirror-prefetch', ...headers, ...(authorization === undefined ? {} : { authorization }) };
      return await this.agent.request({ origin: this.origin, path, method: 'GET', headers: all, signal });
    } catch (error) {
      throw new PrefetchFailure(`${what}: no answer from ${this.origin}`, { cause: error });
    }
  }

  private async fetchToken(what: string, challenge: BearerChallenge): Promise<string> {
    const url = new URL(challenge.realm);
    if (challenge.service !== undefined) url.searchParams.set('service', challenge.service);
    if (challenge.scope !== undefined) url.searchParams.set('scope', challenge.scope);
    const headers: Record<string, string> = { 'user-agent': 'regmirror-prefetch' };
    if (this.creds !== undefined) headers.authorization = `Basic ${Buffer.from(this.creds).toString('base64')}`;
    let response: Dispatcher.ResponseData;
    try {
      response = await this.agent.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method: 'GET', headers });
    } catch (error) {
      throw new PrefetchFailure(`${what}: no answer from the token realm ${url.origin}`, { cause: error });
    }
    const body = await readWhole(`${what}: token`, response.body, MAX_ERROR_BODY_BYTES);
    if (response.statusCode !== 200) throw new PrefetchFailure(`${what}: the token realm refused${this.creds === undefined ? ' (no --creds given)' : ''}: ${describeAnswer(response.statusCode, body)}`);
    const parsed = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown };
    const token = typeof parsed.token === 'string' ? parsed.token : parsed.access_token;
    if (typeof token !== 'string' || token === '') throw new PrefetchFailure(`${what}: the token realm answered no token`);
    return token;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

interface BearerChallenge {
  realm: string;
  service: string | undefined;
  scope: string | undefined;
}

/** `Bearer realm="…",service="…",scope="…"`; undefined for any other challenge. */
export function parseBearerChallenge(header: string | undefined): BearerChallenge | undefined {
  if (header === undefined || !/^bearer\s/i.test(header)) return undefined;
  const parameters = new Map<string, string>();
  for (const match of header.slice(6).matchAll(/([a-zA-Z]+)="([^"]*)"/g)) parameters.set((match[1] ?? '').toLowerCase(), match[2] ?? '');
  const realm = parameters.get('realm');
  if (realm === undefined || !/^https?:\/\//.test(realm)) return undefined;
  return { realm, service: parameters.get('service'), scope: parameters.get('scope') };
}

async function readWhole(what: string, body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      total += (chunk as Buffer).length;
      if (total > limit) throw new PrefetchFailure(`${what}: larger than ${formatSize(limit)}`);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    body.destroy();
    if (error instanceof PrefetchFailure) throw error;
    throw new PrefetchFailure(`${what}: the body broke off after ${total} bytes`, { cause: error });
  }
  return Buffer.concat(chunks);
}

async function answerFailure(what: string, response: Dispatcher.ResponseData): Promise<PrefetchFailure> {
  // The body only adds the mirror's own words to the status; an error body that cannot be read leaves the status alone.
  const body = await readWhole(what, response.body, MAX_ERROR_BODY_BYTES).catch(() => undefined);
  return new PrefetchFailure(`${what}: ${describeAnswer(response.statusCode, body)}`);
}

/** An answer other than 200 in one line: its status, then the codes and messages of an OCI error body when it has one. */
export function describeAnswer(status: number, body: Uint8Array | undefined): string {
  const reason = STATUS_CODES[status];
  const errors = ociErrors(body);
  const redirect = status >= 300 && status < 400 ? ' (a redirect: prefetch follows none)' : '';
  return `HTTP ${status}${reason === undefined ? '' : ` ${reason}`}${errors.length === 0 ? '' : `: ${errors.join('; ')}`}${redirect}`;
}

const MAX_ERRORS_SHOWN = 3;
const MAX_ERROR_TEXT = 200;

function ociErrors(body: Uint8Array | undefined): string[] {
  if (body === undefined) return [];
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    return [];
  }
  const errors = typeof document === 'object' && document !== null ? (document as { errors?: unknown }).errors : undefined;
  if (!Array.isArray(errors)) return [];
  return errors.slice(0, MAX_ERRORS_SHOWN).flatMap((entry: unknown) => {
    if (typeof entry !== 'object' || entry === null) return [];
    const { code, message } = entry as Record<string, unknown>;
    const words = [code, message].filter((part): part is string => typeof part === 'string' && part !== '');
    // The mirror's words go to a terminal: no control characters, no screenful.
    return words.length === 0 ? [] : [words.join(' ').replace(/\p{Cc}/gu, ' ').slice(0, MAX_ERROR_TEXT)];
  });
}

/** At most `size` tasks at once; the others wait their turn in order. */
class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(size: number) {
    this.free = size;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.free += 1;
      else next();
    }
  }
}

function standardOutput(): PrefetchOutput {
  const stdout = process.stdout;
  return {
    out: (line) => stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    terminal: stdout.isTTY
      ? {
          write: (text) => stdout.write(text),
          // A terminal that does not say its size (a bare pty) gets the classic one.
          get columns() {
            return stdout.columns || 80;
          },
          get rows() {
            return stdout.rows || 24;
          },
        }
      : undefined,
  };
}

// Pinned images (prefetch.images): fetched through the mirror at start and every prefetch.interval, whether
// anyone pulls them or not, so their tags stay fresh and their content cached; never evicted (the evictor and
// the collector take pinnedRoots()); served stale without an age limit when their upstream fails.

import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RepositoryRef } from '../meta/metadata-store.js';
import type { Digest } from '../oci/digest.js';
import { manifestReference, parseImageReference, type ImageReference } from '../oci/image-reference.js';
import { isIndexMediaType, MANIFEST_MEDIA_TYPES, parseManifest } from '../oci/manifest.js';
import { parsePlatform, selectChildren, type PlatformSpec } from '../oci/platform.js';
import type { LocalRegistry } from '../registry/local-registry.js';
import { repositoryOf, type Mirror } from '../mirror/mirror.js';
import type { Target, UpstreamRouter } from '../mirror/upstream-router.js';
import type { Metrics } from '../telemetry/metrics.js';

export interface PrefetchOptions {
  images: readonly string[];
  /** OS/ARCH[/VARIANT]; empty: every child of an index. */
  platforms: readonly string[];
  intervalMs: number;
}

export interface PrefetchStatus {
  image: string;
  /** What the image resolved to last (the root that is pinned). */
  digest: Digest | null;
  lastSuccess: number | null;
  lastError: string | null;
}

interface PinnedImage {
  reference: ImageReference;
  status: PrefetchStatus;
}

/** The configured references and platforms, read (the configuration's schema has checked them). */
function parseOrThrow<T>(texts: readonly string[], parse: (text: string) => { ok: true; value: T } | { ok: false; reason: string }): T[] {
  return texts.map((text) => {
    const parsed = parse(text);
    if (!parsed.ok) throw new Error(`prefetch: ${parsed.reason}: ${text}`);
    return parsed.value;
  });
}

function readReference(text: string): { ok: true; value: ImageReference } | { ok: false; reason: string } {
  const parsed = parseImageReference(text);
  return parsed.ok ? { ok: true, value: parsed.reference } : parsed;
}

function readPlatform(text: string): { ok: true; value: PlatformSpec } | { ok: false; reason: string } {
  const parsed = parsePlatform(text);
  return parsed.ok ? { ok: true, value: parsed.platform } : parsed;
}

/** The roots pinned by digest alone (what `regmirror gc` keeps offline; pinned tags are kept as every tag is). */
export function digestsPinnedBy(images: readonly string[]): Set<Digest> {
  return new Set(parseOrThrow(images, readReference).flatMap((reference) => (reference.digest === undefined ? [] : [reference.digest])));
}

export class Prefetcher {
  private readonly images: PinnedImage[];
  private readonly platforms: PlatformSpec[];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly stopped = new AbortController();

  constructor(
    private readonly mirror: Mirror,
    private readonly local: LocalRegistry,
    private readonly router: UpstreamRouter,
    private readonly options: PrefetchOptions,
    private readonly metrics: Metrics,
    private readonly log: { info(fields: object, message: string): void; warn(fields: object, message: string): void },
  ) {
    this.platforms = parseOrThrow(options.platforms, readPlatform);
    this.images = parseOrThrow(options.images, readReference).map((reference, index) => ({
      reference,
      status: { image: options.images[index] ?? reference.name, digest: reference.digest ?? null, lastSuccess: null, lastError: null },
    }));
  }

  /** The roots pinned now: what each image resolved to (its digest, or the manifest its tag points at). */
  pinnedRoots(): ReadonlySet<Digest> {
    return new Set(this.images.flatMap((image) => (image.status.digest === null ? [] : [image.status.digest])));
  }

  /** Whether a tag is a pinned image's: it is served stale however old when its upstream fails. */
  pinsTag(repository: RepositoryRef, tag: string): boolean {
    return this.images.some((image) => {
      if (image.reference.digest !== undefined || image.reference.tag !== tag) return false;
      const target = this.targetOf(image);
      return target !== undefined && target.registry === repository.registry && target.name === repository.name;
    });
  }

  status(): PrefetchStatus[] {
    return this.images.map((image) => ({ ...image.status }));
  }

  /** Pins what the tags already cached point at (before eviction first runs), then fetches now and on the interval. */
  async start(): Promise<void> {
    for (const image of this.images) {
      const target = this.targetOf(image);
      const tag = image.reference.tag;
      if (image.reference.digest !== undefined || target === undefined || tag === undefined) continue;
      const record = await this.local.getTag(repositoryOf(target), tag);
      if (record !== undefined) image.status.digest = record.digest;
    }
    if (this.images.length === 0) return;
    const tick = (): void => {
      void this.run().finally(() => {
        if (!this.stopped.signal.aborted) this.timer = setTimeout(tick, this.options.intervalMs).unref();
      });
    };
    tick();
  }

  /** Stops the interval and the run in progress between two images (its fill is the mirror's to abort). */
  stop(): void {
    this.stopped.abort();
    clearTimeout(this.timer);
  }

  /** Fetches every image once (one at a time: a background job, not a burst); failures are logged and kept in the status. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const image of this.images) {
        if (this.stopped.signal.aborted) return;
        try {
          const bytes = await this.fetch(image);
          image.status.lastSuccess = Date.now();
          image.status.lastError = null;
          this.metrics.prefetches.inc({ outcome: 'ok' });
          this.log.info({ image: image.status.image, digest: image.status.digest, fetchedBytes: bytes }, 'prefetched pinned image');
        } catch (error) {
          image.status.lastError = (error as Error).message;
          this.metrics.prefetches.inc({ outcome: 'failed' });
          this.log.warn({ image: image.status.image, err: (error as Error).message }, 'prefetch of a pinned image failed');
        }
      }
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private targetOf(image: PinnedImage): Target | undefined {
    try {
      return this.router.pick(image.reference.name);
    } catch {
      return undefined;
    }
  }

  /** Fetches one image whole through the mirror; returns the bytes fetched from the upstream (0 when all was cached). */
  private async fetch(image: PinnedImage): Promise<number> {
    const target = this.router.pick(image.reference.name);
    const { digest } = image.reference;
    const root = await this.mirror.manifest(target, digest !== undefined ? { kind: 'digest', digest } : { kind: 'tag', tag: manifestReference(image.reference) }, [...MANIFEST_MEDIA_TYPES]);
    image.status.digest = root.manifest.digest;
    const manifests = [root.manifest];
    if (isIndexMediaType(root.manifest.mediaType)) {
      const parsed = parseManifest(root.manifest.bytes, root.manifest.mediaType);
      const children = parsed.ok ? selectChildren(parsed.children, this.platforms) : [];
      if (children.length === 0) throw new Error(`no child manifest of ${image.status.image} is of the platforms ${this.options.platforms.join(', ')}`);
      for (const child of children) manifests.push((await this.mirror.manifest(target, { kind: 'digest', digest: child.digest }, [...MANIFEST_MEDIA_TYPES])).manifest);
    }
    let fetched = 0;
    for (const manifest of manifests) {
      const parsed = parseManifest(manifest.bytes, manifest.mediaType);
      if (!parsed.ok) continue;
      for (const reference of parsed.references) {
        if (reference.role !== 'config' && reference.role !== 'layer') continue;
        fetched += await this.fetchBlob(target, reference.digest);
      }
    }
    return fetched;
  }

  private async fetchBlob(target: Target, digest: Digest): Promise<number> {
    const answer = await this.mirror.blob(target, digest, 'GET', undefined);
    if (answer.body === undefined) return 0;
    if (answer.cache === 'hit') {
      answer.body.destroy();
      return 0;
    }
    // A fill: read it to the end, as a client would (its last bytes come once the whole blob is verified).
    let bytes = 0;
    await pipeline(
      answer.body,
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          bytes += chunk.length;
          done();
        },
      }),
      { signal: this.stopped.signal },
    );
    return bytes;
  }
}

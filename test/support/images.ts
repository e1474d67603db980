// Deterministic container images without a network: seeded pseudo-random layers written as real
// tar+gzip blobs into an OCI image layout, and pushed to a registry with skopeo.
import { createHash, randomUUID } from 'node:crypto';
import { access, copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip } from 'node:zlib';
import { skopeo } from './skopeo.js';

export interface LayerSpec {
  /** Exact byte count of the pseudo-random file inside the layer's tar. */
  size: number;
  seed: number;
}

export interface ImageSpec {
  layers: LayerSpec[];
  /** Defaults to linux/amd64. */
  platform?: { os: string; architecture: string; variant?: string };
}

export interface BuiltImage {
  manifestDigest: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  /** Digests of the compressed (tar+gzip) layer blobs, in manifest order. */
  layerDigests: string[];
  /** Sizes of the compressed layer blobs. */
  layerSizes: number[];
  /** sha256 of each uncompressed tar (the config's rootfs.diff_ids). */
  diffIds: string[];
  platform: { os: string; architecture: string; variant?: string };
}

export interface BuiltLayout {
  dir: string;
  tag: string;
  /** What the tag points at: the manifest digest for one image, the index digest for several. */
  topDigest: string;
  images: BuiltImage[];
  indexDigest?: string;
  indexBytes?: Buffer;
}

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

const EPOCH = '1970-01-01T00:00:00Z';
const CHUNK_BYTES = 1 << 20; // multiple of 4, so chunked output equals one-shot output
const REF_NAME = 'org.opencontainers.image.ref.name';
const littleEndian = endianness() === 'LE';

/** xoshiro128** seeded through splitmix32: fast, and the same stream for the same seed everywhere. */
class SeededBytes {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let mix = (Math.trunc(seed) >>> 0) ^ Math.imul(Math.floor(Math.trunc(seed) / 2 ** 32) >>> 0, 0x9e3779b9);
    const splitmix32 = (): number => {
      mix = (mix + 0x9e3779b9) | 0;
      let z = mix;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = splitmix32();
    this.s1 = splitmix32();
    this.s2 = splitmix32();
    this.s3 = splitmix32();
  }

  /** The next `size` bytes of the stream; only the final call of a stream may ask for a size not divisible by 4. */
  next(size: number): Buffer {
    const words = new Uint32Array(Math.ceil(size / 4));
    let { s0, s1, s2, s3 } = this;
    for (let i = 0; i < words.length; i++) {
      const r = Math.imul(s1, 5);
      words[i] = Math.imul((r << 7) | (r >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
    }
    Object.assign(this, { s0, s1, s2, s3 });
    const bytes = Buffer.from(words.buffer, 0, size);
    if (!littleEndian) Buffer.from(words.buffer).swap32();
    return bytes;
  }
}

/** `size` pseudo-random (incompressible) bytes, the same for the same seed. */
export function deterministicBytes(size: number, seed: number): Buffer {
  return new SeededBytes(seed).next(size);
}

export function sha256Digest(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Path of a blob inside an OCI layout directory. */
export function layoutBlobPath(dir: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (algorithm === undefined || hex === undefined) throw new Error(`not a digest: ${digest}`);
  return join(dir, 'blobs', algorithm, hex);
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0');
}

/** A POSIX ustar header for one regular file, mode 0644, uid/gid 0, mtime 0. */
function ustarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512);
  const put = (text: string, offset: number, length: number): void => {
    header.write(text, offset, length, 'ascii');
  };
  put(name, 0, 100);
  put(`${octal(0o644, 8)}\0`, 100, 8);
  put(`${octal(0, 8)}\0`, 108, 8); // uid
  put(`${octal(0, 8)}\0`, 116, 8); // gid
  put(`${octal(size, 12)}\0`, 124, 12);
  put(`${octal(0, 12)}\0`, 136, 12); // mtime
  put('        ', 148, 8); // checksum counts as spaces while summing
  put('0', 156, 1); // regular file
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put('root', 265, 32);
  put('root', 297, 32);
  let checksum = 0;
  for (const byte of header) checksum += byte;
  put(`${octal(checksum, 7)}\0 `, 148, 8);
  return header;
}

/** The uncompressed layer tar: one file `layer-<seed>.bin` of spec.size seeded bytes, in ≤1 MiB chunks. */
function* layerTarChunks(spec: LayerSpec): Generator<Buffer> {
  if (!Number.isSafeInteger(spec.size) || spec.size < 0 || spec.size >= 8 ** 11) throw new Error(`bad layer size ${spec.size}`);
  yield ustarHeader(`layer-${spec.seed}.bin`, spec.size);
  const content = new SeededBytes(spec.seed);
  for (let done = 0; done < spec.size; done += CHUNK_BYTES) yield content.next(Math.min(CHUNK_BYTES, spec.size - done));
  const padding = (512 - (spec.size % 512)) % 512;
  yield Buffer.alloc(padding + 1024); // pad the file to a block, then the two zero end-of-archive blocks
}

/** Passes bytes through while hashing and counting them. */
class Measure extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

interface WrittenLayer {
  digest: string;
  size: number;
  diffId: string;
  path: string;
}

/** Layers this process already built, by size:seed; reused by copying the blob. */
const builtLayers = new Map<string, WrittenLayer>();

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function writeBlob(dir: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha256Digest(bytes);
  await writeFile(layoutBlobPath(dir, digest), bytes);
  return { digest, size: bytes.length };
}

async function writeLayer(dir: string, spec: LayerSpec): Promise<WrittenLayer> {
  const key = `${spec.size}:${spec.seed}`;
  const known = builtLayers.get(key);
  if (known !== undefined && (await exists(known.path))) {
    const path = layoutBlobPath(dir, known.digest);
    if (path !== known.path && !(await exists(path))) await copyFile(known.path, path);
    return { ...known, path };
  }
  const partial = join(dir, 'blobs', 'sha256', `.partial-${randomUUID()}`);
  const uncompressed = new Measure();
  const compressed = new Measure();
  // Level 1: random content does not compress anyway, and zlib's output is deterministic per level.
  const gzip = createGzip({ level: 1, strategy: zlibConstants.Z_DEFAULT_STRATEGY });
  try {
    await pipeline(Readable.from(layerTarChunks(spec)), uncompressed, gzip, compressed, createWriteStream(partial));
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
  const digest = `sha256:${compressed.hash.digest('hex')}`;
  const path = layoutBlobPath(dir, digest);
  await rename(partial, path);
  const layer = { digest, size: compressed.bytes, diffId: `sha256:${uncompressed.hash.digest('hex')}`, path };
  builtLayers.set(key, layer);
  return layer;
}

async function buildImage(dir: string, spec: ImageSpec): Promise<BuiltImage> {
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers: WrittenLayer[] = [];
  for (const layerSpec of spec.layers) layers.push(await writeLayer(dir, layerSpec));

  const config = {
    created: EPOCH,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant === undefined ? {} : { variant: platform.variant }),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: layers.map((layer) => layer.diffId) },
    history: spec.layers.map((layerSpec) => ({ created: EPOCH, created_by: `regmirror test layer seed=${layerSpec.seed} size=${layerSpec.size}` })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configBlob = await writeBlob(dir, configBytes);

  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((layer) => ({ mediaType: MEDIA_TYPES.ociLayerGzip, digest: layer.digest, size: layer.size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestBlob = await writeBlob(dir, manifestBytes);
  return {
    manifestDigest: manifestBlob.digest,
    manifestBytes,
    configDigest: configBlob.digest,
    configBytes,
    layerDigests: layers.map((layer) => layer.digest),
    layerSizes: layers.map((layer) => layer.size),
    diffIds: layers.map((layer) => layer.diffId),
    platform,
  };
}

interface LayoutIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
}

async function readLayoutIndex(dir: string): Promise<LayoutIndex> {
  try {
    return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as LayoutIndex;
  } catch {
    return { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [] };
  }
}

/**
 * Writes (or adds tag to) an OCI image layout in dir. One ImageSpec: the tag names an image manifest.
 * Several: the tag names an OCI image index whose entries carry each image's platform. Other tags
 * already in dir stay; an existing entry for the same tag is replaced.
 */
export async function buildImageLayout(dir: string, tag: string, images: ImageSpec[]): Promise<BuiltLayout> {
  const first = images[0];
  if (first === undefined) throw new Error('buildImageLayout: no images');
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');

  const built: BuiltImage[] = [];
  for (const spec of images) built.push(await buildImage(dir, spec));

  let top: { mediaType: string; digest: string; size: number };
  let indexDigest: string | undefined;
  let indexBytes: Buffer | undefined;
  const [only] = built;
  if (built.length === 1 && only !== undefined) {
    top = { mediaType: MEDIA_TYPES.ociManifest, digest: only.manifestDigest, size: only.manifestBytes.length };
  } else {
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: built.map((image) => ({
        mediaType: MEDIA_TYPES.ociManifest,
        digest: image.manifestDigest,
        size: image.manifestBytes.length,
        platform: image.platform,
      })),
    };
    indexBytes = Buffer.from(JSON.stringify(index));
    const indexBlob = await writeBlob(dir, indexBytes);
    indexDigest = indexBlob.digest;
    top = { mediaType: MEDIA_TYPES.ociIndex, ...indexBlob };
  }

  const layoutIndex = await readLayoutIndex(dir);
  layoutIndex.manifests = layoutIndex.manifests.filter((entry) => entry.annotations?.[REF_NAME] !== tag);
  layoutIndex.manifests.push({ ...top, annotations: { [REF_NAME]: tag } });
  await writeFile(join(dir, 'index.json'), JSON.stringify(layoutIndex));

  return { dir, tag, topDigest: top.digest, images: built, ...(indexDigest === undefined ? {} : { indexDigest, indexBytes }) };
}

export interface PushOptions {
  /** 'oci' (default) pushes the layout's bytes unchanged; 'v2s2' converts to Docker schema 2 / manifest list. */
  format?: 'oci' | 'v2s2';
  /** Copy every platform of an index; defaults to true when the layout's tag names an index. */
  all?: boolean;
  /** user:password for the destination registry. */
  creds?: string;
  timeoutMs?: number;
}

/** `skopeo copy oci:DIR:TAG docker://DESTINATION` over plain HTTP, e.g. destination 127.0.0.1:5001/team/app:v1. */
export async function pushLayout(layout: BuiltLayout, destination: string, opts: PushOptions = {}): Promise<void> {
  const args = ['copy', '--quiet', '--dest-tls-verify=false'];
  const all = opts.all ?? layout.indexDigest !== undefined;
  if (all) args.push('--all');
  if (opts.format === 'v2s2') args.push('--format', 'v2s2');
  // Fail rather than let skopeo silently rewrite a manifest or index.
  else args.push('--preserve-digests');
  if (opts.creds !== undefined) args.push('--dest-creds', opts.creds);
  args.push(`oci:${layout.dir}:${layout.tag}`, `docker://${destination}`);
  await skopeo(args, { timeoutMs: opts.timeoutMs ?? 300_000 });
}

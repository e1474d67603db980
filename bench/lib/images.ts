// The benchmark's images: built once (deterministically, by test/support/images.ts) into bench/.cache and
// pushed once into an upstream whose storage lives there too, so a rerun starts in seconds.
//   bench/app:v1         an OCI index: linux/amd64 with layers of about 1 MiB, 50 MiB and 500 MiB, and a small linux/arm64
//   bench/concurrent:v1  one image of about 1 MiB and 50 MiB, pulled by many clients at once
// --quick uses 1 MiB, 5 MiB and 50 MiB.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startDistribution, type Distribution } from '../../test/support/distribution.js';
import { buildImageLayout, MEDIA_TYPES, pushLayout, type BuiltLayout } from '../../test/support/images.js';
import { MiB } from './stats.js';

export interface Sizes {
  small: number;
  medium: number;
  large: number;
}

export const FULL_SIZES: Sizes = { small: 1 * MiB, medium: 50 * MiB, large: 500 * MiB };
export const QUICK_SIZES: Sizes = { small: 1 * MiB, medium: 5 * MiB, large: 50 * MiB };

export interface Blob {
  digest: string;
  size: number;
}

export interface BenchImages {
  sizes: Sizes;
  app: {
    repository: string;
    tag: string;
    indexDigest: string;
    /** The linux/amd64 image: what skopeo pulls on this machine. */
    manifestDigest: string;
    config: Blob;
    /** In manifest order: small, medium, large. */
    layers: Blob[];
    /** Bytes of one pull of linux/amd64: index, manifest, config and layers. */
    pullBytes: number;
  };
  concurrent: {
    repository: string;
    tag: string;
    manifestDigest: string;
    /** Bytes of one pull: manifest, config and layers. */
    pullBytes: number;
  };
  /** What a cold run fetches first to warm a fresh process (not its cache): bench/app's linux/arm64 manifest and small layer, which no measure asks for. */
  warmUp: {
    repository: string;
    manifestDigest: string;
    blob: Blob;
  };
}

/** Bumped when BenchImages changes shape: the layouts of a record of another format are built again. */
const RECORD_FORMAT = 2;

/** bench/app's 500 MiB layer (50 MiB with --quick): the blob the throughput, first-byte and memory measures GET. */
export function largeLayer(images: BenchImages): Blob {
  const large = images.app.layers[2];
  if (large === undefined) throw new Error('bench/app has no large layer');
  return large;
}

/** The v2 path of one of bench/app's blobs. */
export function appBlobPath(images: BenchImages, digest: string): string {
  return `/v2/${images.app.repository}/blobs/${digest}`;
}

const SEEDS = { small: 501, medium: 502, large: 503, armSmall: 504, armMedium: 505, concurrentSmall: 506, concurrentMedium: 507 };

function describeLayouts(app: BuiltLayout, concurrent: BuiltLayout, sizes: Sizes): BenchImages {
  const [amd64, arm64] = app.images;
  const image = concurrent.images[0];
  const warmUpBlob = arm64?.layerDigests[0];
  if (amd64 === undefined || arm64 === undefined || warmUpBlob === undefined || image === undefined || app.indexDigest === undefined || app.indexBytes === undefined) {
    throw new Error('bench images: unexpected layout');
  }
  const layers = amd64.layerDigests.map((digest, index) => ({ digest, size: amd64.layerSizes[index] ?? 0 }));
  const sum = (values: number[]): number => values.reduce((total, value) => total + value, 0);
  return {
    sizes,
    app: {
      repository: 'bench/app',
      tag: 'v1',
      indexDigest: app.indexDigest,
      manifestDigest: amd64.manifestDigest,
      config: { digest: amd64.configDigest, size: amd64.configBytes.length },
      layers,
      pullBytes: app.indexBytes.length + amd64.manifestBytes.length + amd64.configBytes.length + sum(amd64.layerSizes),
    },
    concurrent: {
      repository: 'bench/concurrent',
      tag: 'v1',
      manifestDigest: image.manifestDigest,
      pullBytes: image.manifestBytes.length + image.configBytes.length + sum(image.layerSizes),
    },
    warmUp: { repository: 'bench/app', manifestDigest: arm64.manifestDigest, blob: { digest: warmUpBlob, size: arm64.layerSizes[0] ?? 0 } },
  };
}

/** The layouts under cacheDir, built when missing or built for other sizes. */
async function layouts(cacheDir: string, sizes: Sizes, say: (text: string) => void): Promise<{ dir: string; images: BenchImages }> {
  const dir = path.join(cacheDir, `layout-${sizes.small}-${sizes.medium}-${sizes.large}`);
  const recordPath = path.join(dir, 'bench-images.json');
  const recorded = await readFile(recordPath, 'utf8').then((text) => JSON.parse(text) as { format?: number; images: BenchImages }, () => undefined);
  if (recorded?.format === RECORD_FORMAT) return { dir, images: recorded.images };
  await mkdir(dir, { recursive: true });
  say(`building images into ${dir} (once)`);
  const app = await buildImageLayout(dir, 'app', [
    {
      layers: [
        { size: sizes.small, seed: SEEDS.small },
        { size: sizes.medium, seed: SEEDS.medium },
        { size: sizes.large, seed: SEEDS.large },
      ],
      platform: { os: 'linux', architecture: 'amd64' },
    },
    {
      layers: [
        { size: sizes.small, seed: SEEDS.armSmall },
        { size: Math.round(sizes.medium / 10), seed: SEEDS.armMedium },
      ],
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    },
  ]);
  const concurrent = await buildImageLayout(dir, 'concurrent', [
    {
      layers: [
        { size: sizes.small, seed: SEEDS.concurrentSmall },
        { size: sizes.medium, seed: SEEDS.concurrentMedium },
      ],
    },
  ]);
  const images = describeLayouts(app, concurrent, sizes);
  await writeFile(recordPath, JSON.stringify({ format: RECORD_FORMAT, images }, null, 2));
  return { dir, images };
}

/** Whether the registry at url has repository:tag pointing at digest. */
async function hasTag(url: string, repository: string, tag: string, digest: string): Promise<boolean> {
  const response = await fetch(`${url}/v2/${repository}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: [MEDIA_TYPES.ociIndex, MEDIA_TYPES.ociManifest].join(', ') },
    signal: AbortSignal.timeout(10_000),
  });
  return response.status === 200 && response.headers.get('docker-content-digest') === digest;
}

/**
 * Starts the upstream (distribution 2.8.2) on its storage under cacheDir, with the images in it: built and
 * pushed only the first time for these sizes.
 */
export async function startUpstream(cacheDir: string, sizes: Sizes, say: (text: string) => void): Promise<{ upstream: Distribution; images: BenchImages; layoutDir: string }> {
  const { dir, images } = await layouts(cacheDir, sizes, say);
  const rootDir = path.join(cacheDir, `upstream-${sizes.small}-${sizes.medium}-${sizes.large}`);
  await mkdir(rootDir, { recursive: true });
  const upstream = await startDistribution({ rootDir });
  try {
    const host = `127.0.0.1:${upstream.port}`;
    for (const [tag, image, digest] of [
      ['app', images.app, images.app.indexDigest],
      ['concurrent', images.concurrent, images.concurrent.manifestDigest],
    ] as const) {
      if (await hasTag(upstream.url, image.repository, image.tag, digest)) continue;
      say(`pushing ${image.repository}:${image.tag} to the upstream (once)`);
      const layout: BuiltLayout = { dir, tag, topDigest: digest, images: [], ...(tag === 'app' ? { indexDigest: digest } : {}) };
      await pushLayout(layout, `${host}/${image.repository}:${image.tag}`, { timeoutMs: 900_000 });
    }
  } catch (error) {
    await upstream.destroy();
    throw error;
  }
  return { upstream, images, layoutDir: dir };
}

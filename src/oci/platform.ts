// Platforms as people write them (OS/ARCH[/VARIANT], as docker's and containerd's --platform) and which children
// of an index they select, with containerd's normalisation: aarch64 is arm64, arm64 without a variant is arm64/v8.

import type { ChildManifest, Platform } from './manifest.js';

export interface PlatformSpec {
  os: string;
  architecture: string;
  /** Undefined: any variant of the architecture. */
  variant: string | undefined;
}

export type PlatformParse = { ok: true; platform: PlatformSpec } | { ok: false; reason: string };

const PART = /^[a-z0-9][a-z0-9._-]*$/;

/** Reads `linux/amd64`, `linux/arm64/v8`, `windows/amd64` (case-insensitive, as containerd). */
export function parsePlatform(text: string): PlatformParse {
  const parts = text.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((part) => !PART.test(part))) {
    return { ok: false, reason: 'a platform is OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or linux/arm64/v8' };
  }
  const [os = '', architecture = '', variant] = parts;
  return { ok: true, platform: { os, architecture, variant } };
}

export function formatPlatform(platform: Platform): string {
  const base = `${platform.os ?? 'unknown'}/${platform.architecture ?? 'unknown'}`;
  return platform.variant === undefined || platform.variant === '' ? base : `${base}/${platform.variant}`;
}

/** The children of an index the wanted platforms select: all of them when none is wanted. */
export function selectChildren(children: readonly ChildManifest[], wanted: readonly PlatformSpec[]): ChildManifest[] {
  if (wanted.length === 0) return [...children];
  return children.filter(({ platform }) => platform !== undefined && wanted.some((spec) => platformMatches(spec, platform)));
}

export function platformMatches(wanted: PlatformSpec, candidate: Platform): boolean {
  if (candidate.os === undefined || candidate.architecture === undefined) return false;
  const want = normalise(wanted.os, wanted.architecture, wanted.variant);
  const have = normalise(candidate.os, candidate.architecture, candidate.variant);
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  return wanted.variant === undefined || want.variant === have.variant;
}

/** Architecture names other tools use for the same thing, as containerd's platforms.Normalize. */
const ARCHITECTURE_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  i386: { architecture: '386' },
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
};

/** The variant an architecture has when none is written. */
const DEFAULT_VARIANTS: Record<string, string> = { amd64: 'v1', arm64: 'v8', arm: 'v7' };

function normalise(os: string, architecture: string, variant: string | undefined): { os: string; architecture: string; variant: string | undefined } {
  const alias = ARCHITECTURE_ALIASES[architecture.toLowerCase()];
  const arch = alias?.architecture ?? architecture.toLowerCase();
  let written = (variant === '' ? undefined : variant?.toLowerCase()) ?? alias?.variant;
  // containerd accepts `8` for `v8`.
  if (written !== undefined && /^\d+$/.test(written)) written = `v${written}`;
  return { os: os.toLowerCase(), architecture: arch, variant: written ?? DEFAULT_VARIANTS[arch] };
}

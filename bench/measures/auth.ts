// What client authentication costs on warm requests: regmirror without auth against regmirror with an htpasswd
// user granted pull on "**", called with a Bearer token (fetched once) and with Basic credentials on every request;
// distribution 2.8.2 without auth and with token auth (test/support's token server) for comparison.

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeHtpasswd } from '../../test/support/htpasswd.js';
import { MEDIA_TYPES } from '../../test/support/images.js';
import { startTokenServer } from '../../test/support/token-server.js';
import type { BenchContext } from '../lib/context.js';
import { appBlobPath } from '../lib/images.js';
import { fmt, type Row } from '../lib/report.js';
import { alternate } from '../lib/schedule.js';
import { serverStack, startPeer, startRegmirror, type BenchServer } from '../lib/servers.js';
import { mediansOf, ratio } from '../lib/stats.js';
import { pullImage, wrk } from '../lib/tools.js';

const USER = 'bench';
const PASSWORD = 'bench-password';
const MANIFEST_ACCEPT = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.dockerManifest].join(', ');
/** Authenticated over unauthenticated requests/s, the issue's target. */
const TARGET = 0.8;
/** Five contenders, two measures, 10 s each: three runs keep the group to about five minutes. */
const MAX_RUNS = 3;
/** Longer than the group runs: the token fetched once must not expire under wrk. */
const TOKEN_LIFETIME = '1h';

const CONTENDERS = ['regmirror', 'regmirror bearer', 'regmirror basic', 'peer', 'peer bearer'] as const;
type Contender = (typeof CONTENDERS)[number];

export async function authMeasures(ctx: BenchContext): Promise<Row[]> {
  const { keep, stopAll } = serverStack();
  try {
    ctx.say('auth: starting regmirror without and with auth, the peer without and with token auth');
    const htpasswd = path.join(ctx.scratch, 'auth-htpasswd');
    await writeHtpasswd(htpasswd, { [USER]: PASSWORD });
    const config = path.join(ctx.scratch, 'auth-regmirror.yml');
    // JSON is YAML.
    await writeFile(config, JSON.stringify({ auth: { htpasswd, token: { lifetime: TOKEN_LIFETIME } }, access: [{ users: [USER], repositories: ['**'], actions: ['pull'] }] }));
    const tokenServer = keep(await startTokenServer({ dir: ctx.scratch, users: { [USER]: PASSWORD }, tokenTtlSeconds: 3600, service: 'bench-peer', issuer: 'bench-issuer' }));

    const mirror = keep(await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs }));
    const guarded = keep(await startRegmirror({ upstreamUrl: ctx.upstream.url, nodeArgs: ctx.regmirrorNodeArgs, config }));
    const peer = keep(await startPeer(ctx.upstream.url));
    const guardedPeer = keep(
      await startPeer(ctx.upstream.url, { token: { realm: tokenServer.realm, service: tokenServer.service, issuer: tokenServer.issuer, rootCertBundle: tokenServer.certPath } }),
    );
    const app = ctx.images.app;
    const reference = `${app.repository}:${app.tag}`;
    const creds = `${USER}:${PASSWORD}`;
    for (const [name, server, login] of [
      ['regmirror', mirror, undefined],
      ['regmirror with auth', guarded, creds],
      ['peer', peer, undefined],
      ['peer with token auth', guardedPeer, creds],
    ] as const) {
      ctx.say(`auth: pulling ${reference} through ${name} to fill its cache`);
      await pullImage(server.host, reference, ctx.scratch, 900_000, login);
    }

    const scope = `repository:${app.repository}:pull`;
    const basic = `Basic ${Buffer.from(creds).toString('base64')}`;
    const ownToken = await fetchToken(`${guarded.url}/auth/token?service=regmirror&scope=${scope}`, basic);
    const peerToken = await fetchToken(`${tokenServer.realm}?service=${tokenServer.service}&scope=${scope}`, basic);
    const targets: Record<Contender, { server: BenchServer; authorization: string | undefined }> = {
      regmirror: { server: mirror, authorization: undefined },
      'regmirror bearer': { server: guarded, authorization: `Bearer ${ownToken}` },
      'regmirror basic': { server: guarded, authorization: basic },
      peer: { server: peer, authorization: undefined },
      'peer bearer': { server: guardedPeer, authorization: `Bearer ${peerToken}` },
    };
    const small = app.layers[0];
    if (small === undefined) throw new Error('bench/app has no small layer');
    const specs = [
      { id: 'auth-manifest-by-digest', measure: 'warm manifest GET by digest', path: `/v2/${app.repository}/manifests/${app.manifestDigest}`, accept: MANIFEST_ACCEPT },
      { id: 'auth-blob-get', measure: `warm blob GET, ${fmt.mib(small.size)}`, path: appBlobPath(ctx.images, small.digest), accept: '*/*' },
    ];
    // Guards against measuring refusals: each contender answers 200 with its credentials, and the guarded ones 401 without.
    for (const spec of specs) {
      for (const [name, target] of Object.entries(targets)) await expectStatus(`${target.server.url}${spec.path}`, target.authorization, 200, name);
      await expectStatus(`${guarded.url}${spec.path}`, undefined, 401, 'regmirror with auth, no credentials');
      await expectStatus(`${guardedPeer.url}${spec.path}`, undefined, 401, 'peer with token auth, no credentials');
    }

    const runs = Math.min(ctx.runs, MAX_RUNS);
    const rows: Row[] = [];
    for (const spec of specs) {
      const details: Record<string, number[]> = {};
      const rates = await alternate(runs, CONTENDERS, async (name, run) => {
        ctx.say(`auth: ${spec.measure} (wrk, 32 connections, ${ctx.wrkSeconds} s): run ${run}/${runs}, ${name}`);
        const { server, authorization } = targets[name];
        const headers: Record<string, string> = { accept: spec.accept, ...(authorization === undefined ? {} : { authorization }) };
        const result = await wrk(`${server.url}${spec.path}`, { connections: 32, threads: 2, durationS: ctx.wrkSeconds, headers });
        if (result.errors > 0) ctx.say(`auth: ${spec.measure}: ${name} answered ${result.errors} errors in ${result.requests} requests`);
        (details[`${name} p99 ms`] ??= []).push(result.p99Ms);
        (details[`${name} errors`] ??= []).push(result.errors);
        return result.requestsPerS;
      });
      rows.push(...authRows(spec, { ...rates, ...details }));
    }
    return rows;
  } finally {
    await stopAll();
  }
}

function authRows(spec: { id: string; measure: string }, samples: Record<string, number[]>): Row[] {
  const medians = mediansOf(samples);
  const cell = (name: Contender): string => {
    const errors = (medians[`${name} errors`] ?? 0) > 0 ? ' (with errors)' : '';
    return `${fmt.rps(medians[name] ?? Number.NaN)}, p99 ${fmt.ms(medians[`${name} p99 ms`] ?? Number.NaN)}${errors}`;
  };
  const open = medians.regmirror ?? Number.NaN;
  const peerRatio = ratio(medians['peer bearer'] ?? Number.NaN, medians.peer ?? Number.NaN);
  const row = (scheme: 'bearer' | 'basic'): Row => {
    const name = `regmirror ${scheme}` as const;
    const factor = ratio(medians[name] ?? Number.NaN, open);
    const clean = (medians[`${name} errors`] ?? 0) === 0 && (medians['regmirror errors'] ?? 0) === 0;
    return {
      id: `${spec.id}-${scheme}`,
      measure: `${spec.measure} with ${scheme === 'bearer' ? 'a Bearer token' : 'Basic credentials'} on every request, over the same without auth: requests/s, p99 (wrk, 32 connections)`,
      peer:
        scheme === 'bearer'
          ? `token auth ${cell('peer bearer')}; without ${cell('peer')}; ${fmt.times(peerRatio)}`
          : '— (distribution checks bcrypt on every Basic request: not measured)',
      regmirror: `${cell(name)}; without auth ${cell('regmirror')}`,
      ratio: fmt.times(factor),
      target: `≥ ${TARGET}× without auth`,
      met: factor >= TARGET && clean,
      samples,
      medians,
      unit: 'requests/s',
    };
  };
  return [row('bearer'), row('basic')];
}

async function fetchToken(url: string, authorization: string): Promise<string> {
  const response = await fetch(url, { headers: { authorization } });
  const body = (await response.json()) as { token?: unknown };
  if (response.status !== 200 || typeof body.token !== 'string') throw new Error(`${url}: no token (${response.status})`);
  return body.token;
}

async function expectStatus(url: string, authorization: string | undefined, status: number, who: string): Promise<void> {
  const response = await fetch(url, { headers: { accept: MANIFEST_ACCEPT, ...(authorization === undefined ? {} : { authorization }) } });
  await response.arrayBuffer();
  if (response.status !== status) throw new Error(`${who}: ${url} answered ${response.status}, expected ${status}`);
}

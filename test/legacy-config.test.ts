// regmirror started from a docker-registry 0.9 configuration file: the seed document's configuration, its
// source pointed at a plain regmirror, gives a v1 mirror whose data directory is the file's storage_path
// and which serves a Docker 1.x pull of the source's image.

import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { waitForHttp } from './support/ports.js';
import { startProcess, type ManagedProcess } from './support/processes.js';
import { listeningPort, startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client } from './support/v1-client.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

/** The seed document's configuration, word for word but for its source and storage_path. */
function seedConfig(source: string, storagePath: string): string {
  return `
# The \`common' part is automatically included (and possibly overriden by all
# other flavors)
common: &common
    loglevel: debug
    mirroring:
        source: ${source}
        #source_index: https://index.docker.io
        tags_cache_ttl: 172800  # seconds

local:
    <<: *common
    storage: local
    storage_path: ${storagePath}
`;
}

/** A pino line: level 40 is warn. */
interface LogLine {
  level?: number;
  msg?: string;
  dataDir?: string;
}

function logLines(process: ManagedProcess): LogLine[] {
  return process.lines().flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}

/** `regmirror serve --config FILE` without --data, which startRegmirror always passes; on a port it picks itself. */
async function serveWithoutData(configFile: string, environment: NodeJS.ProcessEnv): Promise<{ process: ManagedProcess; url: string }> {
  const child = startProcess(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--config', configFile], {
    env: { ...process.env, ...environment },
  });
  try {
    const url = `http://127.0.0.1:${await listeningPort(child)}`;
    await waitForHttp(`${url}/healthz`, 15_000);
    return { process: child, url };
  } catch (error) {
    await child.stop('SIGKILL');
    throw error;
  }
}

describe('a docker-registry configuration file', () => {
  let work: string;
  let source: Regmirror;
  const chain = makeV1Chain('seed', [
    { size: 40_000, seed: 71 },
    { size: 30_000, seed: 72 },
  ]);

  before(async () => {
    work = await makeTempDir('legacy-config-');
    // A plain regmirror: a writable v1 registry holding the image the mirror pulls.
    source = await startRegmirror();
    await new V1Client(source.url).push('seed/app', 'latest', chain);
  });

  after(async () => {
    await source?.destroy();
    if (work !== undefined) await removeDir(work);
  });

  it('starts a v1 mirror of its source (the seed configuration, flavor local)', async () => {
    const storagePath = path.join(work, 'registry-seed');
    const configFile = path.join(work, 'seed.yml');
    await writeFile(configFile, seedConfig(source.url, storagePath));
    // startRegmirror passes --data, which overrides storage_path: give it the same directory.
    const mirror = await startRegmirror({ configFile, env: { SETTINGS_FLAVOR: 'local' }, dataDir: storagePath });
    try {
      const health = await fetch(`${mirror.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      await access(path.join(storagePath, 'metadata.sqlite'));

      const ping = await fetch(`${mirror.url}/v1/_ping`);
      await ping.arrayBuffer();
      assert.equal(ping.status, 200);
      assert.equal(ping.headers.get('x-docker-registry-standalone'), 'mirror');

      // A Docker 1.x pull through it is its source's image, fetched from the source and kept in storage_path.
      const pulled = await new V1Client(mirror.url).pull('seed/app', 'latest');
      // A client has a layer's last bytes once they are verified, a moment before the commit writes the file.
      await mirror.fillsSettled();
      assert.deepEqual(pulled.tags, { latest: chain[1]?.id });
      assert.deepEqual(pulled.images.map((image) => image.id), chain.map((image) => image.id));
      for (const [index, image] of chain.entries()) {
        assert.ok(pulled.images[index]?.json.equals(image.json), `json of ${image.id}`);
        assert.ok(pulled.images[index]?.layer.equals(image.layer), `layer of ${image.id}`);
        assert.ok((await readFile(path.join(storagePath, 'images', image.id, 'layer'))).equals(image.layer), `${image.id} in storage_path`);
      }
      await Promise.all([mirror.settle(), source.settle()]);
      for (const image of chain) {
        const layerPath = `/v1/images/${image.id}/layer`;
        assert.deepEqual(mirror.accessEntries().filter((entry) => entry.path === layerPath).map((entry) => entry.cache), ['miss'], 'fetched by the mirror');
        assert.equal(source.accessEntries().filter((entry) => entry.method === 'GET' && entry.status === 200 && entry.path === layerPath).length, 1, 'from the source');
      }
    } finally {
      await mirror.destroy();
    }
  });

  it('makes storage_path the data directory when --data is not given', async () => {
    const storagePath = path.join(work, 'registry-data');
    const configFile = path.join(work, 'data.yml');
    await writeFile(configFile, seedConfig(source.url, storagePath));
    const { process: mirror, url } = await serveWithoutData(configFile, { SETTINGS_FLAVOR: 'local' });
    try {
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      const listening = logLines(mirror).find((line) => line.msg === 'regmirror listening');
      assert.equal(listening?.dataDir, storagePath);
      await access(path.join(storagePath, 'metadata.sqlite'));
    } finally {
      await mirror.stop();
    }
  });

  it('logs the notice when the default flavor has no section, and runs common', async () => {
    const configFile = path.join(work, 'no-flavor.yml');
    await writeFile(configFile, seedConfig(source.url, path.join(work, 'unused')));
    const mirror = await startRegmirror({ configFile, env: { SETTINGS_FLAVOR: '' } });
    try {
      const notice = mirror.lines().find((line) => line.includes('no dev flavor'));
      assert.ok(notice !== undefined, mirror.lines().join('\n'));
      assert.equal((JSON.parse(notice) as LogLine).level, 40);
    } finally {
      await mirror.destroy();
    }
  });

  it('refuses storage: s3 at start-up, with status 2', async () => {
    const configFile = path.join(work, 's3.yml');
    await writeFile(configFile, 'prod:\n  storage: s3\n  storage_path: /registry\n');
    const child = startProcess(process.execPath, [CLI, 'serve', '--config', configFile, '--flavor', 'prod', '--listen', '127.0.0.1:0']);
    assert.equal(await child.exited, 2);
    assert.match(child.lines().join('\n'), /storage s3 is not supported yet/);
  });
});

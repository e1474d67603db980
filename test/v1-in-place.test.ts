// A site moving from docker-registry 0.9 keeps its data: a storage_path written the way 0.9 wrote it
// (images/<id>/{json,layer,ancestry,_checksum}, repositories/<ns>/<repo>/{tag_<tag>,_index_images,json})
// is served in place by a regmirror started from the site's old configuration file.

import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';
import { makeV1Chain, V1Client, type V1Image } from './support/v1-client.js';

/** Python's json.dumps separators, as docker-registry 0.9 wrote its files. */
function pythonJson(value: unknown): string {
  return JSON.stringify(value).replace(/","/g, '", "').replace(/":/g, '": ').replace(/\},\{/g, '}, {');
}

async function writeLegacyStorage(root: string, repository: string, tag: string, images: V1Image[]): Promise<void> {
  for (const [index, image] of images.entries()) {
    const folder = path.join(root, 'images', image.id);
    await mkdir(folder, { recursive: true });
    await writeFile(path.join(folder, 'json'), image.json);
    await writeFile(path.join(folder, 'layer'), image.layer);
    const ancestry = images.slice(0, index + 1).map((ancestor) => ancestor.id).reverse();
    await writeFile(path.join(folder, 'ancestry'), pythonJson(ancestry));
    // 0.9 wrote a JSON list; older versions a bare string: one of each.
    await writeFile(path.join(folder, '_checksum'), index === 0 ? image.checksum : pythonJson([image.checksum]));
  }
  const [namespace, name] = repository.split('/') as [string, string];
  const folder = path.join(root, 'repositories', namespace, name);
  await mkdir(folder, { recursive: true });
  await writeFile(path.join(folder, `tag_${tag}`), images.at(-1)?.id ?? '');
  await writeFile(path.join(folder, '_index_images'), pythonJson(images.map((image) => ({ id: image.id }))));
  await writeFile(path.join(folder, 'json'), pythonJson({ last_update: 1412121600, docker_version: '1.3.2', arch: 'amd64', os: 'linux' }));
}

describe('a docker-registry 0.9 storage_path served in place', () => {
  let work: string;
  let mirror: Regmirror;
  const images = makeV1Chain('in-place', [
    { size: 200_000, seed: 71 },
    { size: 0, seed: 72 },
    { size: 90_000, seed: 73 },
  ]);

  before(async () => {
    work = await makeTempDir('v1-in-place-');
    const storagePath = path.join(work, 'registry');
    await writeLegacyStorage(storagePath, 'team/legacy', 'latest', images);
    const configFile = path.join(work, 'config.yml');
    await writeFile(configFile, `common: &common\n    loglevel: info\n\nlocal:\n    <<: *common\n    storage: local\n    storage_path: ${storagePath}\n`);
    mirror = await startRegmirror({ configFile, dataDir: storagePath, env: { SETTINGS_FLAVOR: 'local' } });
  });

  after(async () => {
    await mirror?.destroy();
    await removeDir(work);
  });

  it('pulls the old images with their bytes, ancestry and checksums', async () => {
    const pulled = await new V1Client(mirror.url).pull('team/legacy', 'latest');
    assert.deepEqual(pulled.tags, { latest: images.at(-1)?.id });
    assert.deepEqual(pulled.ancestry, images.map((image) => image.id).reverse());
    for (const [index, image] of images.entries()) {
      const got = pulled.images[index];
      assert.equal(got?.id, image.id);
      assert.ok(got.json.equals(image.json), `json of image ${index}`);
      assert.ok(got.layer.equals(image.layer), `layer of image ${index}`);
      assert.equal(got.jsonHeaders['x-docker-size'], String(image.layer.length));
      assert.equal(got.jsonHeaders['x-docker-checksum-payload'], image.checksum);
    }
  });

  it('lists and searches the old repository', async () => {
    const search = (await (await fetch(`${mirror.url}/v1/search?q=legacy`)).json()) as { results: Array<{ name: string }> };
    assert.deepEqual(search.results.map((result) => result.name), ['team/legacy']);
  });
});

// The OCI Distribution Specification conformance suite v1.1.1 (../shared/oci-conformance, built from its offline
// source bundle with Debian's Go) against regmirror: the pull workflow through the mirror, with distribution
// 2.8.2 as the upstream holding the content (a mirror takes no pushes of what it mirrors).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, type BuiltLayout } from './support/images.js';
import { buildConformanceSuite, runConformanceSuite } from './support/oci-conformance.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { makeTempDir, removeDir } from './support/temp.js';

describe('OCI conformance suite v1.1.1', () => {
  let suite: string;
  let upstream: Distribution;
  let mirror: Regmirror;
  let work: string;
  let image: BuiltLayout;

  before(async () => {
    work = await makeTempDir('oci-conformance-');
    suite = await buildConformanceSuite();
    upstream = await startDistribution();
    image = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 200_000, seed: 41 }, { size: 1_000, seed: 42 }] }]);
    await pushLayout(image, `127.0.0.1:${upstream.port}/conformance/app:v1`);
    mirror = await startRegmirror({ upstreams: [upstream.url] });
  });

  after(async () => {
    await mirror?.destroy();
    await upstream?.destroy();
    await removeDir(work);
  });

  it('passes the pull workflow through the mirror, distribution 2.8.2 upstream', async () => {
    const built = image.images[0];
    assert.ok(built !== undefined);
    const result = await runConformanceSuite(suite, {
      OCI_ROOT_URL: mirror.url,
      OCI_NAMESPACE: 'conformance/app',
      OCI_TEST_PULL: '1',
      OCI_MANIFEST_DIGEST: built.manifestDigest,
      OCI_TAG_NAME: 'v1',
      OCI_BLOB_DIGEST: built.layerDigests[0] ?? '',
    });
    assert.equal(result.failed, 0, `failed specs:\n${result.failures.join('\n')}\n${result.summary}`);
    // Every spec of the pull workflow given existing content; the other workflows push, and are not enabled here.
    assert.equal(result.passed, 14, result.summary);
  });
});

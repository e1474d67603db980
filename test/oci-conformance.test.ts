// The OCI Distribution Specification conformance suite v1.1.1 (../shared/oci-conformance, built from its offline
// source bundle with Debian's Go) against regmirror, every workflow (pull, push, content discovery with referrers,
// content management, automatic cross-repository mount):
// - on a plain instance (no upstream: every repository is hosted);
// - on a hosted namespace of an instance that also mirrors distribution 2.8.2;
// - on a plain instance with its content in S3 (Swift's s3api) and its records in PostgreSQL;
// - and the pull workflow through the mirror, with distribution 2.8.2 as the upstream holding the content.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDistribution, type Distribution } from './support/distribution.js';
import { buildImageLayout, pushLayout, type BuiltLayout } from './support/images.js';
import { buildConformanceSuite, runConformanceSuite, type ConformanceResult } from './support/oci-conformance.js';
import { startPostgres, type Postgres } from './support/postgres.js';
import { startRegmirror, type Regmirror } from './support/regmirror.js';
import { s3StorageEnvironment, startSwift, type Swift } from './support/swift.js';
import { makeTempDir, removeDir } from './support/temp.js';

/** Specs of v1.1.1 that run with every workflow on and automatic mounts expected (79 in all). */
const ALL_WORKFLOWS_RUN = 75;
/** Skipped by the suite itself in that set-up: a spec for given content, one for a registry without automatic mounts, two that run only after a 202 or without push. */
const ALL_WORKFLOWS_SKIPPED = 4;

function assertAllPass(result: ConformanceResult, passed: number, skipped?: number): void {
  assert.equal(result.failed, 0, `failed specs:\n${result.failures.join('\n')}\n${result.summary}`);
  assert.equal(result.passed, passed, result.summary);
  if (skipped !== undefined) assert.equal(result.skipped, skipped, result.summary);
}

describe('OCI conformance suite v1.1.1', () => {
  let suite: string;
  let upstream: Distribution;
  let work: string;
  let image: BuiltLayout;

  before(async () => {
    work = await makeTempDir('oci-conformance-');
    suite = await buildConformanceSuite();
    upstream = await startDistribution();
    image = await buildImageLayout(path.join(work, 'image'), 'v1', [{ layers: [{ size: 200_000, seed: 41 }, { size: 1_000, seed: 42 }] }]);
    await pushLayout(image, `127.0.0.1:${upstream.port}/conformance/app:v1`);
  });

  after(async () => {
    await upstream?.destroy();
    await removeDir(work);
  });

  const everyWorkflow = [
    { setUp: 'a plain registry (no upstream: every repository hosted)', kind: 'plain', namespace: 'conformance/plain', crossmount: 'conformance/other' },
    { setUp: 'a hosted namespace of an instance that mirrors distribution 2.8.2', kind: 'hosted', namespace: 'team/conformance', crossmount: 'team/other' },
    { setUp: 'a plain registry on S3 (Swift) and PostgreSQL', kind: 's3-postgres', namespace: 'conformance/s3', crossmount: 'conformance/s3-other' },
  ] as const;
  for (const { setUp, kind, namespace, crossmount } of everyWorkflow) {
    describe(setUp, () => {
      let registry: Regmirror;
      let swift: Swift | undefined;
      let database: Postgres | undefined;
      before(async () => {
        if (kind === 'plain') {
          registry = await startRegmirror();
        } else if (kind === 'hosted') {
          const config = path.join(work, 'hosted.yaml');
          await writeFile(config, 'hosted: ["team/**"]\n');
          registry = await startRegmirror({ upstreams: [upstream.url], configFile: config });
        } else {
          swift = await startSwift();
          await swift.createBucket('conformance');
          database = await startPostgres();
          const schema = await database.schema();
          registry = await startRegmirror({ env: { ...s3StorageEnvironment(swift, 'conformance', 'hosted/'), REGMIRROR_METADATA_DRIVER: 'postgres', REGMIRROR_METADATA_URL: schema.url } });
        }
      });
      after(async () => {
        await registry?.destroy();
        await swift?.destroy();
        await database?.stop();
      });

      it(`passes every workflow under ${namespace}, automatic mounts included`, async () => {
        const result = await runConformanceSuite(suite, { OCI_ROOT_URL: registry.url, OCI_NAMESPACE: namespace, OCI_CROSSMOUNT_NAMESPACE: crossmount, OCI_AUTOMATIC_CROSSMOUNT: '1' });
        assertAllPass(result, ALL_WORKFLOWS_RUN, ALL_WORKFLOWS_SKIPPED);
      });

      if (kind === 'hosted') {
        it('refuses a push outside the hosted namespace, in the spec’s error shape', async () => {
          const response = await fetch(`${registry.url}/v2/conformance/app/blobs/uploads/`, { method: 'POST' });
          assert.equal(response.status, 405);
          const body = (await response.json()) as { errors: Array<{ code: string }> };
          assert.equal(body.errors[0]?.code, 'UNSUPPORTED');
        });
      }
    });
  }

  describe('the pull workflow through the mirror', () => {
    let mirror: Regmirror;
    before(async () => {
      mirror = await startRegmirror({ upstreams: [upstream.url] });
    });
    after(async () => {
      await mirror?.destroy();
    });

    it('passes, distribution 2.8.2 upstream', async () => {
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
      // Every spec of the pull workflow given existing content; the other workflows push, and are not enabled here.
      assertAllPass(result, 14);
    });
  });
});

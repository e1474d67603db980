// Cluster mode (docs/cluster.md) for integration tests: one PostgreSQL server, one Swift bucket, a secret file the
// nodes share and distribution 2.8.2 as an upstream; and nodes on them, each with the s3 store under a prefix, the
// metadata in a PostgreSQL schema, and an advertise URL naming the port chosen for it beforehand.

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startDistribution, type Distribution } from './distribution.js';
import { freePort } from './ports.js';
import { startPostgres, type Postgres, type PostgresSchema } from './postgres.js';
import { startRegmirror, type Regmirror } from './regmirror.js';
import { s3StorageEnvironment, startSwift, type Swift } from './swift.js';
import { makeTempDir, removeDir } from './temp.js';

export interface ClusterShared {
  swift: Swift;
  bucket: string;
  /** The file holding the secret the nodes share. */
  secretFile: string;
}

/** The REGMIRROR_* variables of a node on prefix and schema, advertising advertise (GC off unless extra sets it). */
export function clusterNodeEnvironment(shared: ClusterShared, prefix: string, schema: PostgresSchema, advertise: string): NodeJS.ProcessEnv {
  return {
    ...s3StorageEnvironment(shared.swift, shared.bucket, prefix),
    REGMIRROR_METADATA_DRIVER: 'postgres',
    REGMIRROR_METADATA_URL: schema.url,
    REGMIRROR_CLUSTER_ADVERTISE: advertise,
    REGMIRROR_CLUSTER_SECRET_FILE: shared.secretFile,
    REGMIRROR_GC_INTERVAL: '0',
  };
}

/** A node of the cluster on a port chosen first (its advertise URL names it); extra variables override the defaults. */
export async function startClusterNode(shared: ClusterShared, upstreams: string[], prefix: string, schema: PostgresSchema, extra: NodeJS.ProcessEnv = {}): Promise<Regmirror> {
  const port = await freePort();
  return startRegmirror({ upstreams, port, env: { ...clusterNodeEnvironment(shared, prefix, schema, `http://127.0.0.1:${port}`), ...extra } });
}

export interface ClusterKit extends ClusterShared {
  /** A temporary directory for the test's files (the secret file is in it). */
  work: string;
  database: Postgres;
  upstream: Distribution;
  /** Stops what it started and removes work. */
  destroy(): Promise<void>;
}

/** PostgreSQL, Swift with the bucket, distribution and the secret file (secret, a line), for a test file's nodes. */
export async function startClusterKit(workPrefix: string, secret: string, bucket = 'regmirror'): Promise<ClusterKit> {
  const work = await makeTempDir(workPrefix);
  const secretFile = path.join(work, 'secret');
  await writeFile(secretFile, `${secret}\n`);
  const started: { database?: Postgres; swift?: Swift; upstream?: Distribution } = {};
  const destroy = async (): Promise<void> => {
    await started.upstream?.destroy();
    await started.swift?.destroy();
    await started.database?.stop();
    await removeDir(work);
  };
  try {
    const database = (started.database = await startPostgres());
    const swift = (started.swift = await startSwift());
    await swift.createBucket(bucket);
    const upstream = (started.upstream = await startDistribution());
    return { work, secretFile, bucket, database, swift, upstream, destroy };
  } catch (error) {
    await destroy();
    throw error;
  }
}

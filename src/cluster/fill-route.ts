// The internal endpoint through which the other nodes follow this node's fills:
// GET /_regmirror/cluster/fills/<digest> with `Authorization: Bearer <cluster secret>` streams the fill in progress
// from byte 0, its last byte held back until verified, and cut if the fill fails (BlobFill's reader). 404 when this
// node runs no fill of that digest (it committed meanwhile, or never ran): the asking node looks in the store again.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { isDigest, type Digest } from '../oci/digest.js';

export const CLUSTER_FILLS_PATH = '/_regmirror/cluster/fills/';

export interface LocalFillSource {
  /** A reader of this node's fill of digest from byte 0, or undefined when none is running. */
  followLocalFill(digest: Digest): Promise<{ size: number | undefined; body: Readable } | undefined>;
}

export function clusterAuthorization(secret: string): string {
  return `Bearer ${secret}`;
}

/** Compares in constant time (over hashes, so the lengths of the two do not show either). */
function sameSecret(given: string, secret: string): boolean {
  const digestOf = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digestOf(given), digestOf(secret));
}

export function registerClusterRoutes(app: FastifyInstance, secret: string, fills: LocalFillSource): void {
  app.get<{ Params: { digest: string } }>(`${CLUSTER_FILLS_PATH}:digest`, async (request, reply) => {
    const authorization = request.headers.authorization;
    if (authorization === undefined) return reply.code(401).header('www-authenticate', 'Bearer realm="regmirror-cluster"').send({ error: 'the cluster secret is required' });
    if (!sameSecret(authorization, clusterAuthorization(secret))) return reply.code(403).send({ error: 'wrong cluster secret' });
    const digest = request.params.digest;
    if (!isDigest(digest)) return reply.code(400).send({ error: 'not a digest' });
    const fill = await fills.followLocalFill(digest);
    if (fill === undefined) return reply.code(404).send({ error: 'no fill of this digest in progress here' });
    reply.header('content-type', 'application/octet-stream').header('docker-content-digest', digest);
    if (fill.size !== undefined) reply.header('content-length', String(fill.size));
    return reply.send(fill.body);
  });
}

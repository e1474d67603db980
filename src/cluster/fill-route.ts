// The internal endpoint through which the other nodes follow this node's fills:
// GET /_regmirror/cluster/fills/<digest> with `Authorization: Bearer <cluster secret>` streams the fill in progress
// from byte 0, its last byte held back until verified, and cut if the fill fails (BlobFill's reader). 404 when this
// node runs no fill of that digest (it committed meanwhile, or never ran): the asking node looks in the store again.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isDigest, type Digest } from '../oci/digest.js';

/** Every internal endpoint of the cluster is under this path, and checks the nodes' secret, not a client's login. */
export const CLUSTER_PATH = '/_regmirror/cluster/';
export const CLUSTER_FILLS_PATH = `${CLUSTER_PATH}fills/`;

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

/** Whether the request carries the cluster's secret; otherwise it is answered 401 (none) or 403 (another). */
export function admitNode(request: FastifyRequest, reply: FastifyReply, secret: string): boolean {
  const authorization = request.headers.authorization;
  if (authorization === undefined) {
    void reply.code(401).header('www-authenticate', 'Bearer realm="regmirror-cluster"').send({ error: 'the cluster secret is required' });
    return false;
  }
  if (!sameSecret(authorization, clusterAuthorization(secret))) {
    void reply.code(403).send({ error: 'wrong cluster secret' });
    return false;
  }
  return true;
}

export function registerClusterRoutes(app: FastifyInstance, secret: string, fills: LocalFillSource): void {
  app.get<{ Params: { digest: string } }>(`${CLUSTER_FILLS_PATH}:digest`, async (request, reply) => {
    if (!admitNode(request, reply, secret)) return reply;
    const digest = request.params.digest;
    if (!isDigest(digest)) return reply.code(400).send({ error: 'not a digest' });
    const fill = await fills.followLocalFill(digest);
    if (fill === undefined) return reply.code(404).send({ error: 'no fill of this digest in progress here' });
    reply.header('content-type', 'application/octet-stream').header('docker-content-digest', digest);
    if (fill.size !== undefined) reply.header('content-length', String(fill.size));
    return reply.send(fill.body);
  });
}

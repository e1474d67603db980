// The internal endpoint through which the other nodes forward requests for this node's upload sessions
// (cluster-uploads.ts): `/_regmirror/cluster/uploads/<id>?registry=…&name=…` with `Authorization: Bearer <cluster
// secret>`. GET answers the session's status, PATCH appends the body (a `Content-Range` as the client sent it), PUT
// (`&digest=`) completes it, DELETE cancels it: each as UploadSessions does for this node's own clients, the status as
// JSON, errors in the registry's own format with their headers (the asking node passes them on).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../registry/errors.js';
import type { UploadSessions } from '../registry/uploads.js';
import { bodyChunks, streamBodiesOf } from '../http/request-body.js';
import { readContentRange, requireDigestParameter } from '../http/v2-routes.js';
import { admitNode } from './fill-route.js';

export const CLUSTER_UPLOADS_PATH = '/_regmirror/cluster/uploads/';

export function registerClusterUploadRoutes(app: FastifyInstance, secret: string, uploads: UploadSessions): void {
  const handler = async (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply): Promise<FastifyReply> => {
    if (!admitNode(request, reply, secret)) return reply;
    const query = new URLSearchParams(request.url.split('?')[1] ?? '');
    const registry = query.get('registry');
    const name = query.get('name');
    if (registry === null || name === null) throw new RegistryError('NAME_INVALID', { message: 'registry and name are required' });
    const repository = { registry, name };
    const id = request.params.id;
    switch (request.method) {
      case 'GET':
        return reply.send(await uploads.status(id, repository));
      case 'PATCH':
        return reply.send(await uploads.append(id, repository, bodyChunks(request.raw), readContentRange(request)));
      case 'PUT':
        await uploads.complete(id, repository, requireDigestParameter(query), bodyChunks(request.raw), readContentRange(request));
        return reply.code(204).send();
      default:
        await uploads.cancel(id, repository);
        return reply.code(204).send();
    }
  };
  // An encapsulated scope: PATCH and PUT stream their bodies from request.raw.
  void app.register((scope, _options, done) => {
    streamBodiesOf(scope, ['PUT', 'PATCH']);
    scope.route({ method: ['GET', 'PATCH', 'PUT', 'DELETE'], url: `${CLUSTER_UPLOADS_PATH}:id`, handler });
    done();
  });
}

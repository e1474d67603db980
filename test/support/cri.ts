// A client of the CRI image service (runtime.v1.ImageService) on containerd's gRPC socket, making the calls kubelet
// makes to pull a pod's image: PullImage with the AuthConfig it built from the pod's imagePullSecrets, and ImageStatus.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO = path.join(path.dirname(fileURLToPath(import.meta.url)), 'cri-image-service.proto');
const SERVICE = 'runtime.v1.ImageService';

/** runtime.v1.AuthConfig; fields left out are sent empty, as kubelet does. */
export interface CriAuthConfig {
  username?: string;
  password?: string;
  /** base64(user:password), a docker config's `auth`. */
  auth?: string;
  server_address?: string;
  identity_token?: string;
  registry_token?: string;
}

/** runtime.v1.Image (the fields the proto keeps). */
export interface CriImage {
  /** The image's config digest. */
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  /** uint64, as a decimal string. */
  size: string;
}

export interface CriImageService {
  /** PullImage; resolves with image_ref (containerd: the config digest), rejects with containerd's own message. */
  pullImage(image: string, auth?: CriAuthConfig, timeoutMs?: number): Promise<string>;
  /** ImageStatus; undefined when the CRI plugin does not hold the image. */
  imageStatus(image: string): Promise<CriImage | undefined>;
  close(): void;
}

type Method = protoLoader.MethodDefinition<object, object>;

/** Connects to the CRI plugin on socket and waits (up to readyTimeoutMs) until it answers: it starts after containerd says it booted. */
export async function connectCriImageService(socket: string, readyTimeoutMs = 30_000): Promise<CriImageService> {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, defaults: true });
  const service = definition[SERVICE] as Record<'PullImage' | 'ImageStatus', Method> | undefined;
  if (service === undefined) throw new Error(`${PROTO} defines no ${SERVICE}`);
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());

  const call = (method: Method, request: object, timeoutMs: number): Promise<object> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, { deadline: Date.now() + timeoutMs }, (error, response) => {
        if (error !== null) reject(new Error(`${method.path}: ${error.details}`, { cause: error }));
        else if (response === undefined) reject(new Error(`${method.path}: no response`));
        else resolve(response);
      });
    });

  const imageStatus = async (image: string): Promise<CriImage | undefined> => {
    const response = (await call(service.ImageStatus, { image: { image } }, 30_000)) as { image: CriImage | null };
    return response.image ?? undefined;
  };

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    try {
      // Any answer will do: an image nobody has is a cheap question.
      await imageStatus('regmirror.invalid/ready:probe');
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        client.close();
        throw new Error(`the CRI image service on ${socket} did not answer within ${readyTimeoutMs} ms`, { cause: error });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  return {
    pullImage: async (image, auth, timeoutMs = 120_000) => {
      // An absent auth is a request without AuthConfig (kubelet when no imagePullSecret matches), not an empty one.
      const response = (await call(service.PullImage, { image: { image }, ...(auth === undefined ? {} : { auth }) }, timeoutMs)) as { image_ref: string };
      return response.image_ref;
    },
    imageStatus,
    close: () => client.close(),
  };
}

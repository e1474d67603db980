// The one place that names storage keys: content by digest, spread over 256 folders; and the v1 API's
// files, laid out exactly as docker-registry 0.9's local storage so an old storage_path is served in place.
// No other code builds a storage key or path by hand.

import { digestHex, type Digest } from '../oci/digest.js';

/** The folder that holds all content by digest. */
export const CONTENT_FOLDER = 'blobs';

export function contentKey(digest: Digest): string {
  const hex = digestHex(digest);
  return `${CONTENT_FOLDER}/sha256/${hex.slice(0, 2)}/${hex}`;
}

/** The digest a key listed under CONTENT_FOLDER stores; undefined for a file that has no business there. */
export function digestOfContentKey(key: string): Digest | undefined {
  const match = /^blobs\/sha256\/([a-f0-9]{2})\/(\1[a-f0-9]{62})$/.exec(key);
  return match ? `sha256:${match[2] ?? ''}` : undefined;
}

/** Folder of temporaries, on the same filesystem as content so commit is a rename. */
export const TEMPORARY_FOLDER = 'tmp';

/** The files docker-registry 0.9 keeps per image under images/<id>/. */
export type V1ImageFile = 'json' | 'layer' | 'ancestry' | '_checksum' | '_inprogress' | '_files';

/** A v1 repository: `library` for one-component names. */
export interface V1RepositoryName {
  namespace: string;
  repository: string;
}

/**
 * The v1 keys under a prefix of the data directory ('' for a docker-registry 0.9 storage_path itself).
 * Ids, names and tags must have passed the v1 grammar (src/v1/grammar.ts): they never hold '/' or '..'.
 */
export class V1Layout {
  private readonly root: string;

  constructor(prefix: string) {
    this.root = prefix === '' ? '' : `${prefix}/`;
  }

  imageKey(id: string, file: V1ImageFile): string {
    return `${this.imagesFolder}/${id}/${file}`;
  }

  /** The folder that holds every image's files. */
  get imagesFolder(): string {
    return `${this.root}images`;
  }

  /** The image and file a key listed under imagesFolder is. */
  imageOfKey(key: string): { id: string; file: string } | undefined {
    const prefix = `${this.imagesFolder}/`;
    if (!key.startsWith(prefix)) return undefined;
    const [id, file, extra] = key.slice(prefix.length).split('/');
    if (id === undefined || file === undefined || extra !== undefined) return undefined;
    return { id, file };
  }

  /** The folder that holds every repository's files. */
  get repositoriesFolder(): string {
    return `${this.root}repositories`;
  }

  repositoryFolder(name: V1RepositoryName): string {
    return `${this.repositoriesFolder}/${name.namespace}/${name.repository}`;
  }

  tagKey(name: V1RepositoryName, tag: string): string {
    return `${this.repositoryFolder(name)}/tag_${tag}`;
  }

  /** A tag's name from a key listed under repositoryFolder, or undefined for other files. */
  tagOfKey(name: V1RepositoryName, key: string): string | undefined {
    const prefix = `${this.repositoryFolder(name)}/tag_`;
    if (!key.startsWith(prefix)) return undefined;
    const tag = key.slice(prefix.length);
    return tag.includes('/') ? undefined : tag;
  }

  /** The repository a key listed under repositoriesFolder belongs to. */
  repositoryOfKey(key: string): V1RepositoryName | undefined {
    const prefix = `${this.repositoriesFolder}/`;
    if (!key.startsWith(prefix)) return undefined;
    const [namespace, repository, file] = key.slice(prefix.length).split('/');
    if (namespace === undefined || repository === undefined || file === undefined) return undefined;
    return { namespace, repository };
  }

  tagJsonKey(name: V1RepositoryName, tag: string): string {
    return `${this.repositoryFolder(name)}/tag${tag}_json`;
  }

  repositoryJsonKey(name: V1RepositoryName): string {
    return `${this.repositoryFolder(name)}/json`;
  }

  indexImagesKey(name: V1RepositoryName): string {
    return `${this.repositoryFolder(name)}/_index_images`;
  }

  privateFlagKey(name: V1RepositoryName): string {
    return `${this.repositoryFolder(name)}/_private`;
  }
}

// The grammar of repository names, tags and references (OCI distribution spec),
// and Docker Hub's `library/` convention for one-component names.

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_GRAMMAR = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** distribution's limit on a repository name, in characters. */
export const MAX_NAME_LENGTH = 255;

export function isValidRepositoryName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_GRAMMAR.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_GRAMMAR.test(tag);
}

/** Docker Hub keeps official images under `library/`; clients may omit it. */
export function dockerHubName(name: string): string {
  return name.includes('/') ? name : `library/${name}`;
}

export const DOCKER_HUB_REGISTRY = 'docker.io';

export function isDockerHub(registry: string): boolean {
  return registry === DOCKER_HUB_REGISTRY || registry === 'registry-1.docker.io' || registry === 'index.docker.io';
}

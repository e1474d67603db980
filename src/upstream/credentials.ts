// Credentials the mirror presents to an upstream (never a client's): a user name and a password or token.

export interface Credentials {
  username: string;
  password: string;
}

/** The Basic Authorization header for credentials. */
export function basicAuthorization(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

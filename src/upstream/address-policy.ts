// Where an upstream may send the mirror: a redirect or a token realm that points at a loopback, link-local or
// private address is followed only to the upstream's own host (any port) or to a host its configuration trusts.
// Enforced where connections are made (the resolved address is checked and then used), so neither a redirect
// chain nor a name that resolves differently the second time can reach the inside of the network.

import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { buildConnector } from 'undici';

/** Addresses a host on the public internet never has: loopback, private, link-local, shared, unspecified, multicast. */
const INTERNAL = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  INTERNAL.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  INTERNAL.addSubnet(network, prefix, 'ipv6');
}

/** Whether an IP address is on an internal network (IPv4-mapped IPv6 addresses are judged as IPv4). */
export function isInternalAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return INTERNAL.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** A connection the policy refused; the message completes "upstream X …" and names no address. */
export class AddressRefusedError extends Error {
  override readonly name = 'AddressRefusedError';
  constructor(readonly host: string) {
    super('pointed the mirror at a host on an internal network that is neither the upstream itself nor one of its trustedHosts');
  }
}

export class AddressPolicy {
  private readonly trusted: ReadonlySet<string>;

  /** ownHost: the upstream's host name; trustedHosts: more host names (or addresses) it may send the mirror to. */
  constructor(ownHost: string, trustedHosts: readonly string[]) {
    this.trusted = new Set([ownHost, ...trustedHosts].map(normaliseHost));
  }

  trusts(host: string): boolean {
    return this.trusted.has(normaliseHost(host));
  }

  /**
   * The address to connect to for host: as it is for a trusted host (the resolver and the connection decide),
   * otherwise one checked not to be internal. Throws AddressRefusedError.
   */
  async resolve(host: string): Promise<string> {
    const bare = normaliseHost(host);
    if (this.trusted.has(bare)) return bare;
    if (isIP(bare) !== 0) {
      if (isInternalAddress(bare)) throw new AddressRefusedError(bare);
      return bare;
    }
    const addresses = await lookup(bare, { all: true, verbatim: true });
    // Refused when any address is internal: the connection could land on any of them.
    if (addresses.length === 0 || addresses.some((entry) => isInternalAddress(entry.address))) throw new AddressRefusedError(bare);
    return addresses[0]?.address ?? bare;
  }
}

/**
 * An undici connector that asks the policy first and connects to the address it checked, keeping the host name
 * for TLS (SNI and certificate checks).
 */
export function guardedConnector(policy: AddressPolicy, connectTimeoutMs: number): buildConnector.connector {
  const connect = buildConnector({ timeout: connectTimeoutMs });
  return (options, callback) => {
    policy.resolve(options.hostname).then(
      (address) => {
        const servername = options.servername ?? (isIP(options.hostname) === 0 ? options.hostname : undefined);
        connect({ ...options, hostname: address, ...(servername === undefined ? {} : { servername }) }, callback);
      },
      (error: unknown) => callback(error as Error, null),
    );
  };
}

function normaliseHost(host: string): string {
  return host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
}

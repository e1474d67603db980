// A throwaway certificate authority for tests, made with openssl in a temporary directory: server certificates
// for 127.0.0.1 and localhost, and client certificates for mutual TLS. EC P-256 keys: quick to make.
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireCommand, runCommand } from './commands.js';
import { makeTempDir, removeDir } from './temp.js';

export interface IssuedCertificate {
  certificateFile: string;
  keyFile: string;
  certificate: string;
  key: string;
  /** As node reports it (getPeerCertificate().serialNumber, X509Certificate.serialNumber). */
  serialNumber: string;
}

export interface TestCa {
  dir: string;
  /** The CA certificate (PEM), what clients trust. */
  caFile: string;
  ca: string;
  /** A certificate for a server at 127.0.0.1, localhost and dnsNames (names are the files' base names, unique per CA). */
  issueServer(name: string, dnsNames?: string[]): Promise<IssuedCertificate>;
  /** A certificate for a client (extendedKeyUsage clientAuth). */
  issueClient(name: string): Promise<IssuedCertificate>;
  /** A certificate for a server at 127.0.0.1 and localhost that is a client too (a cluster's node under mutual TLS). */
  issueServerAndClient(name: string): Promise<IssuedCertificate>;
  destroy(): Promise<void>;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makeTestCa(commonName = 'regmirror test CA'): Promise<TestCa> {
  const openssl = await requireCommand('openssl');
  const dir = await makeTempDir('regmirror-ca');
  const file = (name: string): string => path.join(dir, name);
  const run = (args: string[]): Promise<unknown> => runCommand(openssl, args, { cwd: dir, timeoutMs: 30_000 });
  await run(['req', '-x509', ...EC_KEY, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '2', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const ca = await readFile(file('ca.crt'), 'utf8');

  const issue = async (name: string, extensions: string[]): Promise<IssuedCertificate> => {
    const keyFile = file(`${name}.key`);
    const certificateFile = file(`${name}.crt`);
    await writeFile(file(`${name}.ext`), [...extensions, 'basicConstraints=CA:FALSE', ''].join('\n'));
    await run(['req', '-new', ...EC_KEY, '-keyout', keyFile, '-out', file(`${name}.csr`), '-subj', `/CN=${name}`]);
    // A random serial (positive: top bit clear) tells every certificate apart; no serial file to share between issues.
    const serial = randomBytes(16);
    serial[0] = (serial[0] ?? 0) & 0x7f;
    await run(['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-set_serial', `0x${serial.toString('hex')}`, '-days', '2',
      '-extfile', file(`${name}.ext`), '-out', certificateFile]);
    const certificate = await readFile(certificateFile, 'utf8');
    return { certificateFile, keyFile, certificate, key: await readFile(keyFile, 'utf8'), serialNumber: new X509Certificate(certificate).serialNumber };
  };
  return {
    dir,
    caFile: file('ca.crt'),
    ca,
    issueServer: (name, dnsNames = []) => issue(name, [`subjectAltName=${['IP:127.0.0.1', 'DNS:localhost', ...dnsNames.map((dns) => `DNS:${dns}`)].join(',')}`, 'extendedKeyUsage=serverAuth', 'keyUsage=critical,digitalSignature']),
    issueClient: (name) => issue(name, ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']),
    issueServerAndClient: (name) => issue(name, ['subjectAltName=IP:127.0.0.1,DNS:localhost', 'extendedKeyUsage=serverAuth,clientAuth', 'keyUsage=critical,digitalSignature']),
    destroy: () => removeDir(dir),
  };
}

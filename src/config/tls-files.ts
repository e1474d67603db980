// Reads and checks the files of `tls.certificate`, `tls.key` and `tls.clientCA`: PEM that parses, a key that matches the
// certificate. A failure is a ConfigError naming the key: at start-up it stops the process, on a reload it is logged.

import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ConfigError } from './config-error.js';

/** The configured paths (PEM files). */
export interface TlsFiles {
  /** The server's certificate, intermediates after it. */
  certificate: string;
  key: string;
  /** Mutual TLS: the CAs a client's certificate must chain to; undefined: clients present none. */
  clientCA: string | undefined;
}

/** What the files held, checked. */
export interface TlsMaterial {
  certificate: Buffer;
  key: Buffer;
  clientCA: Buffer | undefined;
  /** The server certificate's facts worth a log line (never the key). */
  summary: { subject: string; serialNumber: string; fingerprint256: string; validTo: string; expired: boolean; clientCAs: number };
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** Reads the files and checks them; throws a ConfigError naming the key at fault. */
export function readTlsFiles(files: TlsFiles, now: number = Date.now()): TlsMaterial {
  const certificate = readPem(files.certificate, 'tls.certificate');
  const key = readPem(files.key, 'tls.key');
  const clientCA = files.clientCA === undefined ? undefined : readPem(files.clientCA, 'tls.clientCA');
  const leaf = parseCertificate(certificate, 'tls.certificate', files.certificate);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new ConfigError(`invalid configuration: tls.key: ${files.key} holds no unencrypted PEM private key`, { cause: error });
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new ConfigError(`invalid configuration: tls.key: ${files.key} does not match the certificate in ${files.certificate}`);
  }
  // node:tls ignores what it cannot parse in a CA bundle: a bundle that trusts nothing is refused here instead.
  const clientCAs = clientCA === undefined ? [] : (clientCA.toString('latin1').match(PEM_CERTIFICATE) ?? []);
  if (clientCA !== undefined && clientCAs.length === 0) throw new ConfigError(`invalid configuration: tls.clientCA: ${files.clientCA} holds no PEM certificate`);
  for (const pem of clientCAs) parseCertificate(Buffer.from(pem, 'latin1'), 'tls.clientCA', files.clientCA ?? '');
  // The rest of a certificate chain, and whatever else OpenSSL itself refuses.
  try {
    createSecureContext({ cert: certificate, key, ca: clientCA });
  } catch (error) {
    throw new ConfigError(`invalid configuration: tls.certificate: ${files.certificate} cannot be used with ${files.key}: ${(error as Error).message}`, { cause: error });
  }
  return {
    certificate,
    key,
    clientCA,
    summary: {
      subject: leaf.subject,
      serialNumber: leaf.serialNumber,
      fingerprint256: leaf.fingerprint256,
      validTo: leaf.validTo,
      expired: Date.parse(leaf.validTo) < now,
      clientCAs: clientCAs.length,
    },
  };
}

function readPem(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${key}: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
}

function parseCertificate(pem: Buffer, key: string, file: string): X509Certificate {
  // X509Certificate also takes DER, which node:tls does not.
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`invalid configuration: ${key}: ${file} holds no PEM certificate`);
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${key}: ${file} holds no valid PEM certificate: ${(error as Error).message}`, { cause: error });
  }
}

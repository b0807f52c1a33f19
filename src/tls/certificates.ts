// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs the Reflect
// metadata API before the library loads.
import 'reflect-metadata';
import { isIP } from 'node:net';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/**
 * ECDSA P-256 for the authority and every server: a key is made in about a millisecond
 * (an RSA 2048 key takes ~100 ms), and every TLS client Postgres has (libpq, node, JDBC,
 * Go's pgx) accepts it.
 */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** A certificate and its private key (PKCS#8), both PEM. */
export interface KeyedCertificate {
  certificate: string;
  key: string;
}

const DAY_MS = 86_400_000;
/** The authority outlives many server certificates; replacing it means every customer fetches the new one. */
export const AUTHORITY_DAYS = 3650;
/** Certificates start a little in the past, so a client whose clock is behind ours still accepts them. */
const BACKDATE_MS = 5 * 60_000;

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/** 16 random bytes, the top bit clear so the DER integer stays positive. */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0]! &= 0x7f;
  return bytes.toString('hex');
}

/** A deployment's own authority; its name carries a random tag so two deployments' CAs are told apart in a trust store. */
export async function createAuthority(now = new Date()): Promise<KeyedCertificate> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=pgfleet CA ${randomBytes(4).toString('hex')}, O=pgfleet`,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + AUTHORITY_DAYS * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificate: cert.toString('pem'), key: await keyPem(keys.privateKey) };
}

export interface ServerCertificateRequest {
  /** Names the server in the subject, for whoever reads the certificate. */
  name: string;
  /** Every address clients use to reach the server: IPs and DNS names. */
  hosts: string[];
  validityMs: number;
}

/** A fresh key and a certificate for it signed by the authority, for the hosts given. */
export async function issueServerCertificate(
  authority: KeyedCertificate,
  req: ServerCertificateRequest,
  now = new Date(),
): Promise<KeyedCertificate> {
  if (req.hosts.length === 0) throw new Error('a server certificate names at least one host');
  const ca = new x509.X509Certificate(authority.certificate);
  const signingKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(authority.key), ALGORITHM, false, ['sign']);
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${req.name.replace(/[,+="\\<>;#]/g, '')}, O=pgfleet`,
    issuer: ca.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + req.validityMs),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        [...new Set(req.hosts)].map((h): x509.JsonGeneralName => ({ type: isIP(h) ? 'ip' : 'dns', value: h })),
      ),
      await x509.AuthorityKeyIdentifierExtension.create(await ca.publicKey.export()),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificate: cert.toString('pem'), key: await keyPem(keys.privateKey) };
}

/** When a PEM certificate stops being valid. */
export function certificateExpiry(pem: string): Date {
  return new Date(new X509Certificate(pem).validTo);
}

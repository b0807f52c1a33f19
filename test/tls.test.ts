import { createPrivateKey, X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';
import { certificateExpiry, createAuthority, issueServerCertificate } from '../src/tls/certificates.ts';
import { certificateHosts } from '../src/tls/postgres.ts';
import { renewalDue } from '../src/servers/certificates.ts';

describe('server certificates', () => {
  it('are signed by the authority, name every address clients use, and serve only as servers', async () => {
    const ca = await createAuthority();
    const issued = await issueServerCertificate(ca, {
      name: 'pgfleet server s1',
      hosts: certificateHosts('10.0.0.7'),
      validityMs: 86_400_000,
    });
    const cert = new X509Certificate(issued.certificate);
    const authority = new X509Certificate(ca.certificate);
    expect(cert.verify(authority.publicKey)).toBe(true);
    expect(cert.checkIssued(authority)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.checkIP('10.0.0.7')).toBe('10.0.0.7');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('10.0.0.8')).toBeUndefined();
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    // The key is the certificate's own.
    expect(cert.checkPrivateKey(createPrivateKey(issued.key))).toBe(true);
    // Valid a day from now, give or take the few minutes it is backdated.
    expect(Math.abs(certificateExpiry(issued.certificate).getTime() - Date.now() - 86_400_000)).toBeLessThan(5_000);
  });

  it('each issue is a new key and serial', async () => {
    const ca = await createAuthority();
    const req = { name: 's', hosts: ['127.0.0.1'], validityMs: 60_000 };
    const [a, b] = await Promise.all([issueServerCertificate(ca, req), issueServerCertificate(ca, req)]);
    expect(a.key).not.toBe(b.key);
    expect(new X509Certificate(a.certificate).serialNumber).not.toBe(new X509Certificate(b.certificate).serialNumber);
  });

  it('are due for renewal within the renew window, and not before', () => {
    const now = new Date('2026-01-01T00:00:00Z');
    expect(renewalDue(new Date('2026-01-30T00:00:00Z'), 30, now)).toBe(true);
    expect(renewalDue(new Date('2026-02-01T00:00:01Z'), 30, now)).toBe(false);
    expect(renewalDue(new Date('2025-12-31T00:00:00Z'), 0, now)).toBe(true);
  });
});

describe('TLS configuration', () => {
  it('defaults to 90-day certificates renewed 30 days ahead, and takes both from the environment', () => {
    expect(loadConfig({}).tls).toEqual({ certDays: 90, renewDays: 30 });
    expect(loadConfig({ PGFLEET_TLS_CERT_DAYS: '7', PGFLEET_TLS_RENEW_DAYS: '2' }).tls).toEqual({ certDays: 7, renewDays: 2 });
    expect(loadConfig({ PGFLEET_TLS_CERT_DAYS: '10' }).tls).toEqual({ certDays: 10, renewDays: 9 });
  });

  it('refuses a renew window as long as the certificate, which would renew it as soon as it is made', () => {
    expect(() => loadConfig({ PGFLEET_TLS_CERT_DAYS: '30', PGFLEET_TLS_RENEW_DAYS: '30' })).toThrow(
      /PGFLEET_TLS_RENEW_DAYS \(30\) must be less than PGFLEET_TLS_CERT_DAYS \(30\)/,
    );
    expect(() => loadConfig({ PGFLEET_TLS_CERT_DAYS: '0' })).toThrow(/PGFLEET_TLS_CERT_DAYS must be a whole number from 1 to 825/);
  });
});

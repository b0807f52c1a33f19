import { X509Certificate } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { escapeHtml } from './html.ts';
import { requireOperator } from './auth.ts';
import type { WebOptions } from './options.ts';

/**
 * pgfleet's CA certificate, which customers need to check their server's certificate
 * (`sslmode=verify-full`). It is public, as postgresql.org's root is: anyone may fetch it,
 * and holding it lets nobody in anywhere.
 */
export function tlsRoutes(opts: Pick<WebOptions, 'caCertificate' | 'operatorToken'>): FastifyPluginAsync {
  return async (app) => {
    app.get('/ca.pem', async (_, reply) =>
      reply.type('application/x-pem-file').header('content-disposition', 'inline; filename="pgfleet-ca.pem"').send(opts.caCertificate),
    );

    /** For operators: the same certificate, with what a reader checks it by. */
    app.get('/api/ca', { onRequest: requireOperator(opts.operatorToken) }, async () => {
      const cert = new X509Certificate(opts.caCertificate);
      return {
        subject: cert.subject,
        notBefore: new Date(cert.validFrom).toISOString(),
        notAfter: new Date(cert.validTo).toISOString(),
        fingerprint256: cert.fingerprint256,
        certificate: opts.caCertificate,
      };
    });
  };
}

/** The SSO page's section: where the CA is and how to connect checking the server's certificate. */
export function renderTlsSection(caCertificate: string, urlVar: string): string {
  return `<p>Connections are encrypted (TLS); your URL says <code>sslmode=require</code>. To also check that you
     reach your own server, download <a href="/ca.pem" download="pgfleet-ca.pem">pgfleet's CA certificate</a> and connect
     with <code>sslmode=verify-full</code>:</p>
     <pre class="mono">psql "$${escapeHtml(urlVar)}&amp;sslmode=verify-full&amp;sslrootcert=pgfleet-ca.pem"</pre>
     <details><summary>CA certificate</summary><pre class="mono">${escapeHtml(caCertificate)}</pre></details>`;
}

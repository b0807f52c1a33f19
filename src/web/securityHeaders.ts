import type { FastifyInstance } from 'fastify';
import { LIVE_SCRIPT_HASH } from './liveRefresh.ts';

/**
 * What every answer carries: never framed, never sniffed, never cached (pages and answers
 * hold credentials), and pages run only our own script.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `script-src '${LIVE_SCRIPT_HASH}'`,
  "style-src 'unsafe-inline'",
  "connect-src 'self'",
  "img-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export function securityHeaders(app: FastifyInstance): void {
  app.addHook('onSend', async (_, reply, payload) => {
    reply.header('x-frame-options', 'DENY').header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    if (String(reply.getHeader('content-type') ?? '').startsWith('text/html'))
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    return payload;
  });
}

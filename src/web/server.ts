import { timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { Addon } from '../config.ts';
import type { ArchiveTarget } from '../store/open.ts';
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import type { Sealer } from '../sealer.ts';
import { operatorApi } from './api.ts';
import { consoleUi, LIVE_SCRIPT_HASH } from './console.ts';
import { herokuApi } from './heroku.ts';
import { tlsRoutes } from './tls.ts';

export interface WebOptions {
  pool: Pool;
  log: Logger;
  operatorToken: string;
  providers: string[];
  sealer: Sealer;
  addon: Addon;
  metrics: Registry;
  /** The address the web process binds: beyond loopback, /metrics wants the operator token. */
  host: string;
  /** Where servers archive: the API lists backups from it. */
  archive: ArchiveTarget;
  /** pgfleet's CA certificate (PEM), handed to customers who check their server's certificate. */
  caCertificate: string;
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An error whose message tells the caller what to fix, with the status to send. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function requireOperator(token: string) {
  return async (req: FastifyRequest) => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!match?.[1] || !sameSecret(match[1], token)) {
      throw new HttpError(401, 'missing or wrong operator token: send the header "Authorization: Bearer $OPERATOR_TOKEN"');
    }
  };
}

/** 127.0.0.0/8 and ::1, also as an IPv4-mapped IPv6 address. */
export function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (/^(::ffff:)?127\./.test(address) || address === '::1');
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
}

/**
 * /metrics: open on loopback, where a local Prometheus scrapes it; anywhere else it shows
 * the fleet's shape to whoever asks, so it wants the operator token.
 */
function metricsRoute(app: FastifyInstance, registry: Registry, host: string, token: string): void {
  const onRequest = isLoopbackHost(host) ? [] : [requireOperator(token)];
  app.get('/metrics', { onRequest }, async (_, reply) => reply.type(registry.contentType).send(await registry.metrics()));
}

/** Our bodies are at most three deep; 32 leaves room and stops a stack overflow long before it. */
const MAX_JSON_DEPTH = 32;

/** Whether brackets outside strings nest deeper than `max`: one pass, no recursion. */
function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Fastify's JSON parser (which refuses `__proto__`), behind two checks of our own: a body
 * nested too deep is a 400 before anything recurses through it, and an empty body is no
 * body for a DELETE, whose callers may well send `Content-Type: application/json` with it.
 */
function jsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body as string;
    if (text.trim() === '' && req.method === 'DELETE') return done(null, undefined);
    if (nestedDeeperThan(text, MAX_JSON_DEPTH))
      return done(new HttpError(400, `the JSON is nested more than ${MAX_JSON_DEPTH} deep: send a flat object`), undefined);
    return parse(req, text, done);
  });
}

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

function securityHeaders(app: FastifyInstance): void {
  app.addHook('onSend', async (_, reply, payload) => {
    reply.header('x-frame-options', 'DENY').header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    if (String(reply.getHeader('content-type') ?? '').startsWith('text/html'))
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    return payload;
  });
}

export interface RouteEntry {
  method: string;
  url: string;
}

const ROUTES = new WeakMap<FastifyInstance, RouteEntry[]>();

/** Every route a web app serves, as Fastify registered them (the fuzz test takes them all). */
export function routesOf(app: FastifyInstance): RouteEntry[] {
  return ROUTES.get(app) ?? [];
}

export function buildWeb(opts: WebOptions): FastifyInstance {
  const app: FastifyInstance = Fastify({
    loggerInstance: opts.log.child({ process: 'web' }) as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
  });
  const routes: RouteEntry[] = [];
  ROUTES.set(app, routes);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url });
  });

  // Every error is JSON with a message for a human; our own 5xx never leak internals.
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req: FastifyRequest, reply: FastifyReply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      req.log.error({ err }, 'request failed');
      return reply.status(status).send({ error: 'internal error; the operator log has the details' });
    }
    const message =
      err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'send the body as JSON with "Content-Type: application/json"'
        : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? `the body is larger than ${64 * 1024} bytes`
          : err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
            ? 'the body is empty but Content-Type says JSON: send a JSON object'
            : err.message;
    return reply.status(status).send({ error: message });
  });
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: `no route ${req.method} ${req.url}` }));
  jsonParser(app);
  securityHeaders(app);

  app.get('/health', async () => ({ ok: true }));
  metricsRoute(app, opts.metrics, opts.host, opts.operatorToken);
  app.register(operatorApi(opts), { prefix: '/api' });
  app.register(herokuApi(opts));
  app.register(consoleUi(opts));
  app.register(tlsRoutes(opts));
  return app;
}

/** /metrics alone, for a process without `web` (METRICS_PORT). */
export function metricsServer(registry: Registry, host: string, token: string): FastifyInstance {
  const app: FastifyInstance = Fastify();
  metricsRoute(app, registry, host, token);
  return app;
}

import { timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { Addon } from '../config.ts';
import type { ArchiveTarget } from '../store/open.ts';
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import type { Sealer } from '../sealer.ts';
import { operatorApi } from './api.ts';
import { consoleUi } from './console.ts';
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
  /** Where servers archive: the API lists backups from it. */
  archive: ArchiveTarget;
  /** pgfleet's CA certificate (PEM), handed to customers who check their server's certificate. */
  caCertificate: string;
}

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

export function buildWeb(opts: WebOptions): FastifyInstance {
  const app: FastifyInstance = Fastify({ loggerInstance: opts.log.child({ process: 'web' }) as FastifyBaseLogger, bodyLimit: 64 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
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

  app.get('/health', async () => ({ ok: true }));
  app.get('/metrics', async (_, reply) => reply.type(opts.metrics.contentType).send(await opts.metrics.metrics()));
  app.register(operatorApi(opts), { prefix: '/api' });
  app.register(herokuApi(opts));
  app.register(consoleUi(opts));
  app.register(tlsRoutes(opts));
  return app;
}

/** /metrics alone, for a process without `web` (METRICS_PORT). */
export function metricsServer(registry: Registry): FastifyInstance {
  const app: FastifyInstance = Fastify();
  app.get('/metrics', async (_, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  return app;
}

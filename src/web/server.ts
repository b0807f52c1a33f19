import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { operatorApi } from './api.ts';
import { isLoopbackHost, requireOperator } from './auth.ts';
import { consoleUi } from './console.ts';
import { errorHandler, INTERNAL_ERROR } from './errors.ts';
import { herokuApi } from './heroku.ts';
import { jsonParser } from './jsonBody.ts';
import type { WebOptions } from './options.ts';
import { securityHeaders } from './securityHeaders.ts';
import { tlsRoutes } from './tls.ts';
import { schemaValidation } from './validation.ts';

/**
 * /metrics: open on loopback, where a local Prometheus scrapes it; anywhere else it shows
 * the fleet's shape to whoever asks, so it wants the operator token.
 */
function metricsRoute(app: FastifyInstance, registry: Registry, host: string, token: string): void {
  const onRequest = isLoopbackHost(host) ? [] : [requireOperator(token)];
  app.get('/metrics', { onRequest }, async (_, reply) => reply.type(registry.contentType).send(await registry.metrics()));
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

  // Every error is JSON with a message for a human; the add-on API and the pages answer in their own shapes.
  app.setErrorHandler(errorHandler(INTERNAL_ERROR.operator, (_, reply, status, message) => reply.status(status).send({ error: message })));
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: `no route ${req.method} ${req.url}` }));
  schemaValidation(app);
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

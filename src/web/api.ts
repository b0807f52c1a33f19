import type { FastifyPluginAsync } from 'fastify';
import { configVarPrefix } from '../config.ts';
import { PLANS } from '../plans.ts';
import { listDeadJobs, retryDeadJob } from '../queue/jobs.ts';
import { getResource, listResources } from '../resources.ts';
import { createServer, getServer, listServers, listTransitions, requestServerDeletion } from '../servers.ts';
import { HttpError, requireOperator, type WebOptions } from './server.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function serverId(params: unknown): string {
  const id = (params as { id: string }).id;
  if (!UUID.test(id)) throw new HttpError(404, `no server with id "${id}": ids look like 0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41`);
  return id.toLowerCase();
}

/** The operator JSON API, behind the operator token. */
export function operatorApi(opts: WebOptions): FastifyPluginAsync {
  return async (app) => {
    app.addHook('onRequest', requireOperator(opts.operatorToken));

    app.post('/servers', async (req, reply) => {
      const body = req.body ?? {};
      if (typeof body !== 'object' || Array.isArray(body)) {
        throw new HttpError(400, 'send a JSON object such as {"provider":"local"}');
      }
      const provider = (body as { provider?: unknown }).provider ?? 'local';
      if (typeof provider !== 'string' || !opts.providers.includes(provider)) {
        throw new HttpError(422, `unknown provider ${JSON.stringify(provider)}: use one of ${opts.providers.map((p) => `"${p}"`).join(', ')}`);
      }
      const unknown = Object.keys(body).filter((k) => k !== 'provider');
      if (unknown.length > 0) throw new HttpError(422, `unknown field ${unknown.map((k) => `"${k}"`).join(', ')}: a server takes only "provider"`);
      const server = await createServer(opts.pool, opts.sealer, provider);
      return reply.status(201).header('location', `/api/servers/${server.id}`).send(server);
    });

    app.get('/servers', async () => listServers(opts.pool));

    app.get('/plans', async () => PLANS);

    const prefix = configVarPrefix(opts.addon.id);
    app.get('/resources', async () => listResources(opts.pool, opts.sealer, prefix));

    app.get('/resources/:id', async (req) => {
      const id = (req.params as { id: string }).id;
      const resource = UUID.test(id) ? await getResource(opts.pool, opts.sealer, prefix, id.toLowerCase()) : undefined;
      if (!resource) throw new HttpError(404, `no resource with id "${id}": see GET /api/resources`);
      return resource;
    });

    app.get('/servers/:id', async (req) => {
      const id = serverId(req.params);
      const server = await getServer(opts.pool, id);
      if (!server) throw new HttpError(404, `no server with id "${id}"`);
      return { ...server, transitions: await listTransitions(opts.pool, id) };
    });

    /** Jobs whose attempts are spent: what automation could not do, for an operator to look at. */
    app.get('/jobs/dead', async () => listDeadJobs(opts.pool));

    app.post('/jobs/:id/retry', async (req, reply) => {
      const id = (req.params as { id: string }).id;
      if (!/^\d{1,18}$/.test(id) || !(await retryDeadJob(opts.pool, id))) {
        throw new HttpError(404, `no dead job with id "${id}": see GET /api/jobs/dead`);
      }
      return reply.status(202).send({ id, retried: true });
    });

    app.delete('/servers/:id', async (req, reply) => {
      const id = serverId(req.params);
      const result = await requestServerDeletion(opts.pool, id);
      if (result.outcome === 'missing') throw new HttpError(404, `no live server with id "${id}"`);
      if (result.outcome === 'serving') {
        const n = result.resources.length;
        throw new HttpError(409, `server ${id} serves ${n} resource${n === 1 ? '' : 's'} (${result.resources.join(', ')}): deprovision or move them first`);
      }
      return reply.status(202).send(await getServer(opts.pool, id));
    });
  };
}

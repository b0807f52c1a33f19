import type { FastifyPluginAsync } from 'fastify';
import { snapshot } from '../db.ts';
import { configVarPrefix } from '../config.ts';
import { PLANS } from '../plans.ts';
import { listDeadJobs, retryDeadJob } from '../queue/status.ts';
import { openArchive } from '../store/open.ts';
import { listBackups } from '../wal/backup.ts';
import { resolveIncident } from '../incidents/rows.ts';
import { scheduleMaintenance } from '../incidents/maintenance.ts';
import { getIncident, listIncidents } from '../incidents/views.ts';
import { databaseInfo, DEFAULT_THRESHOLDS, diagnose } from '../resources/diagnose.ts';
import { getResource, listResources } from '../resources/views.ts';
import { loadResourceRecord, resourceServers, tellResource } from '../resources/rows.ts';
import {
  createFollower,
  createServer,
  getServer,
  listServers,
  loadServerRecord,
  requestBackup,
  requestServerDeletion,
  superuserTarget,
} from '../servers/rows.ts';
import { listTransitions } from '../runner/store.ts';
import { credentialRoutes } from './credentialsApi.ts';
import { HttpError, requireOperator, type WebOptions } from './server.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A route's `:id` as written (for messages), and as an id when it is a UUID. */
function idParam(params: unknown): { raw: string; id: string | undefined } {
  const raw = (params as { id: string }).id;
  return { raw, id: UUID.test(raw) ? raw.toLowerCase() : undefined };
}

function serverId(params: unknown): string {
  const { raw, id } = idParam(params);
  if (!id) throw new HttpError(404, `no server with id "${raw}": ids look like 0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41`);
  return id;
}

/** `{"at": "<ISO time>"}`, from now to 30 days ahead. */
function maintenanceTime(body: unknown): Date {
  const raw = (body as { at?: unknown } | undefined)?.at;
  const at = typeof raw === 'string' ? new Date(raw) : undefined;
  if (!at || Number.isNaN(at.getTime()))
    throw new HttpError(422, 'send {"at": "2026-12-01T03:00:00Z"}: when the maintenance runs, as an ISO time');
  const ahead = at.getTime() - Date.now();
  if (ahead < -60_000 || ahead > 30 * 86_400_000) throw new HttpError(422, '"at" must be from now to 30 days ahead');
  return at;
}

/** The operator JSON API, behind the operator token. */
export function operatorApi(opts: WebOptions): FastifyPluginAsync {
  return async (app) => {
    app.addHook('onRequest', requireOperator(opts.operatorToken));

    app.post('/servers', async (req, reply) => {
      // No body is the default server; a body, even `null`, must be an object.
      const body = req.body === undefined ? {} : req.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        throw new HttpError(400, 'send a JSON object such as {"provider":"local"}');
      }
      const provider = (body as { provider?: unknown }).provider ?? 'local';
      if (typeof provider !== 'string' || !opts.providers.includes(provider)) {
        throw new HttpError(
          422,
          `unknown provider ${JSON.stringify(provider)}: use one of ${opts.providers.map((p) => `"${p}"`).join(', ')}`,
        );
      }
      const unknown = Object.keys(body).filter((k) => k !== 'provider' && k !== 'follow');
      if (unknown.length > 0)
        throw new HttpError(422, `unknown field ${unknown.map((k) => `"${k}"`).join(', ')}: a server takes only "provider" and "follow"`);
      const follow = (body as { follow?: unknown }).follow;
      if (follow !== undefined && (typeof follow !== 'string' || !UUID.test(follow)))
        throw new HttpError(422, '"follow" is the id of the server to follow');
      const server = follow ? await createFollower(opts.pool, follow.toLowerCase()) : await createServer(opts.pool, opts.sealer, provider);
      if (!server) throw new HttpError(422, `there is no available server "${follow}" to follow`);
      return reply.status(201).header('location', `/api/servers/${server.id}`).send(server);
    });

    app.get('/servers', async () => listServers(opts.pool));

    app.get('/plans', async () => PLANS);

    const prefix = configVarPrefix(opts.addon.id);
    app.get('/resources', async () => listResources(opts.pool, opts.sealer, prefix));
    credentialRoutes(app, opts, prefix);

    app.get('/resources/:id', async (req) => {
      const { raw, id } = idParam(req.params);
      const resource = id ? await getResource(opts.pool, opts.sealer, prefix, id) : undefined;
      if (!resource) throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
      return resource;
    });

    app.get('/servers/:id', async (req) => {
      const id = serverId(req.params);
      const shown = await snapshot(opts.pool, async (client) => {
        const server = await getServer(client, id);
        return server && { ...server, transitions: await listTransitions(client, id) };
      });
      if (!shown) throw new HttpError(404, `no server with id "${id}"`);
      return shown;
    });

    app.get('/incidents', async () => listIncidents(opts.pool));

    app.get('/incidents/:id', async (req) => {
      const { raw, id } = idParam(req.params);
      const incident = id ? await getIncident(opts.pool, id) : undefined;
      if (!incident) throw new HttpError(404, `no incident with id "${raw}": see GET /api/incidents`);
      return incident;
    });

    app.post('/incidents/:id/resolve', async (req, reply) => {
      const { raw, id } = idParam(req.params);
      if (!id || !(await resolveIncident(opts.pool, id))) throw new HttpError(404, `no open incident with id "${raw}"`);
      return reply.status(202).send(await getIncident(opts.pool, id));
    });

    /** Maintenance of a server, or of the server a resource lives on: customers hear now, it runs at `at`. */
    for (const kind of ['servers', 'resources'] as const) {
      app.post(`/${kind}/:id/maintenance`, async (req, reply) => {
        const { raw, id } = idParam(req.params);
        const at = maintenanceTime(req.body);
        const serverId = kind === 'servers' ? id : id && (await resourceServers(opts.pool, id)).find((s) => s.role === 'primary')?.id;
        const incident = serverId ? await scheduleMaintenance(opts.pool, serverId, at) : undefined;
        if (!incident) throw new HttpError(404, `no live ${kind === 'servers' ? 'server' : 'resource with a server'} with id "${raw}"`);
        return reply.status(201).send(await getIncident(opts.pool, incident));
      });
    }

    /** The resource's database as its primary server's superuser reaches it. */
    async function primaryOf(params: unknown) {
      const { raw, id } = idParam(params);
      const resource = id ? await loadResourceRecord(opts.pool, opts.sealer, id) : undefined;
      if (!resource) throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
      const primary = (await resourceServers(opts.pool, resource.id)).find((s) => s.role === 'primary' && s.state === 'available');
      if (!primary) throw new HttpError(409, `resource ${resource.id} has no available primary server right now`);
      const server = await loadServerRecord(opts.pool, opts.sealer, primary.id);
      return { resource, target: superuserTarget(primary, server!.superuserPassword), primary };
    }

    /** Like `heroku pg:info`. */
    app.get('/resources/:id/info', async (req) => {
      const { resource, target, primary } = await primaryOf(req.params);
      const view = (await getResource(opts.pool, opts.sealer, prefix, resource.id))!;
      const db = await databaseInfo(target, resource.tenant.database);
      return {
        id: resource.id,
        plan: resource.plan.name,
        status: view.state,
        connections: `${db.connections}/${resource.plan.connectionLimit}`,
        pgVersion: db.version,
        created: view.createdAt,
        dataSize: db.size,
        tables: db.tables,
        region: resource.region,
        server: `${primary.id} (${primary.tenancy})`,
      };
    });

    /** Like `heroku pg:diagnose`: each check green, yellow or red. `?long=<seconds>` sets how long is long. */
    app.get('/resources/:id/diagnose', async (req) => {
      const { resource, target } = await primaryOf(req.params);
      const long = Number((req.query as { long?: string }).long ?? DEFAULT_THRESHOLDS.longSeconds);
      if (!Number.isFinite(long) || long <= 0) throw new HttpError(422, '"long" is a number of seconds, such as 60');
      return diagnose(target, resource.tenant.database, resource.plan.connectionLimit, { ...DEFAULT_THRESHOLDS, longSeconds: long });
    });

    /** A switchover by hand: the standby takes over, through the same failover steps (fence, promote). */
    app.post('/resources/:id/promote', async (req, reply) => {
      const { raw, id } = idParam(req.params);
      const resource = id ? await getResource(opts.pool, opts.sealer, prefix, id) : undefined;
      if (!resource) throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
      const force = (req.body as { force?: unknown } | undefined)?.force === true;
      if (resource.state === 'unsynchronized' && !force) {
        throw new HttpError(
          409,
          `the resource runs without a synchronous copy since ${resource.unsynchronizedSince}: ` +
            'its standby may lack commits acknowledged since then; promote it once it is synchronous again, ' +
            'or send {"force": true} to promote it now and lose them',
        );
      }
      if (resource.state !== 'available' && resource.state !== 'unsynchronized')
        throw new HttpError(409, `the resource is ${resource.state}; promote it once it is available`);
      if (!resource.servers.some((s) => s.role === 'standby' && s.state === 'available'))
        throw new HttpError(409, 'the resource has no available standby to promote');
      await tellResource(opts.pool, resource.id, { type: 'switchover', ...(force ? { force } : {}) });
      return reply.status(202).send(await getResource(opts.pool, opts.sealer, prefix, resource.id));
    });

    /** Where a resource's customer hears of incidents: a webhook of theirs. */
    app.put('/resources/:id/notifications', async (req) => {
      const { raw, id } = idParam(req.params);
      const url = (req.body as { url?: unknown } | undefined)?.url;
      if (url !== null && (typeof url !== 'string' || !/^https?:\/\/\S+$/.test(url)))
        throw new HttpError(422, 'send {"url": "https://…"} (or {"url": null} to stop)');
      const { rowCount } = id ? await opts.pool.query('update resources set notify_url = $2 where id = $1', [id, url]) : { rowCount: 0 };
      if (!rowCount) throw new HttpError(404, `no resource with id "${raw}"`);
      return { id: raw, notifyUrl: url };
    });

    /** A base backup of the server into its archive, taken by a worker. */
    app.post('/servers/:id/backups', async (req, reply) => {
      const id = serverId(req.params);
      const server = await getServer(opts.pool, id);
      if (!server || server.state !== 'available') throw new HttpError(409, `server ${id} is not available to back up`);
      return reply.status(202).send({ server: id, label: await requestBackup(opts.pool, id) });
    });

    app.get('/servers/:id/backups', async (req) => {
      const id = serverId(req.params);
      return listBackups(openArchive(opts.archive), `servers/${id}`);
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
        throw new HttpError(
          409,
          `server ${id} serves ${n} resource${n === 1 ? '' : 's'} (${result.resources.join(', ')}): deprovision or move them first`,
        );
      }
      return reply.status(202).send(await getServer(opts.pool, id));
    });
  };
}

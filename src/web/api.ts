import type { FastifyPluginAsync } from 'fastify';
import { hasTag } from '../../machines/policy.ts';
import { serverMachine } from '../../machines/server.ts';
import { snapshot } from '../db.ts';
import { configVarPrefix } from '../config.ts';
import { PLANS } from '../plans.ts';
import { listDeadJobs, retryDeadJob } from '../queue/status.ts';
import { openArchive, serverArchivePrefix } from '../store/open.ts';
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
import { requireOperator } from './auth.ts';
import { credentialRoutes } from './credentialsApi.ts';
import { HttpError } from './errors.ts';
import type { WebOptions } from './options.ts';
import { idParams, jobParams, uuid, type IdParams } from './validation.ts';

function serverBody(providers: string[]) {
  return {
    type: 'object',
    properties: {
      provider: { type: 'string', enum: providers, default: 'local' },
      follow: uuid('must be the id of the server to follow'),
    },
    additionalProperties: false,
    examples: [{ provider: 'local' }],
  } as const;
}

const maintenanceBody = {
  type: 'object',
  required: ['at'],
  properties: {
    at: {
      type: 'string',
      format: 'date-time',
      description: 'must be when the maintenance runs, as an ISO time such as 2026-12-01T03:00:00Z',
    },
  },
  examples: [{ at: '2026-12-01T03:00:00Z' }],
} as const;

const promoteBody = {
  // No body is a plain switchover.
  type: ['object', 'null'],
  properties: { force: { type: 'boolean', description: 'must be true to promote a standby that may lack commits, or false' } },
  examples: [{ force: true }],
} as const;

const notificationsBody = {
  type: 'object',
  required: ['url'],
  properties: { url: { type: ['string', 'null'], pattern: '^https?://\\S+$', description: 'must be an http(s) URL, or null to stop' } },
  examples: [{ url: 'https://example.com/hook' }],
} as const;

const diagnoseQuery = {
  type: 'object',
  properties: {
    long: {
      type: 'number',
      exclusiveMinimum: 0,
      default: DEFAULT_THRESHOLDS.longSeconds,
      description: 'must be a number of seconds, such as 60',
    },
  },
} as const;

/** When `at` may be: from now (a minute of clock difference forgiven) to 30 days ahead. */
function maintenanceTime(raw: string): Date {
  const at = new Date(raw);
  const ahead = at.getTime() - Date.now();
  if (ahead < -60_000 || ahead > 30 * 86_400_000) throw new HttpError(422, '"at" must be from now to 30 days ahead');
  return at;
}

/** The operator JSON API, behind the operator token. */
export function operatorApi(opts: WebOptions): FastifyPluginAsync {
  return async (app) => {
    app.addHook('onRequest', requireOperator(opts.operatorToken));

    const byId = { schema: { params: idParams } };
    type ById = { Params: IdParams };

    app.post<{ Body: { provider: string; follow?: string } }>(
      '/servers',
      {
        // No body is the default server; a body, even `null`, must be an object.
        preValidation: async (req) => {
          if (req.body === undefined) req.body = {} as typeof req.body;
        },
        schema: { body: serverBody(opts.providers) },
      },
      async (req, reply) => {
        const { provider, follow } = req.body;
        const server = follow
          ? await createFollower(opts.pool, follow.toLowerCase())
          : await createServer(opts.pool, opts.sealer, provider);
        if (!server) throw new HttpError(422, `there is no available server "${follow}" to follow`);
        return reply.status(201).header('location', `/api/servers/${server.id}`).send(server);
      },
    );

    app.get('/servers', async () => listServers(opts.pool));

    app.get('/plans', async () => PLANS);

    const prefix = configVarPrefix(opts.addon.id);
    app.get('/resources', async () => listResources(opts.pool, opts.sealer, prefix));
    credentialRoutes(app, opts, prefix);

    app.get<ById>('/resources/:id', byId, async (req) => {
      const resource = await getResource(opts.pool, opts.sealer, prefix, req.params.id.toLowerCase());
      if (!resource) throw new HttpError(404, `no resource with id "${req.params.id}": see GET /api/resources`);
      return resource;
    });

    app.get<ById>('/servers/:id', byId, async (req) => {
      const id = req.params.id.toLowerCase();
      const shown = await snapshot(opts.pool, async (client) => {
        const server = await getServer(client, id);
        return server && { ...server, transitions: await listTransitions(client, id) };
      });
      if (!shown) throw new HttpError(404, `no server with id "${id}"`);
      return shown;
    });

    app.get('/incidents', async () => listIncidents(opts.pool));

    app.get<ById>('/incidents/:id', byId, async (req) => {
      const incident = await getIncident(opts.pool, req.params.id.toLowerCase());
      if (!incident) throw new HttpError(404, `no incident with id "${req.params.id}": see GET /api/incidents`);
      return incident;
    });

    app.post<ById>('/incidents/:id/resolve', byId, async (req, reply) => {
      const id = req.params.id.toLowerCase();
      if (!(await resolveIncident(opts.pool, id))) throw new HttpError(404, `no open incident with id "${req.params.id}"`);
      return reply.status(202).send(await getIncident(opts.pool, id));
    });

    /** Maintenance of a server, or of the server a resource lives on: customers hear now, it runs at `at`. */
    for (const kind of ['servers', 'resources'] as const) {
      app.post<ById & { Body: { at: string } }>(
        `/${kind}/:id/maintenance`,
        { schema: { params: idParams, body: maintenanceBody } },
        async (req, reply) => {
          const id = req.params.id.toLowerCase();
          const at = maintenanceTime(req.body.at);
          const serverId = kind === 'servers' ? id : (await resourceServers(opts.pool, id)).find((s) => s.role === 'primary')?.id;
          const incident = serverId ? await scheduleMaintenance(opts.pool, serverId, at) : undefined;
          if (!incident)
            throw new HttpError(404, `no live ${kind === 'servers' ? 'server' : 'resource with a server'} with id "${req.params.id}"`);
          return reply.status(201).send(await getIncident(opts.pool, incident));
        },
      );
    }

    /** The resource's database as its primary server's superuser reaches it. */
    async function primaryOf(raw: string) {
      const resource = await loadResourceRecord(opts.pool, opts.sealer, raw.toLowerCase());
      if (!resource) throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
      const primary = (await resourceServers(opts.pool, resource.id)).find(
        (s) => s.role === 'primary' && hasTag(serverMachine, s.state, 'healthy'),
      );
      if (!primary) throw new HttpError(409, `resource ${resource.id} has no available primary server right now`);
      const server = await loadServerRecord(opts.pool, opts.sealer, primary.id);
      return { resource, target: superuserTarget(primary, server!.superuserPassword), primary };
    }

    /** Like `heroku pg:info`. */
    app.get<ById>('/resources/:id/info', byId, async (req) => {
      const { resource, target, primary } = await primaryOf(req.params.id);
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
    app.get<ById & { Querystring: { long: number } }>(
      '/resources/:id/diagnose',
      { schema: { params: idParams, querystring: diagnoseQuery } },
      async (req) => {
        const { resource, target } = await primaryOf(req.params.id);
        const thresholds = { ...DEFAULT_THRESHOLDS, longSeconds: req.query.long };
        return diagnose(target, resource.tenant.database, resource.plan.connectionLimit, thresholds);
      },
    );

    /** A switchover by hand: the standby takes over, through the same failover steps (fence, promote). */
    app.post<ById & { Body: { force?: boolean } | null }>(
      '/resources/:id/promote',
      { schema: { params: idParams, body: promoteBody } },
      async (req, reply) => {
        const resource = await getResource(opts.pool, opts.sealer, prefix, req.params.id.toLowerCase());
        if (!resource) throw new HttpError(404, `no resource with id "${req.params.id}": see GET /api/resources`);
        const force = req.body?.force === true;
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
      },
    );

    /** Where a resource's customer hears of incidents: a webhook of theirs. */
    app.put<ById & { Body: { url: string | null } }>(
      '/resources/:id/notifications',
      { schema: { params: idParams, body: notificationsBody } },
      async (req) => {
        const { url } = req.body;
        const { rowCount } = await opts.pool.query('update resources set notify_url = $2 where id = $1', [
          req.params.id.toLowerCase(),
          url,
        ]);
        if (!rowCount) throw new HttpError(404, `no resource with id "${req.params.id}"`);
        return { id: req.params.id, notifyUrl: url };
      },
    );

    /** A base backup of the server into its archive, taken by a worker. */
    app.post<ById>('/servers/:id/backups', byId, async (req, reply) => {
      const id = req.params.id.toLowerCase();
      const server = await getServer(opts.pool, id);
      if (!server || !hasTag(serverMachine, server.state, 'healthy')) throw new HttpError(409, `server ${id} is not available to back up`);
      return reply.status(202).send({ server: id, label: await requestBackup(opts.pool, id) });
    });

    app.get<ById>('/servers/:id/backups', byId, async (req) =>
      listBackups(openArchive(opts.archive), serverArchivePrefix(req.params.id.toLowerCase())),
    );

    /** Jobs whose attempts are spent: what automation could not do, for an operator to look at. */
    app.get('/jobs/dead', async () => listDeadJobs(opts.pool));

    app.post<ById>('/jobs/:id/retry', { schema: { params: jobParams } }, async (req, reply) => {
      const { id } = req.params;
      if (!(await retryDeadJob(opts.pool, id))) throw new HttpError(404, `no dead job with id "${id}": see GET /api/jobs/dead`);
      return reply.status(202).send({ id, retried: true });
    });

    app.delete<ById>('/servers/:id', byId, async (req, reply) => {
      const id = req.params.id.toLowerCase();
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

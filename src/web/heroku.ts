import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { hasTag } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import { configVarPrefix } from '../config.ts';
import type { Pool } from '../db.ts';
import { awsRegion, findPlan, PLANS, REGION_HELP } from '../plans.ts';
import { callbackAllowed } from '../platform.ts';
import { changePlan, createResource, resourceServers, resourceState, tellResource, type ProvisionRequest } from '../resources/rows.ts';
import { getResource } from '../resources/views.ts';
import { sameSecret } from './auth.ts';
import { errorHandler, HttpError, INTERNAL_ERROR } from './errors.ts';
import type { WebOptions } from './options.ts';
import { settler } from './settle.ts';
import { renderSsoError, ssoRoutes } from './sso.ts';
import { uuid, type IdParams } from './validation.ts';

const plan = { type: 'string', enum: PLANS.map((p) => p.name) } as const;

/** A string field the platform may leave out or send as null. */
const optional = (pattern: string, description: string) => ({ type: ['string', 'null'], pattern, description }) as const;

/** A provision request, v3 or legacy v1; unknown fields are accepted, as the platform adds fields over time. */
const provisionBody = {
  type: 'object',
  required: ['uuid', 'plan'],
  properties: {
    uuid: uuid('must be a UUID such as 01234567-89ab-cdef-0123-456789abcdef: the platform names every resource with one'),
    plan,
    // Which regions there are is the plan catalog's to say (awsRegion).
    region: { type: 'string', default: 'us', description: `must be a region name: ${REGION_HELP}` },
    callback_url: optional('^https?://\\S+$', 'must be an http(s) URL'),
    // Heroku add-on names and ids: nothing that needs quoting anywhere.
    name: optional('^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$', 'may hold only letters, digits, ".", "_" and "-" (at most 255)'),
    heroku_id: optional('^[A-Za-z0-9][A-Za-z0-9._@:-]{0,254}$', 'may hold only letters, digits, ".", "_", "@", ":" and "-"'),
    options: {
      type: 'object',
      default: {},
      properties: { follow: uuid('must be the id of the database to follow') },
      additionalProperties: false,
    },
    oauth_grant: {
      type: ['object', 'null'],
      required: ['code'],
      properties: { code: { type: 'string' } },
      description: 'must be an object with a "code" string',
    },
  },
  examples: [{ uuid: '01234567-89ab-cdef-0123-456789abcdef', plan: 'shared', region: 'us' }],
} as const;

interface ProvisionBody {
  uuid: string;
  plan: string;
  region: string;
  callback_url?: string | null;
  name?: string | null;
  heroku_id?: string | null;
  options: { follow?: string };
  oauth_grant?: { code: string } | null;
}

const planChangeBody = { type: 'object', required: ['plan'], properties: { plan }, examples: [{ plan: 'shared' }] } as const;

const resourceParams = {
  type: 'object',
  required: ['id'],
  properties: { id: uuid('must be a UUID: resource ids are the UUIDs the platform sent') },
} as const;

/** What the schema cannot say: the region's AWS name, where callbacks may go, and what can follow. */
function provisionRequest(body: ProvisionBody, opts: WebOptions): ProvisionRequest {
  const aws = awsRegion(body.region);
  if (!aws) throw new HttpError(422, `there is no region ${JSON.stringify(body.region)}: ${REGION_HELP}`);
  const callbackUrl = body.callback_url ?? null;
  if (callbackUrl !== null && !callbackAllowed(opts.addon, callbackUrl)) {
    throw new HttpError(422, `"callback_url" must point into the platform API at ${opts.addon.platformApiUrl}`);
  }
  const plan = findPlan(body.plan)!;
  const { follow } = body.options;
  if (follow !== undefined && plan.kind !== 'dedicated')
    throw new HttpError(422, 'a follower is a server of its own: choose a dedicated plan');
  return {
    id: body.uuid.toLowerCase(),
    plan,
    region: body.region,
    awsRegion: aws,
    name: body.name ?? null,
    herokuId: body.heroku_id ?? null,
    callbackUrl,
    options: follow ? { follow } : {},
    oauthGrant: body.oauth_grant ?? null,
    follows: follow?.toLowerCase() ?? null,
  };
}

async function checkBasic(req: FastifyRequest, opts: WebOptions): Promise<void> {
  const match = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
  const [user, ...rest] = match?.[1] ? Buffer.from(match[1], 'base64').toString('utf8').split(':') : [];
  if (user !== opts.addon.id || !sameSecret(rest.join(':'), opts.addon.password)) {
    throw new HttpError(401, 'wrong or missing credentials: use HTTP Basic with the add-on id and its api password from the manifest');
  }
}

/**
 * A repeated provision is answered as the first was, if it asks for the same thing: a
 * deprovisioned uuid is gone (410), and another plan, region or leader under the same uuid
 * is a conflict the platform must hear of (409), not the old database.
 */
async function checkRepeat(pool: Pool, request: ProvisionRequest): Promise<boolean> {
  const { rows } = await pool.query<{ plan: string; region: string; aws_region: string; follows: string | null; state: string | null }>(
    `select r.plan, r.region, r.aws_region, r.follows, m.state
     from resources r left join entity_states m on m.entity_id = r.id and m.machine = 'resource' where r.id = $1`,
    [request.id],
  );
  const existing = rows[0];
  if (!existing) return false;
  if (hasTag(resourceMachine, existing.state, 'gone'))
    throw new HttpError(410, 'this database has been deprovisioned: provision a new one under a new uuid');
  if (existing.plan !== request.plan.name || existing.aws_region !== request.awsRegion || existing.follows !== request.follows) {
    throw new HttpError(
      409,
      `the resource ${request.id} already exists on plan "${existing.plan}" in region "${existing.region}"` +
        `${existing.follows ? `, following ${existing.follows}` : ''}: repeat the provision as it was, or change the plan with PUT`,
    );
  }
  return true;
}

/**
 * The Heroku add-on partner API (v3, and legacy v1 bodies) and its single sign-on. Errors
 * here carry `message`, the field the platform shows to its user.
 */
export function herokuApi(opts: WebOptions): FastifyPluginAsync {
  const prefix = configVarPrefix(opts.addon.id);
  const { settled } = settler(opts.pool);

  async function answerWithConfig(id: string, reply: FastifyReply, ready: string, pending: string) {
    if (await settled(id, opts.addon.answerWithin)) {
      const resource = await getResource(opts.pool, opts.sealer, prefix, id);
      return reply.status(200).send({ id, config: resource!.config, message: ready });
    }
    await tellResource(opts.pool, id, { type: 'deferred' });
    return reply.status(202).send({ id, message: pending });
  }

  /** Only a live database with a server of its own can be followed: a shared server holds other tenants too. */
  async function checkLeader(id: string): Promise<void> {
    const leader = await getResource(opts.pool, opts.sealer, prefix, id);
    if (!leader || hasTag(resourceMachine, leader.state, 'gone')) throw new HttpError(422, `there is no database "${id}" to follow`);
    const primary = (await resourceServers(opts.pool, id)).find((s) => s.role === 'primary');
    if (primary?.tenancy !== 'dedicated')
      throw new HttpError(422, `the database "${id}" is on a shared server; only databases on a dedicated plan can be followed`);
    if (!hasTag(resourceMachine, leader.state, 'healthy'))
      throw new HttpError(409, `the database "${id}" is ${leader.state}; follow it once it is available`);
  }

  // Credentials are checked before the body is read: a wrong password is a 401 whatever it sent.
  const basic = (req: FastifyRequest) => checkBasic(req, opts);

  return async (app: FastifyInstance) => {
    app.setErrorHandler(
      errorHandler(INTERNAL_ERROR.customer, (req, reply, status, message) =>
        // Sign-on is a browser's visit: it gets a page.
        req.url.startsWith('/sso') || req.method === 'GET'
          ? reply.status(status).type('text/html').send(renderSsoError(message))
          : reply.status(status).send({ message }),
      ),
    );

    app.post<{ Body: ProvisionBody }>('/heroku/resources', { onRequest: basic, schema: { body: provisionBody } }, async (req, reply) => {
      const request = provisionRequest(req.body, opts);
      const repeated = await checkRepeat(opts.pool, request);
      if (request.follows && !repeated) await checkLeader(request.follows);
      const { created, plan } = await createResource(opts.pool, opts.sealer, request);
      // Two first requests at once: the one that lost the race is a repeat, checked as one.
      if (!created && !repeated) await checkRepeat(opts.pool, request);
      req.log.info({ resource: request.id, plan, created }, created ? 'provisioning' : 'provision repeated');
      if (findPlan(plan)?.kind === 'dedicated') {
        return reply.status(202).send({ id: request.id, message: 'Your database is being provisioned; it will be ready in moments.' });
      }
      return answerWithConfig(
        request.id,
        reply,
        'Your database is ready.',
        'Your database is being provisioned; it will be ready in moments.',
      );
    });

    app.put<{ Params: IdParams; Body: { plan: string } }>(
      '/heroku/resources/:id',
      { onRequest: basic, schema: { params: resourceParams, body: planChangeBody } },
      async (req, reply) => {
        const id = req.params.id.toLowerCase();
        const plan = findPlan(req.body.plan)!;
        const before = await getResource(opts.pool, opts.sealer, prefix, id);
        if (!before) throw new HttpError(404, `no resource "${id}"`);
        if (hasTag(resourceMachine, before.state, 'gone')) throw new HttpError(410, 'this database has been deprovisioned');
        const { rows: following } = await opts.pool.query('select 1 from resources where id = $1 and follows is not null', [id]);
        if (following.length > 0) throw new HttpError(422, 'a follower keeps its plan: provision a new follower on the plan you want');
        // The platform delivers at least once: a repeated change is answered, not redone.
        if (before.plan === plan.name) {
          if (hasTag(resourceMachine, before.state, 'healthy'))
            return reply.send({ config: before.config, message: `Now on ${plan.name}.` });
          if (before.state === 'resizing' || before.state === 'changing')
            return reply.status(202).send({ message: `Changing to ${plan.name}; the new config follows when it is done.` });
        }
        if (!hasTag(resourceMachine, before.state, 'healthy'))
          throw new HttpError(409, `the database is ${before.state}; change its plan once that is done`);
        const primary = (await resourceServers(opts.pool, id)).find((s) => s.role === 'primary');
        const move = primary?.tenancy !== plan.kind;
        const standbysBefore = findPlan(before.plan)?.standbys ?? 0;
        const standby = plan.standbys > standbysBefore ? 'add' : plan.standbys < standbysBefore ? 'drop' : undefined;
        // A standby comes or goes on the server the database is on: a move is a change of its own.
        if (standby && move) {
          throw new HttpError(
            422,
            `${before.plan} and ${plan.name} differ both in kind and in standbys: change to the dedicated plan first, then to ${plan.name}`,
          );
        }
        await changePlan(opts.pool, id, plan, { move, ...(standby ? { standby } : {}) });
        if (!(await settled(id, opts.addon.answerWithin))) {
          await tellResource(opts.pool, id, { type: 'deferred' });
          return reply.status(202).send({ message: `Changing to ${plan.name}; the new config follows when it is done.` });
        }
        const after = (await getResource(opts.pool, opts.sealer, prefix, id))!;
        const changed = JSON.stringify(after.config) !== JSON.stringify(before.config);
        return reply.send({ ...(changed ? { config: after.config } : {}), message: `Now on ${plan.name}.` });
      },
    );

    app.delete<{ Params: IdParams }>(
      '/heroku/resources/:id',
      { onRequest: basic, schema: { params: resourceParams } },
      async (req, reply) => {
        const id = req.params.id.toLowerCase();
        const state = await resourceState(opts.pool, id);
        if (state === undefined) throw new HttpError(404, `no resource "${id}"`);
        // Deprovisioning twice is deprovisioning once.
        if (!hasTag(resourceMachine, state, 'gone')) await tellResource(opts.pool, id, { type: 'deprovision' });
        return reply.status(204).send();
      },
    );

    await app.register(ssoRoutes(opts));
  };
}

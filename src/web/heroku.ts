import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { configVarPrefix } from '../config.ts';
import type { Pool } from '../db.ts';
import { awsRegion, findPlan, PLANS, REGION_HELP, type Plan } from '../plans.ts';
import { callbackAllowed } from '../platform.ts';
import { changePlan, createResource, resourceServers, resourceState, tellResource, type ProvisionRequest } from '../resources/rows.ts';
import { getResource } from '../resources/views.ts';
import { HttpError, sameSecret, UUID, type WebOptions } from './server.ts';
import { settler } from './settle.ts';
import { renderSsoError, ssoRoutes } from './sso.ts';

/** Heroku add-on names: letters, digits, `-`, `_`, `.`; nothing that needs quoting anywhere. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const HEROKU_ID = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,254}$/;

type Body = Record<string, unknown>;

function object(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, 'send a JSON object such as {"uuid":"…","plan":"shared","region":"us"}');
  }
  return body as Body;
}

function optionalString(body: Body, field: string, pattern: RegExp, help: string): string | null {
  const value = body[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || !pattern.test(value)) throw new HttpError(422, `"${field}" ${help}`);
  return value;
}

function requiredPlan(body: Body): Plan {
  if (body.plan === undefined)
    throw new HttpError(400, 'the body has no "plan": send one of ' + PLANS.map((p) => `"${p.name}"`).join(', '));
  const plan = findPlan(body.plan);
  if (!plan)
    throw new HttpError(422, `there is no plan ${JSON.stringify(body.plan)}: choose one of ${PLANS.map((p) => `"${p.name}"`).join(', ')}`);
  return plan;
}

/** A provision request, v3 or legacy v1, checked field by field; unknown fields are accepted. */
function parseProvision(raw: unknown, opts: WebOptions): ProvisionRequest {
  const body = object(raw);
  if (body.uuid === undefined) throw new HttpError(400, 'the body has no "uuid": the platform names every resource with one');
  if (typeof body.uuid !== 'string' || !UUID.test(body.uuid))
    throw new HttpError(422, '"uuid" must be a UUID such as 01234567-89ab-cdef-0123-456789abcdef');
  const plan = requiredPlan(body);
  const region = body.region ?? 'us';
  const aws = awsRegion(region);
  if (!aws) throw new HttpError(422, `there is no region ${JSON.stringify(region)}: ${REGION_HELP}`);
  const callbackUrl = optionalString(body, 'callback_url', /^https?:\/\/\S+$/, 'must be an http(s) URL');
  if (callbackUrl !== null && !callbackAllowed(opts.addon, callbackUrl)) {
    throw new HttpError(422, `"callback_url" must point into the platform API at ${opts.addon.platformApiUrl}`);
  }
  const options = body.options ?? {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new HttpError(422, '"options" must be an object');
  const unknown = Object.keys(options).filter((k) => k !== 'follow');
  if (unknown.length > 0)
    throw new HttpError(422, `unknown option ${unknown.map((k) => JSON.stringify(k)).join(', ')}: the only option is "follow"`);
  const follow = (options as Body).follow;
  if (follow !== undefined && (typeof follow !== 'string' || !UUID.test(follow)))
    throw new HttpError(422, '"follow" is the id of the database to follow');
  if (follow !== undefined && plan.kind !== 'dedicated')
    throw new HttpError(422, 'a follower is a server of its own: choose a dedicated plan');
  const grant = body.oauth_grant ?? null;
  if (grant !== null && (typeof grant !== 'object' || typeof (grant as Body).code !== 'string')) {
    throw new HttpError(422, '"oauth_grant" must be an object with a "code" string');
  }
  return {
    id: body.uuid.toLowerCase(),
    plan,
    region: region as string,
    awsRegion: aws,
    name: optionalString(body, 'name', NAME, 'may hold only letters, digits, ".", "_" and "-" (at most 255)'),
    herokuId: optionalString(body, 'heroku_id', HEROKU_ID, 'may hold only letters, digits, ".", "_", "@", ":" and "-"'),
    callbackUrl,
    options: follow ? { follow } : {},
    oauthGrant: grant as Body | null,
    follows: typeof follow === 'string' ? follow.toLowerCase() : null,
  };
}

function resourceId(params: unknown): string {
  const id = (params as { id: string }).id;
  if (!UUID.test(id)) throw new HttpError(404, `no resource "${id}": resource ids are the UUIDs the platform sent`);
  return id.toLowerCase();
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
  if (existing.state === 'deleted' || existing.state === 'deprovisioning')
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
    if (!leader || leader.state === 'deleted' || leader.state === 'deprovisioning')
      throw new HttpError(422, `there is no database "${id}" to follow`);
    const primary = (await resourceServers(opts.pool, id)).find((s) => s.role === 'primary');
    if (primary?.tenancy !== 'dedicated')
      throw new HttpError(422, `the database "${id}" is on a shared server; only databases on a dedicated plan can be followed`);
    if (leader.state !== 'available') throw new HttpError(409, `the database "${id}" is ${leader.state}; follow it once it is available`);
  }

  // Credentials are checked before the body is read: a wrong password is a 401 whatever it sent.
  const basic = (req: FastifyRequest) => checkBasic(req, opts);

  return async (app: FastifyInstance) => {
    app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
      const status = err.statusCode ?? 500;
      if (status >= 500) {
        req.log.error({ err }, 'add-on request failed');
        return reply.status(status).send({ message: 'pgfleet could not do that just now; try again shortly' });
      }
      const message =
        err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'the body is too large: a provision request is a small JSON object'
          : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
            ? 'send the body as JSON with "Content-Type: application/json"'
            : err.message;
      if (req.url.startsWith('/sso') || req.method === 'GET') return reply.status(status).type('text/html').send(renderSsoError(message));
      return reply.status(status).send({ message });
    });

    app.post('/heroku/resources', { onRequest: basic }, async (req, reply) => {
      const request = parseProvision(req.body, opts);
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

    app.put('/heroku/resources/:id', { onRequest: basic }, async (req, reply) => {
      const id = resourceId(req.params);
      const plan = requiredPlan(object(req.body));
      const before = await getResource(opts.pool, opts.sealer, prefix, id);
      if (!before) throw new HttpError(404, `no resource "${id}"`);
      if (before.state === 'deleted' || before.state === 'deprovisioning') throw new HttpError(410, 'this database has been deprovisioned');
      const { rows: following } = await opts.pool.query('select 1 from resources where id = $1 and follows is not null', [id]);
      if (following.length > 0) throw new HttpError(422, 'a follower keeps its plan: provision a new follower on the plan you want');
      // The platform delivers at least once: a repeated change is answered, not redone.
      if (before.plan === plan.name) {
        if (before.state === 'available') return reply.send({ config: before.config, message: `Now on ${plan.name}.` });
        if (before.state === 'resizing' || before.state === 'changing')
          return reply.status(202).send({ message: `Changing to ${plan.name}; the new config follows when it is done.` });
      }
      if (before.state !== 'available') throw new HttpError(409, `the database is ${before.state}; change its plan once that is done`);
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
    });

    app.delete('/heroku/resources/:id', { onRequest: basic }, async (req, reply) => {
      const id = resourceId(req.params);
      const state = await resourceState(opts.pool, id);
      if (state === undefined) throw new HttpError(404, `no resource "${id}"`);
      // Deprovisioning twice is deprovisioning once.
      if (state !== 'deleted' && state !== 'deprovisioning') await tellResource(opts.pool, id, { type: 'deprovision' });
      return reply.status(204).send();
    });

    await app.register(ssoRoutes(opts));
  };
}

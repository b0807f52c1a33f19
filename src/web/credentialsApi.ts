import type { FastifyInstance } from 'fastify';
import {
  createCredential,
  CREDENTIAL_NAME,
  destroyCredential,
  listCredentials,
  OWNER_CREDENTIAL,
  requestRotation,
  rotateCredential,
  withUrls,
  type Outcome,
} from '../credentials/rows.ts';
import type { Pool } from '../db.ts';
import { getResource } from '../resources/views.ts';
import { loadResourceRecord, resourceState, type ResourceRecord } from '../resources/rows.ts';
import { HttpError } from './errors.ts';
import type { WebOptions } from './options.ts';
import { idParams, type IdParams } from './validation.ts';

/** The outcome's value, or its refusal as the 4xx it is. */
function value<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) throw new HttpError(outcome.status, outcome.message);
  return outcome.value;
}

/** A named credential's name: Heroku's rule, and never `default`, the owner's. */
const NAME_RULE = 'must be 1 to 30 lowercase letters, digits and "_", starting with a letter, such as "analyst"';
const NOT_OWNER = {
  not: { const: OWNER_CREDENTIAL },
  description: 'must not be "default": that is the owner\'s credential, rotated at …/credentials/rotate and never made or destroyed',
};
const credentialName = { type: 'string', pattern: CREDENTIAL_NAME.source, description: NAME_RULE, allOf: [NOT_OWNER] } as const;

const credentialParams = {
  type: 'object',
  required: ['id', 'name'],
  properties: { ...idParams.properties, name: credentialName },
} as const;
interface CredentialParams extends IdParams {
  name: string;
}

const credentialBody = {
  type: 'object',
  required: ['name', 'privileges'],
  properties: {
    name: credentialName,
    privileges: {
      type: 'string',
      enum: ['read', 'write'],
      description: 'must be "read" (SELECT only) or "write" (also INSERT, UPDATE, DELETE)',
    },
  },
  additionalProperties: false,
  examples: [{ name: 'analyst', privileges: 'read' }],
} as const;

/** Wait until the machine has made the credential on the server (it is `active`), or the deadline passes. */
async function madeWithin(pool: Pool, id: string, name: string, seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const { rows } = await pool.query<{ state: string }>('select state from credentials where resource_id = $1 and name = $2', [id, name]);
    if (rows[0]?.state === 'active') return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Credentials of a resource, behind the operator token (registered by operatorApi):
 * `GET …/credentials` lists them without passwords; a named credential's URLs are shown only
 * in the answers that made its password (create, rotate). They are not config vars: every
 * change of a config var restarts the platform's app, and the app already has the owner's.
 */
export function credentialRoutes(app: FastifyInstance, opts: WebOptions, prefix: string): void {
  async function resourceOf(raw: string): Promise<{ resource: ResourceRecord; state: string }> {
    const resource = await loadResourceRecord(opts.pool, opts.sealer, raw.toLowerCase());
    const state = resource && (await resourceState(opts.pool, resource.id));
    if (!resource || !state || state === 'deleted') throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
    return { resource, state };
  }

  app.get<{ Params: IdParams }>('/resources/:id/credentials', { schema: { params: idParams } }, async (req) =>
    listCredentials(opts.pool, (await resourceOf(req.params.id)).resource),
  );

  /** The owner's password: a new one is set on the server, then handed to the platform. */
  app.post<{ Params: IdParams }>('/resources/:id/credentials/rotate', { schema: { params: idParams } }, async (req, reply) => {
    const { resource, state } = await resourceOf(req.params.id);
    value(await requestRotation(opts.pool, opts.sealer, resource, state));
    return reply.status(202).send(await getResource(opts.pool, opts.sealer, prefix, resource.id));
  });

  app.post<{ Params: IdParams; Body: { name: string; privileges: 'read' | 'write' } }>(
    '/resources/:id/credentials',
    { schema: { params: idParams, body: credentialBody } },
    async (req, reply) => {
      const { resource, state } = await resourceOf(req.params.id);
      const { name, privileges } = req.body;
      const password = value(await createCredential(opts.pool, opts.sealer, resource, state, name, privileges));
      const made = await madeWithin(opts.pool, resource.id, name, opts.addon.answerWithin);
      const credential = await withUrls(opts.pool, opts.sealer, prefix, resource.id, name, password);
      return reply
        .status(made ? 201 : 202)
        .header('location', `/api/resources/${resource.id}/credentials`)
        .send(credential);
    },
  );

  const byName = { schema: { params: credentialParams } };

  app.post<{ Params: CredentialParams }>('/resources/:id/credentials/:name/rotate', byName, async (req, reply) => {
    const { resource, state } = await resourceOf(req.params.id);
    const { name } = req.params;
    const password = value(await rotateCredential(opts.pool, opts.sealer, resource, state, name));
    return reply.status(202).send(await withUrls(opts.pool, opts.sealer, prefix, resource.id, name, password));
  });

  /** The credential stops logging in, its sessions end, and its role goes. */
  app.delete<{ Params: CredentialParams }>('/resources/:id/credentials/:name', byName, async (req, reply) => {
    const { resource, state } = await resourceOf(req.params.id);
    const { name } = req.params;
    value(await destroyCredential(opts.pool, resource, state, name));
    return reply.status(202).send((await listCredentials(opts.pool, resource)).find((c) => c.name === name));
  });
}

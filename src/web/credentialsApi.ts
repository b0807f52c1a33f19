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
import { HttpError, UUID, type WebOptions } from './server.ts';

/** The outcome's value, or its refusal as the 4xx it is. */
function value<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) throw new HttpError(outcome.status, outcome.message);
  return outcome.value;
}

/**
 * A credential's name from the path: a named one (never `default`, the owner, which is
 * rotated at `/credentials/rotate`).
 */
function credentialName(params: unknown): string {
  const name = (params as { name: string }).name;
  if (!CREDENTIAL_NAME.test(name) || name === OWNER_CREDENTIAL)
    throw new HttpError(404, `no credential "${name}": named credentials are lowercase letters, digits and "_"`);
  return name;
}

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
  async function resourceOf(params: unknown): Promise<{ resource: ResourceRecord; state: string }> {
    const raw = (params as { id: string }).id;
    const resource = UUID.test(raw) ? await loadResourceRecord(opts.pool, opts.sealer, raw.toLowerCase()) : undefined;
    const state = resource && (await resourceState(opts.pool, resource.id));
    if (!resource || !state || state === 'deleted') throw new HttpError(404, `no resource with id "${raw}": see GET /api/resources`);
    return { resource, state };
  }

  app.get('/resources/:id/credentials', async (req) => listCredentials(opts.pool, (await resourceOf(req.params)).resource));

  /** The owner's password: a new one is set on the server, then handed to the platform. */
  app.post('/resources/:id/credentials/rotate', async (req, reply) => {
    const { resource, state } = await resourceOf(req.params);
    value(await requestRotation(opts.pool, opts.sealer, resource, state));
    return reply.status(202).send(await getResource(opts.pool, opts.sealer, prefix, resource.id));
  });

  app.post('/resources/:id/credentials', async (req, reply) => {
    const { resource, state } = await resourceOf(req.params);
    const body = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw new HttpError(400, 'send a JSON object such as {"name": "analyst", "privileges": "read"}');
    const { name, privileges, ...rest } = body as Record<string, unknown>;
    if (Object.keys(rest).length > 0)
      throw new HttpError(
        422,
        `unknown field ${Object.keys(rest)
          .map((k) => JSON.stringify(k))
          .join(', ')}: a credential takes "name" and "privileges"`,
      );
    if (typeof name !== 'string' || !CREDENTIAL_NAME.test(name))
      throw new HttpError(422, '"name" is 1 to 30 lowercase letters, digits and "_", starting with a letter, such as "analyst"');
    if (name === OWNER_CREDENTIAL) throw new HttpError(422, '"default" is the owner\'s credential: choose another name');
    if (privileges !== 'read' && privileges !== 'write')
      throw new HttpError(422, '"privileges" is "read" (SELECT only) or "write" (also INSERT, UPDATE, DELETE)');
    const password = value(await createCredential(opts.pool, opts.sealer, resource, state, name, privileges));
    const made = await madeWithin(opts.pool, resource.id, name, opts.addon.answerWithin);
    const credential = await withUrls(opts.pool, opts.sealer, prefix, resource.id, name, password);
    return reply
      .status(made ? 201 : 202)
      .header('location', `/api/resources/${resource.id}/credentials`)
      .send(credential);
  });

  app.post('/resources/:id/credentials/:name/rotate', async (req, reply) => {
    const { resource, state } = await resourceOf(req.params);
    const name = credentialName(req.params);
    const password = value(await rotateCredential(opts.pool, opts.sealer, resource, state, name));
    return reply.status(202).send(await withUrls(opts.pool, opts.sealer, prefix, resource.id, name, password));
  });

  /** The credential stops logging in, its sessions end, and its role goes. */
  app.delete('/resources/:id/credentials/:name', async (req, reply) => {
    const { resource, state } = await resourceOf(req.params);
    const name = credentialName(req.params);
    value(await destroyCredential(opts.pool, resource, state, name));
    return reply.status(202).send((await listCredentials(opts.pool, resource)).find((c) => c.name === name));
  });
}

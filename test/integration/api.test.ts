import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startSystem, type System } from '../support/system.ts';

/** Row counts of every table a request could touch. */
async function counts(db: TestDatabase): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<Record<string, number>>(
    `select (select count(*) from servers)::int as servers, (select count(*) from machines)::int as machines,
       (select count(*) from jobs)::int as jobs, (select count(*) from transitions)::int as transitions`,
  );
  return rows[0]!;
}

describe('the operator API refuses bad input with a clear 4xx and changes nothing', () => {
  let db: TestDatabase;
  let system: System;

  beforeAll(async () => {
    db = await createTestDatabase();
    // Web only: no worker or clock, so any row change can only come from the request.
    system = await startSystem(db.url, ['web']);
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
  });

  const cases: [string, () => Promise<{ status: number; body: { error?: string } }>, number, RegExp][] = [
    ['no token', () => system.api('GET', '/api/servers', undefined, { authorization: '' }), 401, /Authorization: Bearer/],
    [
      'a wrong token',
      () => system.api('POST', '/api/servers', { provider: 'local' }, { authorization: 'Bearer nope' }),
      401,
      /operator token/,
    ],
    ['malformed JSON', () => system.api('POST', '/api/servers', '{"provider": "local"'), 400, /JSON/],
    ['a JSON array', () => system.api('POST', '/api/servers', '[1,2]'), 400, /JSON object/],
    [
      'an unknown provider',
      () => system.api('POST', '/api/servers', { provider: 'mars' }),
      422,
      /body\/provider must be one of "local"(, "[a-z]+")*; it is "mars"/,
    ],
    [
      'a provider that is not a string',
      () => system.api('POST', '/api/servers', { provider: 7 }),
      422,
      /body\/provider must be one of "local"(, "[a-z]+")*; it is 7/,
    ],
    ['an unknown field', () => system.api('POST', '/api/servers', { provider: 'local', size: 'xl' }), 422, /unknown field "size"/],
    [
      'a body that is not JSON',
      () => system.api('POST', '/api/servers', 'provider=local', { 'content-type': 'application/x-www-form-urlencoded' }),
      415,
      /Content-Type: application\/json/,
    ],
    [
      'an oversized body',
      () => system.api('POST', '/api/servers', JSON.stringify({ provider: 'local', pad: 'x'.repeat(100_000) })),
      413,
      /too large/,
    ],
    ['an unknown id', () => system.api('GET', `/api/servers/${randomUUID()}`), 404, /no server with id/],
    ['an id that is not a uuid', () => system.api('GET', "/api/servers/1'%20or%201=1"), 404, /params\/id must be a UUID such as/],
    ['deleting an unknown id', () => system.api('DELETE', `/api/servers/${randomUUID()}`), 404, /no live server/],
    ['retrying a job that is not dead', () => system.api('POST', '/api/jobs/999999/retry'), 404, /no dead job with id "999999"/],
    [
      'retrying a job id that is not a number',
      () => system.api('POST', '/api/jobs/1;drop/retry'),
      404,
      /params\/id must be the number of a dead job/,
    ],
    ['an unknown route', () => system.api('GET', '/api/nothing'), 404, /no route GET \/api\/nothing/],
    // Route schemas refuse a body before the route runs, naming the field and what it must be.
    [
      'a follow that is not a server id',
      () => system.api('POST', '/api/servers', { follow: 'x' }),
      422,
      /^body\/follow must be the id of the server to follow; it is "x"$/,
    ],
    [
      'a maintenance time that is not a time',
      () => system.api('POST', `/api/servers/${randomUUID()}/maintenance`, { at: 'soon' }),
      422,
      /^body\/at must be when the maintenance runs, as an ISO time such as .*; it is "soon"$/,
    ],
    [
      'no maintenance time',
      () => system.api('POST', `/api/resources/${randomUUID()}/maintenance`, {}),
      422,
      /^body\/at is missing: it must be/,
    ],
    [
      'a webhook that is not an http(s) URL',
      () => system.api('PUT', `/api/resources/${randomUUID()}/notifications`, { url: 'ftp://example.com' }),
      422,
      /^body\/url must be an http\(s\) URL, or null to stop; it is "ftp:\/\/example.com"$/,
    ],
    // JSON bodies are taken as sent: a string is not coerced to a boolean.
    [
      'a force sent as a string',
      () => system.api('POST', `/api/resources/${randomUUID()}/promote`, { force: 'true' }),
      422,
      /^body\/force must be true to promote .*; it is "true"$/,
    ],
    [
      'a promotion body that is not an object',
      () => system.api('POST', `/api/resources/${randomUUID()}/promote`, '[]'),
      400,
      /JSON object/,
    ],
    [
      'a long-query threshold that is not positive',
      () => system.api('GET', `/api/resources/${randomUUID()}/diagnose?long=0`),
      422,
      /^querystring\/long must be a number of seconds, such as 60; it is 0$/,
    ],
    [
      'a credential with privileges there are not',
      () => system.api('POST', `/api/resources/${randomUUID()}/credentials`, { name: 'analyst', privileges: 'all' }),
      422,
      /^body\/privileges must be "read" \(SELECT only\) or "write" .*; it is "all"$/,
    ],
    [
      'a credential named as the owner',
      () => system.api('POST', `/api/resources/${randomUUID()}/credentials`, { name: 'default', privileges: 'read' }),
      422,
      /^body\/name must not be "default": that is the owner's credential/,
    ],
    [
      'a credential with an unknown field',
      () => system.api('POST', `/api/resources/${randomUUID()}/credentials`, { name: 'analyst', privileges: 'read', admin: true }),
      422,
      /^body has an unknown field "admin": it takes only "name" and "privileges"$/,
    ],
  ];

  for (const [what, request, status, message] of cases) {
    it(`answers ${status} to ${what}`, async () => {
      const before = await counts(db);
      const res = await request();
      expect(res.status).toBe(status);
      expect(res.body.error).toMatch(message);
      expect(await counts(db)).toEqual(before);
    });
  }

  it('lists the plan catalog', async () => {
    const plans = await system.api('GET', '/api/plans');
    expect(plans.status).toBe(200);
    expect(plans.body.map((p: { name: string; kind: string }) => `${p.name}:${p.kind}`)).toEqual([
      'shared:shared',
      'shared-plus:shared',
      'dedicated:dedicated',
      'ha:dedicated',
      'ha-strict:dedicated',
    ]);
    expect(plans.body.every((p: { connectionLimit: number }) => p.connectionLimit > 0)).toBe(true);
  });

  it('creates a server with a good request, and lists and shows it', async () => {
    const created = await system.api('POST', '/api/servers', { provider: 'local' });
    expect(created.status).toBe(201);
    expect(await counts(db)).toMatchObject({ servers: 1, machines: 1, jobs: 1, transitions: 1 });
    const list = await system.api('GET', '/api/servers');
    expect(list.body.map((s: { id: string }) => s.id)).toEqual([created.body.id]);
    const shown = await system.api('GET', `/api/servers/${created.body.id}`);
    expect(shown.body).toMatchObject({
      id: created.body.id,
      state: 'provisioning',
      transitions: [{ from: null, to: 'provisioning', event: 'create' }],
    });
    expect(JSON.stringify(shown.body)).not.toMatch(/password/i);
  });
});

describe('dead jobs', () => {
  it('are listed for an operator and can be retried through the API', async () => {
    const db = await createTestDatabase();
    const system = await startSystem(db.url, ['web']);
    try {
      await db.pool.query(
        `insert into jobs (task, attempts, max_attempts, last_error, dead_at)
         values ('restart', 10, 10, 'pg_ctl: could not start server', now())`,
      );
      const dead = await system.api('GET', '/api/jobs/dead');
      expect(dead.status).toBe(200);
      expect(dead.body).toMatchObject([{ task: 'restart', attempts: 10, lastError: 'pg_ctl: could not start server' }]);
      const retried = await system.api('POST', `/api/jobs/${dead.body[0].id}/retry`);
      expect(retried.status).toBe(202);
      expect((await system.api('GET', '/api/jobs/dead')).body).toEqual([]);
      const { rows } = await db.pool.query('select attempts, dead_at from jobs');
      expect(rows).toEqual([{ attempts: 0, dead_at: null }]);
    } finally {
      await system.stop();
      await db.drop();
    }
  });
});

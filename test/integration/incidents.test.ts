import { randomUUID } from 'node:crypto';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { checkProviderNotices, RETIREMENT_LEAD_SECONDS } from '../../src/incidents/notices.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { FakePlatform } from '../support/platform.ts';
import { addonFetch, adminUrl, psql, startSystem, type System } from '../support/system.ts';

interface Entry {
  at: string;
  kind: string;
  source: string;
  summary: string;
}
interface Incident {
  id: string;
  entity: { id: string; kind: string; state: string };
  kind: string;
  state: string;
  reason: string;
  resolvedAt: string | null;
  escalations: { reason: string; detail: string }[];
  timeline: Entry[];
}

/**
 * A system of its own for a describe block, with a fake pager and customer webhook (`hooks`).
 * Read the fields inside tests: they are set once beforeAll has run.
 */
function useSystemWithPager(env: Record<string, string> = {}): { db: TestDatabase; hooks: FakePlatform; system: System } {
  const ctx = {} as { db: TestDatabase; hooks: FakePlatform; system: System };
  beforeAll(async () => {
    ctx.db = await createTestDatabase();
    ctx.hooks = new FakePlatform();
    await ctx.hooks.start();
    ctx.system = await startSystem(ctx.db.url, ['web', 'worker', 'clock'], { PAGER_WEBHOOK_URL: `${ctx.hooks.url}/pager`, ...env });
  });
  afterAll(async () => {
    await ctx.system?.stop();
    await ctx.hooks?.stop();
    await ctx.db?.drop();
  });
  return ctx;
}

function pidOf(system: System, serverId: string): Promise<number> {
  return readFile(path.join(system.config.home, 'servers', serverId, 'data', 'postmaster.pid'), 'utf8').then((s) =>
    Number(s.split('\n')[0]),
  );
}

async function availableServer(system: System): Promise<string> {
  const id = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
  await waitFor('the server to be available', async () => (await system.api('GET', `/api/servers/${id}`)).body.state === 'available');
  return id;
}

const incidentsOf = async (system: System, entityId: string): Promise<Incident[]> =>
  ((await system.api('GET', '/api/incidents')).body as Incident[]).filter((i) => i.entity.id === entityId);
const incident = async (system: System, id: string): Promise<Incident> => (await system.api('GET', `/api/incidents/${id}`)).body;
const pages = (hooks: FakePlatform) =>
  hooks.callsTo('POST', '/pager').map(
    (c) =>
      JSON.parse(c.body) as {
        event_action: string;
        dedup_key: string;
        payload: { custom_details: { escalations: { reason: string }[] } };
      },
  );

describe('incidents follow the machines, and page a human only when they must', () => {
  const ctx = useSystemWithPager();

  it('opens an incident when a server is killed, shows the way back, and resolves it without paging', async () => {
    const { system, hooks } = ctx;
    const id = await availableServer(system);
    process.kill(await pidOf(system, id), 'SIGKILL');

    const [opened] = await waitFor('an incident to open', async () => {
      const found = await incidentsOf(system, id);
      return found.length > 0 ? found : undefined;
    });
    expect(opened).toMatchObject({ kind: 'trouble', reason: 'server unreachable', entity: { id, kind: 'server' } });
    const resolved = await waitFor('the incident to resolve', async () => {
      const i = await incident(system, opened!.id);
      return i.state === 'resolved' ? i : undefined;
    });
    expect(resolved.resolvedAt).not.toBeNull();
    expect(resolved.escalations).toEqual([]);
    const kinds = new Set(resolved.timeline.map((e) => e.kind));
    expect(kinds).toEqual(new Set(['observation', 'transition', 'job']));
    const server = resolved.timeline.filter((e) => e.source === 'server' && e.kind === 'transition').map((e) => e.summary);
    expect(server.map((s) => s.split(' on ')[0])).toEqual([
      'available → unreachable',
      'unreachable → restarting.running',
      'restarting.running → restarting.verifying',
      'restarting.verifying → available',
    ]);
    // The first failed probe can land before the kernel has finished off the killed
    // postmaster (alive=true, once in eight full runs); an observation after it sees it gone.
    const observed = resolved.timeline.filter((e) => e.kind === 'observation').map((e) => e.summary);
    expect(observed[0]).toMatch(/reachable=false/);
    expect(observed.some((o) => /reachable=false alive=false/.test(o))).toBe(true);
    expect(resolved.timeline.some((e) => e.kind === 'job' && /^restart done in \d+ ms/.test(e.summary))).toBe(true);
    const times = resolved.timeline.map((e) => e.at);
    expect([...times].sort()).toEqual(times);
    // The incident's own life is on the timeline too, and nobody was paged.
    expect(
      resolved.timeline.filter((e) => e.source === 'incident' && e.kind === 'transition').map((e) => e.summary.split(' on ')[0]),
    ).toEqual(['∅ → open', 'open → resolved']);
    expect(pages(hooks)).toEqual([]);
    // A second kill is a new incident: the first is over.
    expect(await incidentsOf(system, id)).toHaveLength(1);
  });

  it('escalates a job that throws with the "exception" reason, once, and resolves the page when an operator closes it', async () => {
    const { system, hooks, db } = ctx;
    const id = await availableServer(system);
    // Every job of this server now throws: its provider is one this process does not have.
    await db.pool.query(`update servers set provider = 'mars' where id = $1`, [id]);
    const paged = await waitFor('a page', async () =>
      pages(hooks).find((p) => p.payload.custom_details.escalations.some((e) => e.reason === 'exception')),
    );
    expect(paged.event_action).toBe('trigger');
    const [open] = await incidentsOf(system, id);
    expect(paged.dedup_key).toBe(open!.id);
    expect(open).toMatchObject({ state: 'escalated', reason: 'observe raised an error' });
    expect(open!.escalations).toEqual([
      expect.objectContaining({ reason: 'exception', detail: expect.stringMatching(/observe: server .* uses provider "mars"/) }),
    ]);

    // The observe job keeps failing and retrying: still one incident, one page.
    await waitFor('another failed attempt', async () => {
      const { rows } = await db.pool.query(`select attempts from jobs where entity_id = $1 and task = 'observe'`, [id]);
      return rows[0]?.attempts >= 2;
    });
    expect(await incidentsOf(system, id)).toHaveLength(1);
    expect(pages(hooks).filter((p) => p.dedup_key === open!.id)).toHaveLength(1);
    const timeline = (await incident(system, open!.id)).timeline;
    expect(timeline.some((e) => e.kind === 'job' && /^observe retry in \d+ ms .*mars/.test(e.summary))).toBe(true);
    expect(timeline.some((e) => e.kind === 'escalation' && e.summary.startsWith('escalated: exception'))).toBe(true);

    await db.pool.query(`update servers set provider = 'local' where id = $1`, [id]);
    expect((await system.api('POST', `/api/incidents/${open!.id}/resolve`)).status).toBe(202);
    await waitFor('the page to be resolved', async () =>
      pages(hooks).find((p) => p.dedup_key === open!.id && p.event_action === 'resolve'),
    );
    // The pager hears first; the page is recorded right after.
    const recorded = await waitFor('the resolve page on the timeline', async () => {
      const shown = (await incident(system, open!.id)).timeline.filter((e) => e.kind === 'page').map((e) => e.summary);
      return shown.length === 2 ? shown : undefined;
    });
    expect(recorded).toEqual(['page trigger', 'page resolve']);
  });

  it('tells the customer about scheduled maintenance before it, and restarts the server at the time', async () => {
    const { system, hooks } = ctx;
    const uuid = randomUUID();
    const provisioned = await addonFetch(system, 'POST', '/heroku/resources', { uuid, plan: 'shared', region: 'us' });
    const url = ((await provisioned.json()) as { config: { PGFLEET_URL: string } }).config.PGFLEET_URL;
    expect((await system.api('PUT', `/api/resources/${uuid}/notifications`, { url: `${hooks.url}/customer` })).status).toBe(200);
    const serverId = (await system.api('GET', `/api/resources/${uuid}`)).body.servers[0].id as string;
    const pidBefore = await pidOf(system, serverId);

    // The customer's webhook is down at first: the notice is retried until it is taken.
    hooks.failing = true;
    const at = new Date(Date.now() + 6000);
    const scheduled = await system.api('POST', `/api/resources/${uuid}/maintenance`, { at: at.toISOString() });
    expect(scheduled.status).toBe(201);
    expect(scheduled.body).toMatchObject({ kind: 'maintenance', state: 'scheduled', entity: { id: serverId, kind: 'server' } });
    await waitFor('a failed delivery', async () => hooks.callsTo('POST', '/customer')[0]);
    hooks.failing = false;

    const notice = await waitFor('the customer to be told', async () => hooks.callsTo('POST', '/customer')[1]);
    // The webhook has answered; the outbox row is marked right after.
    const outbox = await waitFor('the outbox to record the delivery', async () => {
      const { rows } = await ctx.db.pool.query(
        'select phase, attempts, delivered_at is not null as delivered, last_error from notifications where resource_id = $1',
        [uuid],
      );
      return rows[0]?.delivered ? rows : undefined;
    });
    expect(outbox).toEqual([{ phase: 'scheduled', attempts: 2, delivered: true, last_error: null }]);
    const told = JSON.parse(notice.body) as { phase: string; subject: string; body: string; resource_id: string };
    expect(told).toMatchObject({ phase: 'scheduled', resource_id: uuid });
    expect(told.body).toMatch(/will restart/);
    expect(Date.now()).toBeLessThan(at.getTime());

    const done = await waitFor(
      'the maintenance to be done',
      async () => {
        const i = await incident(system, scheduled.body.id);
        return i.state === 'resolved' ? i : undefined;
      },
      60_000,
    );
    const restart = done.timeline.find((e) => e.source === 'server' && e.summary.startsWith('available → maintaining.running'))!;
    expect(Date.parse(restart.at)).toBeGreaterThanOrEqual(at.getTime() - 1000);
    expect(await pidOf(system, serverId)).not.toBe(pidBefore);
    expect(await psql(url, 'select 1')).toBe('1');
    const phases = hooks.callsTo('POST', '/customer').map((c) => (JSON.parse(c.body) as { phase: string }).phase);
    expect(phases).toEqual(['scheduled', 'scheduled', 'done']);
    // A planned restart is not trouble: no other incident, no page.
    expect((await incidentsOf(system, serverId)).map((i) => i.kind)).toEqual(['maintenance']);
    expect(pages(hooks).filter((p) => p.dedup_key === done.id)).toEqual([]);
  });
});

describe('a provider retiring a host', () => {
  const ctx = useSystemWithPager();

  it('opens one scheduled incident from the notice, and moves off the host ahead of the date', async () => {
    const { system, db } = ctx;
    const id = await availableServer(system);
    const pid = await pidOf(system, id);
    // What an EC2 provider reports for a scheduled instance retirement: an hour and 2 s away.
    const notice = { retirement_at: new Date(Date.now() + (RETIREMENT_LEAD_SECONDS + 2) * 1000).toISOString() };
    for (let i = 0; i < 2; i++) await transaction(db.pool, (client) => checkProviderNotices(client, 'server', id, notice));
    const [retirement] = await incidentsOf(system, id);
    expect(await incidentsOf(system, id)).toHaveLength(1);
    expect(retirement).toMatchObject({ kind: 'retirement', state: 'scheduled', reason: 'provider retires the host' });
    const done = await waitFor(
      'the changeover',
      async () => {
        const i = await incident(system, retirement!.id);
        return i.state === 'resolved' ? i : undefined;
      },
      60_000,
    );
    expect(done.timeline.some((e) => e.summary.startsWith('available → maintaining.running'))).toBe(true);
    expect(await pidOf(system, id)).not.toBe(pid);
  });
});

describe('a condition no automation handles yet', () => {
  const ctx = useSystemWithPager();

  it('pages at once with "no_automation" when the WAL archive fails, and resolves when it works again', async () => {
    const { system, hooks, db } = ctx;
    const id = await availableServer(system);
    const admin = await adminUrl(db.pool, id);
    await psql(admin, 'alter system set archive_mode = on');
    await psql(admin, "alter system set archive_command = 'false'");
    // archive_mode needs a restart: a maintenance that runs now.
    const maintenance = await system.api('POST', `/api/servers/${id}/maintenance`, { at: new Date().toISOString() });
    await waitFor('the restart', async () => (await incident(system, maintenance.body.id)).state === 'resolved');
    await psql(admin, 'create table t (n int); insert into t values (1); select pg_switch_wal()');

    const trigger = await waitFor('a page', async () => pages(hooks).find((p) => p.event_action === 'trigger'));
    const [open] = (await incidentsOf(system, id)).filter((i) => i.kind === 'trouble');
    expect(open).toMatchObject({ reason: 'archive failing', state: 'escalated', entity: { state: 'available' } });
    expect(open!.escalations.map((e) => e.reason)).toEqual(['no_automation']);
    expect(trigger.dedup_key).toBe(open!.id);

    await psql(admin, "alter system set archive_command = 'true'");
    await psql(admin, 'select pg_reload_conf()');
    await waitFor('the incident to resolve', async () => (await incident(system, open!.id)).state === 'resolved');
    await waitFor('the resolve page', async () => pages(hooks).find((p) => p.event_action === 'resolve'));
    expect(pages(hooks).map((p) => p.event_action)).toEqual(['trigger', 'resolve']);
  });
});

describe('a server that cannot be fixed by automation', () => {
  const ctx = useSystemWithPager({ PGFLEET_STUCK_AFTER: '2' });

  it('escalates once as "stuck", pages one trigger, and one resolve after an operator fixes it', async () => {
    const { system, hooks } = ctx;
    const id = await availableServer(system);
    const conf = path.join(system.config.home, 'servers', id, 'data', 'postgresql.conf');
    const good = await readFile(conf, 'utf8');
    await appendFile(conf, "\nshared_buffers = 'a lot'\n");
    process.kill(await pidOf(system, id), 'SIGKILL');

    const trigger = await waitFor('a page', async () => pages(hooks)[0], 60_000);
    expect(trigger.event_action).toBe('trigger');
    const [open] = await incidentsOf(system, id);
    expect(open!.escalations.map((e) => e.reason)).toEqual(['stuck']);
    expect(open!.escalations[0]!.detail).toMatch(/for more than 2 s/);

    await waitFor('the server to be failed', async () => (await system.api('GET', `/api/servers/${id}`)).body.state === 'failed', 60_000);
    await writeFile(conf, good);
    const resolved = await waitFor(
      'the incident to resolve',
      async () => {
        const i = await incident(system, open!.id);
        return i.state === 'resolved' ? i : undefined;
      },
      60_000,
    );
    await waitFor('the resolve page', async () => pages(hooks).find((p) => p.event_action === 'resolve'));
    expect(pages(hooks).map((p) => `${p.event_action}:${p.dedup_key}`)).toEqual([`trigger:${open!.id}`, `resolve:${open!.id}`]);
    expect(resolved.escalations.map((e) => e.reason)).toEqual(['stuck']);
    const path_ = resolved.timeline
      .filter((e) => e.source === 'server' && e.kind === 'transition')
      .map((e) => e.summary.split(' on ')[0]!.split(' → ')[1]);
    expect(path_).toContain('failed.waiting');
    expect(path_.at(-1)).toBe('available');
  });
});

/**
 * Customers hear of trouble that lasts (here 8 s) and concerns their database. Before, an
 * 8 s blip on a shared server sent every tenant two notices, and an archive lagging behind
 * one tenant's big write told every tenant of the server its database was in trouble.
 */
describe('what customers are told', () => {
  const ctx = useSystemWithPager({ PGFLEET_NOTICE_GRACE: '8' });

  async function tenantWithWebhook(): Promise<{ id: string; url: string; serverId: string }> {
    const { system, hooks } = ctx;
    const id = randomUUID();
    await addonFetch(system, 'POST', '/heroku/resources', { uuid: id, plan: 'shared', region: 'us' });
    const url = await waitFor('the database', async () => {
      const { body } = await system.api('GET', `/api/resources/${id}`);
      return body.state === 'available' ? (body.config.PGFLEET_URL as string) : undefined;
    });
    expect((await system.api('PUT', `/api/resources/${id}/notifications`, { url: `${hooks.url}/customer/${id}` })).status).toBe(200);
    return { id, url, serverId: (await system.api('GET', `/api/resources/${id}`)).body.servers[0].id as string };
  }

  const told = (id: string) => ctx.hooks.callsTo('POST', `/customer/${id}`).map((c) => (JSON.parse(c.body) as { phase: string }).phase);
  const notices = async (id: string) =>
    (await ctx.db.pool.query<{ phase: string }>('select phase from notifications where resource_id = $1 order by id', [id])).rows.map(
      (r) => r.phase,
    );
  /** Until the incident's notice jobs (the delayed one among them) have run. */
  const settled = (incidentId: string) =>
    waitFor(
      "the incident's notices to have run",
      async () =>
        (await ctx.db.pool.query(`select 1 from jobs where entity_id = $1 and task = 'notify' and dead_at is null`, [incidentId]))
          .rowCount === 0,
      30_000,
    );

  it('does not tell a customer of a blip that automation fixed within the grace', async () => {
    const { system } = ctx;
    const { id, serverId } = await tenantWithWebhook();
    process.kill(await pidOf(system, serverId), 'SIGKILL');
    const [opened] = await waitFor('an incident', async () => {
      const found = (await incidentsOf(system, serverId)).filter((i) => i.kind === 'trouble');
      return found.length > 0 ? found : undefined;
    });
    await waitFor('it to resolve', async () => (await incident(system, opened!.id)).state === 'resolved');
    await settled(opened!.id);
    expect(await notices(id)).toEqual([]);
    expect(told(id)).toEqual([]);
  });

  it('tells the customer of trouble that lasts, and of its end', async () => {
    const { system } = ctx;
    const { id, serverId } = await tenantWithWebhook();
    const conf = path.join(system.config.home, 'servers', serverId, 'data', 'postgresql.conf');
    const good = await readFile(conf, 'utf8');
    await appendFile(conf, "\nshared_buffers = 'a lot'\n");
    process.kill(await pidOf(system, serverId), 'SIGKILL');
    await waitFor('the customer to be told', async () => told(id).includes('opened'), 60_000);
    await writeFile(conf, good);
    await waitFor('the customer to be told it is over', async () => told(id).includes('resolved'), 90_000);
    expect(told(id)).toEqual(['opened', 'resolved']);
  });

  it('pages the operator, not the tenants, for a condition on a server that serves them well', async () => {
    const { system, db, hooks } = ctx;
    const { id, serverId } = await tenantWithWebhook();
    const admin = await adminUrl(db.pool, serverId);
    await psql(admin, "alter system set archive_command = 'false'");
    await psql(admin, 'select pg_reload_conf()');
    await psql(admin, 'create table t (n int); insert into t values (1); select pg_switch_wal()');
    const open = await waitFor(
      'the archive to page',
      async () => (await incidentsOf(system, serverId)).find((i) => i.reason === 'archive failing' && i.state === 'escalated'),
      60_000,
    );
    await waitFor('the page', async () => pages(hooks).some((p) => p.dedup_key === open.id && p.event_action === 'trigger'));
    await settled(open.id);
    expect(await notices(id)).toEqual([]);
    await psql(admin, "alter system set archive_command = 'true'");
    await psql(admin, 'select pg_reload_conf()');
    await waitFor('the incident to resolve', async () => (await incident(system, open.id)).state === 'resolved', 60_000);
    await settled(open.id);
    expect(told(id)).toEqual([]);
  });
});

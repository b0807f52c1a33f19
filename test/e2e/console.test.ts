import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { escalateException } from '../../src/incidents/escalation.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { startSystem, TOKEN, type System } from '../support/system.ts';

const ARTIFACTS = path.resolve('test/artifacts');

describe('the operator console in a real browser', () => {
  let db: TestDatabase;
  let system: System;
  let browser: Browser;

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url);
    // Debian's chromium (scripts/test-prerequisites.sh installs it); as root it needs --no-sandbox.
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    await mkdir(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await system?.stop();
    await db?.drop();
  });

  it('signs in, shows the fleet live, opens an incident and finds its timeline', async () => {
    const id = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('the server to be available', async () => (await system.api('GET', `/api/servers/${id}`)).body.state === 'available');
    const pid = Number((await readFile(path.join(system.config.home, 'servers', id, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 'SIGKILL');
    const incidentId = await waitFor('the incident to resolve', async () => {
      const [i] = (await system.api('GET', '/api/incidents')).body as { id: string; state: string }[];
      return i?.state === 'resolved' ? i.id : undefined;
    });

    const page = await browser.newPage({ viewport: { width: 1366, height: 850 } });
    // Asking for a page first leads to the sign-in form; a wrong token is refused.
    await page.goto(`${system.running.url}/console`);
    expect(new URL(page.url()).pathname).toBe('/console/login');
    await page.fill('#token', 'not-the-token-at-all');
    await page.click('button[type=submit]');
    await page.waitForURL('**/console/login?failed*');
    expect(await page.locator('.login').innerText()).toContain('That token is not right.');
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${system.running.url}/console`);

    expect(await page.locator('h1').innerText()).toBe('Fleet');
    expect(await page.locator('[data-tile="servers"] b').textContent()).toBe('1');
    expect(await page.locator('main').innerText()).toContain(id);
    expect(await page.locator('main').innerText()).toContain('server unreachable');

    // The page keeps up without a reload: a second server appears in place.
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const second = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await page.locator(`a[href="/console/servers/${second}"]`).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);

    // Through to the incident, its timeline and the picture of the machines.
    await page.click(`a[href="/console/incidents/${incidentId}"]`);
    await page.waitForURL(`**/console/incidents/${incidentId}`);
    expect(await page.locator('h1').innerText()).toBe('server unreachable');
    const rows = page.locator('#timeline tbody tr');
    expect(await rows.count()).toBeGreaterThan(5);
    expect(await page.locator('#timeline').innerText()).toContain('available → unreachable');
    expect(await page.locator('#timeline').innerText()).toContain('restart done in');
    expect(await page.locator('.node.current').allTextContents()).toEqual(
      expect.arrayContaining([expect.stringMatching(/^resolved/), expect.stringMatching(/^available/)]),
    );
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-incident.png'), fullPage: true });

    // The server's own page draws its machine, with where each state can go.
    await page.click(`main a[href="/console/servers/${id}"]`);
    await page.waitForURL(`**/console/servers/${id}`);
    expect(await page.locator('.node[data-state="unreachable"] .to').innerText()).toContain('restarting');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-server.png'), fullPage: true });
    await page.close();
  });

  it('lets an operator resolve an escalated incident', async () => {
    const [server] = (await system.api('GET', '/api/servers')).body as { id: string }[];
    // An exception stays escalated until a human says otherwise (a condition would clear itself).
    await transaction(db.pool, (client) => escalateException(client, server!.id, 'observe', 'boom'));
    const [open] = ((await system.api('GET', '/api/incidents')).body as { id: string; reason: string; state: string }[]).filter(
      (i) => i.reason === 'observe raised an error',
    );
    expect(open?.state).toBe('escalated');
    const page = await browser.newPage();
    await page.goto(`${system.running.url}/console/incidents/${open!.id}`);
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`**/console/incidents/${open!.id}`);
    await page.click('button:has-text("Resolve")');
    await page.waitForURL(`**/console/incidents/${open!.id}`);
    expect(await page.locator('main p .state').first().innerText()).toBe('resolved');
    expect(await page.locator('#timeline').innerText()).toContain('escalated → resolved on resolve');
    await page.close();
  });

  it('lists dead jobs and retries one from the browser', async () => {
    await db.pool.query(
      `insert into jobs (task, attempts, last_error, dead_at) values ('restart', 10, 'gave up: connection refused', now())`,
    );
    const page = await browser.newPage();
    await page.goto(`${system.running.url}/console/login`);
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${system.running.url}/console`);
    await page.goto(`${system.running.url}/console/jobs`);
    expect(await page.locator('main').innerText()).toContain('gave up: connection refused');
    await page.click('button:has-text("Retry")');
    await page.waitForURL('**/console/jobs');
    expect(await page.locator('main').innerText()).toContain('No dead jobs.');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-jobs.png'), fullPage: true });
    await page.close();
  });
});

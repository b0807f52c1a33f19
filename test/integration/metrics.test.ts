import { execFile } from 'node:child_process';
import path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/db.ts';
import { useSystem } from '../support/system.ts';

interface Family {
  name: string;
  type: string;
  metrics: { labels?: Record<string, string>; value?: string }[];
}

/** promtool, as scripts/test-prerequisites.sh fetched it. */
function promtoolCheck(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(path.resolve('.cache/tools/promtool'), ['check', 'metrics'], (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    );
    child.stdin!.end(text);
  });
}

describe('/metrics', () => {
  const ctx = useSystem();

  it('exposes the fleet in Prometheus text format that promtool passes cleanly', async () => {
    const id = (await ctx.system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('the server to be available', async () => (await ctx.system.api('GET', `/api/servers/${id}`)).body.state === 'available');
    await waitFor('an observation', async () => (await ctx.system.api('GET', `/api/servers/${id}`)).body.observedAt);

    const res = await fetch(`${ctx.system.running.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const families = new Map((parsePrometheusTextFormat(text) as Family[]).map((f) => [f.name, f]));

    const value = (name: string, labels: Record<string, string>) =>
      families.get(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value;
    expect(families.get('pgfleet_entities')?.type).toBe('GAUGE');
    expect(value('pgfleet_entities', { machine: 'server', state: 'available' })).toBe('1');
    expect(families.get('pgfleet_queue_jobs')?.metrics.map((m) => `${m.labels!.queue}:${m.labels!.status}`)).toEqual(
      expect.arrayContaining(['default:ready', 'default:dead', 'observe:running', 'observe:scheduled']),
    );
    expect(Number(value('pgfleet_observation_age_seconds', { machine: 'server' }))).toBeLessThan(30);
    expect(value('pgfleet_pages_sent', { action: 'trigger' })).toBe('0');
    expect(families.get('pgfleet_incidents_open')?.type).toBe('GAUGE');
    expect(families.get('pgfleet_job_duration_seconds')?.type).toBe('HISTOGRAM');
    // (The parser drops a histogram's labels; the line itself says which task.)
    const provisions = /^pgfleet_job_duration_seconds_count\{queue="default",task="provision",outcome="done"\} (\d+)$/m.exec(text);
    expect(Number(provisions?.[1])).toBeGreaterThanOrEqual(1);

    expect(await promtoolCheck(text)).toEqual({ code: 0, out: '' });
  });
});

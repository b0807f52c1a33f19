import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.ts';

describe('logs', () => {
  it('redact secrets wherever they sit, and carry the job and entity on a job logger', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) });
    const job = log.child({ job: '42', entity: '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41' });
    job.info({ password: 'hunter2', server: { superuserPassword: 's3cret', url: 'postgres://u:pw@h/db' }, token: 'tok' }, 'ran');
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({
      job: '42',
      entity: '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41',
      msg: 'ran',
      password: '[redacted]',
      token: '[redacted]',
    });
    expect(line.server).toEqual({ superuserPassword: '[redacted]', url: '[redacted]' });
    expect(lines[0]).not.toMatch(/hunter2|s3cret|pw@|tok"/);
  });
});

describe('LOG_FORMAT=logfmt', () => {
  it('writes one logfmt line per entry, nested fields dotted, secrets still redacted', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) }, 'logfmt');
    log.child({ job: '7' }).warn({ err: new Error('connect ECONNREFUSED 127.0.0.1:5432'), password: 'hunter2' }, 'job failed');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^level=40 time=\d+ app=pgfleet job=7 err\.type=Error err\.message="connect ECONNREFUSED 127\.0\.0\.1:5432" err\.stack="Error: connect ECONNREFUSED[^"]*" password=\[redacted\] msg="job failed"\n$/,
    );
    expect(lines[0]).not.toContain('hunter2');
  });
});

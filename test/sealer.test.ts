import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';
import { Sealer } from '../src/sealer.ts';

describe('sealer', () => {
  const sealer = new Sealer(randomBytes(32));

  it('seals a credential so that only its key opens it, differently each time', () => {
    const a = sealer.seal('hunter2');
    const b = sealer.seal('hunter2');
    expect(a).not.toContain('hunter2');
    expect(a).not.toBe(b);
    expect(sealer.open(a)).toBe('hunter2');
    expect(() => new Sealer(randomBytes(32)).open(a)).toThrow(/does not open with this key/);
  });

  it('refuses a sealed value that was tampered with, and a value that was never sealed', () => {
    const [v, iv, tag, body] = sealer.seal('hunter2').split(':');
    const flipped = Buffer.from(body!, 'base64url');
    flipped[0] = flipped[0]! ^ 1;
    expect(() => sealer.open([v, iv, tag, flipped.toString('base64url')].join(':'))).toThrow(/does not open/);
    expect(() => sealer.open('hunter2')).toThrow(/not a sealed value/);
  });

  it('takes its key from PGFLEET_ENCRYPTION_KEY and names the variable when it is wrong', () => {
    expect(loadConfig({ PGFLEET_ENCRYPTION_KEY: randomBytes(32).toString('base64') }).encryptionKey).toHaveLength(32);
    expect(() => loadConfig({ PGFLEET_ENCRYPTION_KEY: 'c2hvcnQ=' })).toThrow(/PGFLEET_ENCRYPTION_KEY must be 32 random bytes in base64/);
  });
});

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../src/pg/ports.ts';
import { DirectoryStore } from '../../src/store/directory.ts';
import { openStore } from '../../src/store/open.ts';
import { S3Store } from '../../src/store/s3.ts';
import { startS3, type S3Server } from '../support/s3.ts';
import { storeContract } from './contract.ts';

storeContract('s3 on s3rver, which ignores If-None-Match', async () => {
  const s3 = await startS3();
  return { store: openStore(s3.storeUrl('t'), s3.env), cleanup: () => s3.stop() };
});

storeContract(
  's3 on s3rver answering If-None-Match as S3 does',
  async () => {
    const s3 = await startS3({ conditionalWrites: true });
    return { store: openStore(s3.storeUrl('t'), s3.env), cleanup: () => s3.stop() };
  },
  { exactlyOneWriter: true },
);

describe('S3Store', () => {
  let conditional: S3Server;
  let plain: S3Server;

  beforeAll(async () => {
    conditional = await startS3({ conditionalWrites: true });
    plain = await startS3();
  });
  afterAll(async () => {
    await conditional?.stop();
    await plain?.stop();
  });

  it('stores keys under its prefix, and lists only its own', async () => {
    const a = openStore(conditional.storeUrl('a'), conditional.env);
    const b = openStore(conditional.storeUrl('b/c/'), conditional.env);
    const root = openStore(conditional.url, conditional.env);
    await a.putIfAbsent('k', Buffer.from('in a'), {});
    await b.putIfAbsent('k', Buffer.from('in b/c'), {});
    expect(await a.list('')).toEqual(['k']);
    expect(await b.list('')).toEqual(['k']);
    expect(await root.list('')).toEqual(['a/k', 'b/c/k']);
    expect((await root.get('b/c/k'))?.body.toString()).toBe('in b/c');
    expect(await a.head('c/k')).toBeUndefined();
  });

  it('lists page after page', async () => {
    // s3rver cannot: it makes its continuation tokens with DES, which Node's OpenSSL 3 refuses,
    // so a listing of more than 1000 keys answers 500. The pages here are the SDK's answers.
    const store = new S3Store({
      bucket: 'b-1',
      prefix: 'p',
      region: 'us-east-1',
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
    }) as any;
    const pages: Record<string, { Contents: { Key: string }[]; IsTruncated: boolean; NextContinuationToken?: string }> = {
      first: { Contents: [{ Key: 'p/wal/3' }, { Key: 'p/wal/1' }], IsTruncated: true, NextContinuationToken: 'two' },
      two: { Contents: [{ Key: 'p/wal/2' }], IsTruncated: true, NextContinuationToken: 'three' },
      three: { Contents: [{ Key: 'p/wal/0' }], IsTruncated: false },
    };
    const asked: unknown[] = [];
    vi.spyOn(store.client, 'send').mockImplementation(async (command: any) => {
      asked.push(command.input);
      return pages[command.input.ContinuationToken ?? 'first'];
    });
    expect(await store.list('wal/')).toEqual(['wal/0', 'wal/1', 'wal/2', 'wal/3']);
    expect(asked).toEqual([
      { Bucket: 'b-1', Prefix: 'p/wal/', ContinuationToken: undefined },
      { Bucket: 'b-1', Prefix: 'p/wal/', ContinuationToken: 'two' },
      { Bucket: 'b-1', Prefix: 'p/wal/', ContinuationToken: 'three' },
    ]);
  });

  it('reports the existing object when the server refuses the write with 412', async () => {
    const store = openStore(conditional.storeUrl('refused'), conditional.env);
    await store.putIfAbsent('k', Buffer.from('first'), { sha256: 'one' });
    // As if another writer created it between this writer's look and its write.
    const head = vi.spyOn(store, 'head').mockResolvedValueOnce(undefined);
    expect(await store.putIfAbsent('k', Buffer.from('second'), { sha256: 'two' })).toEqual({
      outcome: 'exists',
      existing: { key: 'k', size: 5, metadata: { sha256: 'one' } },
    });
    expect(head).toHaveBeenCalledTimes(2);
    expect((await store.get('k'))?.body.toString()).toBe('first');
  });

  it('on a server that ignores If-None-Match, relies on its look first: the race it leaves', async () => {
    const store = openStore(plain.storeUrl('ignored'), plain.env);
    await store.putIfAbsent('k', Buffer.from('first'), { sha256: 'one' });
    expect(await store.putIfAbsent('k', Buffer.from('second'), { sha256: 'two' })).toMatchObject({ outcome: 'exists' });
    vi.spyOn(store, 'head').mockResolvedValueOnce(undefined);
    // s3rver overwrites: this is why the look comes first, and why callers compare checksums.
    expect(await store.putIfAbsent('k', Buffer.from('second'), { sha256: 'two' })).toEqual({ outcome: 'written' });
    expect(await store.get('k')).toEqual({ body: Buffer.from('second'), metadata: { sha256: 'two' } });
  });

  it('says where it is, and never a credential', () => {
    const env = {
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLEKEYID1234',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI-secret-value',
      AWS_SESSION_TOKEN: 'session-token-value',
    };
    const store = openStore('s3://some-bucket/pg/wal?region=eu-west-1&endpoint=https://s3.example.test:9000', env);
    expect(store.description).toBe('s3://some-bucket/pg/wal/ at https://s3.example.test:9000');
    for (const secret of Object.values(env)) expect(store.description).not.toContain(secret);
    const direct = new S3Store({
      bucket: 'b-1',
      prefix: '',
      region: 'us-east-1',
      endpoint: 'http://user:pass-word@127.0.0.1:9000/',
      credentials: { accessKeyId: 'id', secretAccessKey: 'pass-word' },
    });
    expect(direct.description).toBe('s3://b-1/ at http://127.0.0.1:9000');
    expect(new S3Store({ bucket: 'b-1', prefix: 'p', region: 'ap-south-1' }).description).toBe('s3://b-1/p/ in ap-south-1');
  });

  it('names the object and what to check when the credentials are wrong, without the secret', async () => {
    const store = openStore(conditional.storeUrl('t'), { AWS_ACCESS_KEY_ID: 'NOT-A-KEY', AWS_SECRET_ACCESS_KEY: 'very-secret-value' });
    const err = await store.get('some/key').then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(
      /cannot read s3:\/\/pgfleet-test\/t\/some\/key .*InvalidAccessKeyId \(HTTP 403\).*check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY/,
    );
    expect(err?.message).not.toContain('very-secret-value');
    await expect(store.putIfAbsent('k', Buffer.from('x'), {})).rejects.toThrow(
      /cannot look up s3:\/\/pgfleet-test\/t\/k .*: HTTP 403; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
    );
  });

  it('names the bucket when it does not exist', async () => {
    const store = openStore(conditional.url.replace('pgfleet-test', 'no-such-bucket'), conditional.env);
    await expect(store.list('')).rejects.toThrow(
      /cannot list s3:\/\/no-such-bucket\/.*NoSuchBucket.*check that bucket "no-such-bucket" exists/,
    );
    await expect(store.putIfAbsent('k', Buffer.from('x'), {})).rejects.toThrow(/cannot write s3:\/\/no-such-bucket\/k .*NoSuchBucket/);
    await expect(store.get('k')).rejects.toThrow(/NoSuchBucket/);
  });

  it('says to check the endpoint when nothing answers there', async () => {
    const port = await freePort();
    const store = openStore(`s3://pgfleet-test/t?region=us-east-1&endpoint=http://127.0.0.1:${port}&path_style=true`, conditional.env);
    await expect(store.list('')).rejects.toThrow(/cannot list s3:\/\/pgfleet-test\/t\/ .*ECONNREFUSED.*check the endpoint URL/);
  });
});

describe('openStore', () => {
  const env = {};

  it('opens a directory from a file URL or an absolute path', () => {
    for (const [url, dir] of [
      ['file:///var/lib/pgfleet/store', '/var/lib/pgfleet/store'],
      ['file:///var/lib/pgfleet/store/', '/var/lib/pgfleet/store'],
      ['file:///var/lib/with%20space', '/var/lib/with space'],
      ['file://localhost/srv/store', '/srv/store'],
      ['/srv/store', '/srv/store'],
      ['/srv//store/../store/', '/srv/store'],
    ] as const) {
      const store = openStore(url, env);
      expect(store, url).toBeInstanceOf(DirectoryStore);
      expect(store.description, url).toBe(`directory ${dir}`);
    }
  });

  it('opens a bucket from an s3 URL, with its prefix, region, endpoint and path style', async () => {
    const full = openStore('s3://pg-archive/fleet/eu?region=eu-central-1&endpoint=http://127.0.0.1:9000&path_style=true', {
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'secret',
    }) as any;
    expect(full).toBeInstanceOf(S3Store);
    expect(full.description).toBe('s3://pg-archive/fleet/eu/ at http://127.0.0.1:9000');
    expect(full.prefix).toBe('fleet/eu/');
    expect(await full.client.config.region()).toBe('eu-central-1');
    expect(full.client.config.forcePathStyle).toBe(true);
    expect(await full.client.config.credentials()).toMatchObject({ accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'secret' });

    const bare = openStore('s3://pg-archive', {}) as any;
    expect(bare.description).toBe('s3://pg-archive/ in us-east-1');
    expect(bare.prefix).toBe('');
    expect(bare.client.config.forcePathStyle).toBe(false);

    expect(openStore('s3://pg-archive/x/?path_style=false', { AWS_REGION: 'sa-east-1' }).description).toBe(
      's3://pg-archive/x/ in sa-east-1',
    );
  });

  it('refuses anything else, saying which forms it takes, and never echoes a secret', () => {
    for (const url of [
      'relative/dir',
      '',
      'http://example.test/store',
      'gs://bucket/prefix',
      'file://otherhost/srv/store',
      'file:///srv/store?x=1',
      's3://',
      's3://Bad_Bucket/x',
      's3://bucket:9000/x',
      's3://pg-archive/a%2F..%2Fb',
      's3://pg-archive?regoin=us-east-1',
      's3://pg-archive?path_style=yes',
      's3://pg-archive?endpoint=ftp://127.0.0.1',
      's3://pg-archive?endpoint=not a url',
      's3://AKIAEXAMPLE:topsecret@pg-archive/x',
      's3://pg-archive?endpoint=http://user:topsecret@127.0.0.1:9000',
    ]) {
      let message = '';
      try {
        openStore(url, env);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, url).toMatch(/file:\/\/\/absolute\/path; \/absolute\/path; s3:\/\/bucket\[\/prefix\]/);
      expect(message, url).not.toContain('topsecret');
    }
  });
});

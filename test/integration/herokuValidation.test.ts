import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ADDON_BASIC, ADDON_PASSWORD, useSystem } from '../support/system.ts';

describe('the add-on API refuses bad input with a clear 4xx and changes nothing', () => {
  // Web only: no worker or clock, so any row change can only come from the request.
  const ctx = useSystem(['web'], {
    ADDON_SSO_SALT: 'sso-salt-0123456789abcdef',
    HEROKU_API_URL: 'https://api.heroku.com',
    PGFLEET_ANSWER_WITHIN: '1',
  });

  const send = async (method: string, route: string, body: unknown, authorization = ADDON_BASIC) => {
    const res = await fetch(`${ctx.system.running.url}${route}`, {
      method,
      headers: { authorization, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as { message?: string } };
  };
  const good = { uuid: randomUUID(), plan: 'shared', region: 'us', callback_url: 'https://api.heroku.com/addons/x', options: {} };
  const wrong = `Basic ${Buffer.from('pgfleet:not-the-password').toString('base64')}`;
  const id = randomUUID();

  const cases: [string, string, string, unknown, number, RegExp, string?][] = [
    ['a wrong password on POST', 'POST', '/heroku/resources', good, 401, /HTTP Basic/, wrong],
    ['a wrong password on PUT', 'PUT', `/heroku/resources/${id}`, { plan: 'shared' }, 401, /HTTP Basic/, wrong],
    ['a wrong password on DELETE', 'DELETE', `/heroku/resources/${id}`, {}, 401, /HTTP Basic/, wrong],
    [
      'another add-on id',
      'POST',
      '/heroku/resources',
      good,
      401,
      /HTTP Basic/,
      `Basic ${Buffer.from(`other:${ADDON_PASSWORD}`).toString('base64')}`,
    ],
    ['no credentials and a malformed body', 'POST', '/heroku/resources', '{"uuid":', 401, /HTTP Basic/, ''],
    ['malformed JSON', 'POST', '/heroku/resources', '{"uuid": "x", "plan":', 400, /JSON/],
    ['a JSON array', 'POST', '/heroku/resources', [good], 400, /JSON object/],
    ['no uuid', 'POST', '/heroku/resources', { ...good, uuid: undefined }, 422, /^body\/uuid is missing: it must be a UUID/],
    ['a uuid that is not one', 'POST', '/heroku/resources', { ...good, uuid: "1' or '1'='1" }, 422, /^body\/uuid must be a UUID/],
    ['no plan', 'POST', '/heroku/resources', { ...good, plan: undefined }, 422, /^body\/plan is missing: it must be one of "shared"/],
    [
      'an unknown plan',
      'POST',
      '/heroku/resources',
      { ...good, plan: 'gold' },
      422,
      /^body\/plan must be one of "shared", .*; it is "gold"$/,
    ],
    [
      'SQL in the plan',
      'POST',
      '/heroku/resources',
      { ...good, plan: "shared'; drop table resources; --" },
      422,
      /^body\/plan must be one of/,
    ],
    ['an unknown region', 'POST', '/heroku/resources', { ...good, region: 'mars' }, 422, /no region "mars": use "us", "eu"/],
    [
      'quotes and SQL in the name',
      'POST',
      '/heroku/resources',
      { ...good, name: `x'; drop database "pgfleet"; --` },
      422,
      /^body\/name may hold only/,
    ],
    [
      'a callback outside the platform',
      'POST',
      '/heroku/resources',
      { ...good, callback_url: 'http://169.254.169.254/latest' },
      422,
      /callback_url" must point into the platform API/,
    ],
    [
      'an unknown option',
      'POST',
      '/heroku/resources',
      { ...good, options: { fork: 'x' } },
      422,
      /^body\/options has an unknown field "fork": it takes only "follow"$/,
    ],
    [
      'an oauth_grant without a code',
      'POST',
      '/heroku/resources',
      { ...good, oauth_grant: { type: 'authorization_code' } },
      422,
      /oauth_grant/,
    ],
    ['an oversized body', 'POST', '/heroku/resources', { ...good, pad: 'x'.repeat(100_000) }, 413, /too large/],
    [
      'a plan change to an unknown plan',
      'PUT',
      `/heroku/resources/${id}`,
      { plan: 'gold' },
      422,
      /^body\/plan must be one of .*; it is "gold"$/,
    ],
    ['a plan change of an unknown resource', 'PUT', `/heroku/resources/${id}`, { plan: 'shared' }, 404, /no resource/],
    ['deprovisioning an unknown resource', 'DELETE', `/heroku/resources/${id}`, {}, 404, /no resource/],
    [
      'a plan change of a resource id that is not a UUID',
      'PUT',
      '/heroku/resources/not-a-uuid',
      { plan: 'shared' },
      404,
      /^params\/id must be a UUID: resource ids are the UUIDs the platform sent; it is "not-a-uuid"$/,
    ],
    [
      'a region that is not a string',
      'POST',
      '/heroku/resources',
      { ...good, region: 7 },
      422,
      /^body\/region must be a region name: use "us"/,
    ],
  ];

  it.each(cases)('%s', async (_name, method, route, body, status, message, authorization) => {
    const before = await ctx.db.pool.query(
      `select (select count(*) from resources) r, (select count(*) from servers) s,
         (select count(*) from jobs) j, (select count(*) from machines) m`,
    );
    const res = await send(method, route, body, authorization);
    expect(res.status).toBe(status);
    expect(res.body.message).toMatch(message);
    const after = await ctx.db.pool.query(
      `select (select count(*) from resources) r, (select count(*) from servers) s,
         (select count(*) from jobs) j, (select count(*) from machines) m`,
    );
    expect(after.rows).toEqual(before.rows);
  });

  it('accepts a legacy v1 body and unknown extra fields', async () => {
    const legacy = {
      heroku_id: 'app123@heroku.com',
      plan: 'shared',
      region: 'amazon-web-services::eu-west-1',
      callback_url: 'https://api.heroku.com/vendor/apps/app123%40heroku.com',
      logplex_token: 't.abc',
      options: {},
      uuid: randomUUID(),
      something_new: { x: 1 },
    };
    const res = await send('POST', '/heroku/resources', legacy);
    // Without a worker it cannot finish in time: answered 202, to be handed over later.
    expect(res.status).toBe(202);
    const { rows } = await ctx.db.pool.query('select plan, region, aws_region, heroku_id from resources where id = $1', [legacy.uuid]);
    expect(rows).toEqual([
      { plan: 'shared', region: 'amazon-web-services::eu-west-1', aws_region: 'eu-west-1', heroku_id: 'app123@heroku.com' },
    ]);
  });
});

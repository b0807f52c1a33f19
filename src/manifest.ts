import { configVarPrefix, type Addon } from './config.ts';
import { PLANS } from './plans.ts';

/**
 * The `addon-manifest.json` a platform needs to call this deployment: the add-on id, the
 * credentials it sends, the SSO salt, the config vars it will receive and where to call.
 * Production URLs come from PGFLEET_PUBLIC_URL; test URLs point at this machine.
 */
export function addonManifest(addon: Addon, localPort: number): Record<string, unknown> {
  const prefix = configVarPrefix(addon.id);
  const local = `http://localhost:${localPort}`;
  const production = addon.publicUrl ?? local;
  return {
    id: addon.id,
    name: addon.id,
    api: {
      config_vars_prefix: prefix,
      // Every plan hands out the URL and the pooled URL; the `ha` plan also a read-only one.
      config_vars: [`${prefix}_URL`, `${prefix}_CONNECTION_POOL_URL`, `${prefix}_READONLY_URL`],
      password: addon.password,
      sso_salt: addon.ssoSalt,
      regions: ['us', 'eu'],
      requires: [],
      production: { base_url: `${production}/heroku/resources`, sso_url: `${production}/sso/login` },
      test: { base_url: `${local}/heroku/resources`, sso_url: `${local}/sso/login` },
      version: '3',
    },
    plans: PLANS.map((p) => ({ name: p.name, description: p.description })),
  };
}

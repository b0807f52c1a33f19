/**
 * `pgfleet credentials …`: a resource's credentials through the operator API, like Heroku's
 * `pg:credentials`. A password is printed only by the commands that make one (create, and
 * rotate of a named credential); the owner's new URL goes to the platform as its config.
 */
import type { CliTools } from '../processes/cliTools.ts';

interface Credential {
  name: string;
  role: string;
  privileges: string;
  state: string;
  url?: string;
  pooledUrl?: string;
}

const USAGE = `usage: pgfleet credentials <resource>
       pgfleet credentials create <resource> <name> [--read-only]
       pgfleet credentials rotate <resource> [<name>]
       pgfleet credentials destroy <resource> <name>`;

const path = (resource: string, ...rest: string[]) =>
  ['/resources', resource, 'credentials', ...rest].map((p) => (p.startsWith('/') ? p : encodeURIComponent(p))).join('/');

function secret(c: Credential, what: string): string {
  return [
    `${what} ${c.name} (${c.role}, ${c.privileges}, ${c.state}); this is the only time its password is shown:`,
    `  url:    ${c.url ?? '-'}`,
    `  pooled: ${c.pooledUrl ?? '-'}`,
  ].join('\n');
}

export async function credentialsCommand(args: string[], cli: CliTools): Promise<number> {
  const readOnly = args.includes('--read-only');
  const [first, ...rest] = args.filter((a) => a !== '--read-only');
  if (!first) throw cli.usage(USAGE);
  const [resource, name] = rest;
  switch (first) {
    case 'create': {
      if (!resource || !name) throw cli.usage(USAGE);
      const c = (await cli.api('POST', path(resource), { name, privileges: readOnly ? 'read' : 'write' })) as Credential;
      cli.print(c, () => secret(c, 'created'));
      return 0;
    }
    case 'rotate': {
      if (!resource) throw cli.usage(USAGE);
      if (!name) {
        const r = (await cli.api('POST', path(resource, 'rotate'))) as { id: string; state: string };
        cli.print(
          r,
          () =>
            `rotating the owner's password of ${r.id}: sessions logged in keep running, ` +
            'and the platform gets the new URL once the server has it',
        );
        return 0;
      }
      const c = (await cli.api('POST', path(resource, name, 'rotate'))) as Credential;
      cli.print(c, () => secret(c, 'rotating'));
      return 0;
    }
    case 'destroy': {
      if (!resource || !name) throw cli.usage(USAGE);
      const c = (await cli.api('DELETE', path(resource, name))) as Credential;
      cli.print(c, () => `destroying ${c.name}: its sessions end and it logs in no more`);
      return 0;
    }
    default: {
      if (rest.length > 0) throw cli.usage(USAGE);
      const rows = (await cli.api('GET', path(first))) as Credential[];
      cli.print(rows, () =>
        cli.table([['name', 'role', 'privileges', 'state'], ...rows.map((c) => [c.name, c.role, c.privileges, c.state])]),
      );
      return 0;
    }
  }
}

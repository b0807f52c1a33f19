import type { Config } from '../config.ts';
import { existingOperatorToken } from '../control.ts';

/** What an operator command of `pgfleet` is given: the operator API, and how to answer. */
export interface CliTools {
  api(method: string, route: string, body?: unknown): Promise<unknown>;
  /** As JSON with --json, else as `human` writes it. */
  print(value: unknown, human: () => string): void;
  table(rows: string[][]): string;
  usage(message: string): Error;
}

/** A command refused or answered with an error: printed as `pgfleet: <message>`, exit code 1. */
export class CliError extends Error {}

async function api(config: Config, method: string, route: string, body?: unknown): Promise<unknown> {
  const base = process.env.PGFLEET_API_URL ?? `http://127.0.0.1:${config.port}`;
  // A client only reads the token: one it made up would open nothing, and would be kept.
  const token = existingOperatorToken(config.home, config.operatorToken);
  if (!token)
    throw new CliError(`no operator token: set OPERATOR_TOKEN, or PGFLEET_HOME to the home of \`pgfleet start\` (${config.home} has none)`);
  let res: Response;
  try {
    res = await fetch(`${base}/api${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new CliError(`cannot reach pgfleet at ${base}: is \`pgfleet start\` running? (set PGFLEET_API_URL to point elsewhere)`);
  }
  const payload = (await res.json().catch(() => ({}))) as { error?: string };
  if (!res.ok) throw new CliError(payload.error ?? `${method} ${route} answered ${res.status}`);
  return payload;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The tools for this configuration; `json` (the --json flag) makes `print` write the API's answer as it came. */
export function cliTools(config: Config, json: boolean): CliTools {
  return {
    api: (method, route, body) => api(config, method, route, body),
    print: (value, human) => process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`),
    table,
    usage: (message) => new CliError(message),
  };
}

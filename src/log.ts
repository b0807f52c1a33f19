import logfmt from 'logfmt';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export type LogFormat = 'json' | 'logfmt';

/** Every field that may hold a credential, wherever it sits in a log line. */
const SECRET_PATHS = [
  'password',
  '*.password',
  'superuserPassword',
  '*.superuserPassword',
  'token',
  '*.token',
  'url',
  '*.url',
  'databaseUrl',
  '*.databaseUrl',
  'req.headers.authorization',
  'headers.authorization',
];

/** `{err: {type, message}}` becomes `err.type=… err.message=…`: logfmt has no nesting. */
function flatten(value: Record<string, unknown>, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(value)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, key, out);
    else out[key] = Array.isArray(v) ? JSON.stringify(v) : v;
  }
  return out;
}

/** pino's JSON lines rewritten as logfmt lines, for log routers that want them. */
export function logfmtStream(destination: { write(line: string): unknown }): DestinationStream {
  return { write: (line: string) => void destination.write(`${logfmt.stringify(flatten(JSON.parse(line) as Record<string, unknown>))}\n`) };
}

export function createLogger(level: string, destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const out = format === 'logfmt' ? logfmtStream(destination ?? process.stdout) : destination;
  return pino({ level, base: { app: 'pgfleet' }, redact: { paths: SECRET_PATHS, censor: '[redacted]' } }, out);
}

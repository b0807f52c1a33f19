import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

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

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { app: 'pgfleet' }, redact: { paths: SECRET_PATHS, censor: '[redacted]' } }, destination);
}

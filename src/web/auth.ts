import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.ts';

/** Whether a secret someone sent is the one expected, in time that does not tell how much of it was right. */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** An `onRequest` hook that lets through only requests bearing the operator token. */
export function requireOperator(token: string) {
  return async (req: FastifyRequest) => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!match?.[1] || !sameSecret(match[1], token)) {
      throw new HttpError(401, 'missing or wrong operator token: send the header "Authorization: Bearer $OPERATOR_TOKEN"');
    }
  };
}

/** 127.0.0.0/8 and ::1, also as an IPv4-mapped IPv6 address. */
export function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (/^(::ffff:)?127\./.test(address) || address === '::1');
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
}

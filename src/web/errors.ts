import type { FastifyReply, FastifyRequest } from 'fastify';

/** An error whose message tells the caller what to fix, with the status to send. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** What each audience is told of a failure of ours: never its internals, which go to the log. */
export const INTERNAL_ERROR = {
  /** Operators (the JSON API, the console) can read the log. */
  operator: 'internal error; the operator log has the details',
  /** A platform's user cannot, and can only try again. */
  customer: 'pgfleet could not do that just now; try again shortly',
} as const;

/** Fastify's own refusals, said as what to fix. */
const FASTIFY_REFUSALS: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'send the body as JSON with "Content-Type: application/json"',
  FST_ERR_CTP_BODY_TOO_LARGE: 'the body is too large: what this route takes is a small JSON object or form',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'the body is empty but Content-Type says JSON: send a JSON object',
};

export type SendError = (req: FastifyRequest, reply: FastifyReply, status: number, message: string) => FastifyReply;

/**
 * The web process's one mapping of an error to an answer: a 4xx carries a message that says
 * what to fix, a 5xx is logged and told only as `internal`. Each surface sends the answer in
 * its own shape (`{error}` for the operator API, `{message}` for the platform, a page for a
 * browser).
 */
export function errorHandler(internal: string, send: SendError) {
  return (err: Error & { statusCode?: number; code?: string }, req: FastifyRequest, reply: FastifyReply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      req.log.error({ err, route: req.routeOptions.url }, 'request failed');
      return send(req, reply, status, internal);
    }
    return send(req, reply, status, (err.code && FASTIFY_REFUSALS[err.code]) ?? err.message);
  };
}

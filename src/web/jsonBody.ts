import type { FastifyInstance } from 'fastify';
import { HttpError } from './errors.ts';

/** Our bodies are at most three deep; 32 leaves room and stops a stack overflow long before it. */
const MAX_JSON_DEPTH = 32;

/** Whether brackets outside strings nest deeper than `max`: one pass, no recursion. */
function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Fastify's JSON parser (which refuses `__proto__`), behind two checks of our own: a body
 * nested too deep is a 400 before anything recurses through it, and an empty body is no
 * body for a DELETE, whose callers may well send `Content-Type: application/json` with it.
 */
export function jsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body as string;
    if (text.trim() === '' && req.method === 'DELETE') return done(null, undefined);
    if (nestedDeeperThan(text, MAX_JSON_DEPTH))
      return done(new HttpError(400, `the JSON is nested more than ${MAX_JSON_DEPTH} deep: send a flat object`), undefined);
    return parse(req, text, done);
  });
}

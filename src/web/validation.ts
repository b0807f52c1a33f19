import AjvCompiler from '@fastify/ajv-compiler';
import type { FastifyInstance, FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import { HttpError } from './errors.ts';

/**
 * How routes check what they are sent: fastify route schemas (JSON Schema), and one place
 * that turns a schema's refusal into the 4xx that says what to fix.
 *
 * A schema's `description` is the rule a value breaks, written to follow the field's name
 * ("must be a UUID such as …"), and its `examples` show a whole body; both are standard
 * JSON Schema annotations, so the answer and the schema cannot drift apart.
 */

/** A UUID in either case; handlers lower-case it. */
const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
export const UUID = new RegExp(UUID_PATTERN);
const EXAMPLE_UUID = '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41';

export function uuid(description = `must be a UUID such as ${EXAMPLE_UUID}`) {
  return { type: 'string', pattern: UUID_PATTERN, description } as const;
}

/** A route whose path names an entity by `:id`. */
export const idParams = { type: 'object', required: ['id'], properties: { id: uuid() } } as const;
export interface IdParams {
  id: string;
}

/** A dead job's id: a bigint. */
export const jobParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^\\d{1,18}$', description: 'must be the number of a dead job' } },
} as const;

interface Schema {
  type?: string | string[];
  description?: string;
  enum?: unknown[];
  properties?: Record<string, Schema>;
  examples?: unknown[];
}

/** Ajv's error with `verbose` on: the value refused and the schema that refused it. */
interface Refusal extends FastifySchemaValidationError {
  data?: unknown;
  parentSchema?: Schema;
}

const quoted = (values: unknown[]) => values.map((v) => JSON.stringify(v)).join(', ');

function ruleOf(schema: Schema | undefined): string | undefined {
  if (schema?.description) return schema.description;
  if (schema?.enum) return `must be one of ${quoted(schema.enum)}`;
  return schema?.type && `must be ${[schema.type].flat().join(' or ')}`;
}

/** The value refused, short enough to read whatever was sent. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

/**
 * The 4xx for a request a schema refused, naming the field and what it must be:
 * `body/plan must be one of "shared", …; it is "gold"`. A body that is not an object at
 * all is a 400; ajv stops at the first refusal (`allErrors` off), so there is one message.
 */
export function refusal(errors: FastifySchemaValidationError[], part: string): HttpError {
  const error = errors[0] as Refusal;
  // A path that names nothing is not found; a body or query that breaks a rule cannot be done as sent.
  const status = part === 'params' ? 404 : 422;
  const where = `${part}${error.instancePath}`;
  const schema = error.parentSchema ?? {};
  if (error.keyword === 'type' && error.instancePath === '' && part === 'body') {
    const example = schema.examples?.[0];
    return new HttpError(400, `send a JSON object${example === undefined ? '' : ` such as ${JSON.stringify(example)}`}`);
  }
  if (error.keyword === 'required') {
    const field = String(error.params.missingProperty);
    const rule = ruleOf(schema.properties?.[field]);
    return new HttpError(status, `${where}/${field} is missing${rule ? `: it ${rule}` : ''}`);
  }
  if (error.keyword === 'additionalProperties') {
    const known = Object.keys(schema.properties ?? {}).map((k) => JSON.stringify(k));
    const takes = known.length > 1 ? `${known.slice(0, -1).join(', ')} and ${known.at(-1)}` : known.join('');
    return new HttpError(
      status,
      `${where} has an unknown field ${JSON.stringify(error.params.additionalProperty)}: it takes only ${takes}`,
    );
  }
  return new HttpError(status, `${where} ${ruleOf(schema) ?? error.message}; it is ${shown(error.data)}`);
}

const ajvOptions = {
  // Unknown fields are refused where a schema says so (`additionalProperties: false`), never dropped in silence.
  removeAdditional: false,
  useDefaults: true,
  // One refusal is enough to answer, and checking everything of a hostile body costs time (fastify's default).
  allErrors: false,
  // The refused value and its schema, for the message.
  verbose: true,
  allowUnionTypes: true,
} as const;

type Compile = FastifySchemaCompiler<unknown>;

/**
 * Route schemas for the app, checked by two validators. JSON bodies carry their own types
 * and are checked as sent: coercing would take `["local"]` for `"local"` and `null` for `""`,
 * hiding a client's mistake. Paths and query strings are text, so their numbers are coerced
 * from it (fastify's default).
 */
export function schemaValidation(app: FastifyInstance): void {
  const compilers = AjvCompiler();
  // Fastify calls a compiler with the route ({ schema, httpPart, … }); the package's typings say it takes the schema alone.
  const bodies = compilers({}, { customOptions: { ...ajvOptions, coerceTypes: false } }) as unknown as Compile;
  const text = compilers({}, { customOptions: { ...ajvOptions, coerceTypes: 'array' } }) as unknown as Compile;
  app.setValidatorCompiler((route) => (route.httpPart === 'body' ? bodies : text)(route));
  app.setSchemaErrorFormatter(refusal);
}

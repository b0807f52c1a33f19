/**
 * Where WAL and base backups live: a directory (the embedded default) or an S3 bucket.
 * Keys are `/`-separated paths under the store's prefix. Objects are written whole and
 * never changed: `putIfAbsent` is the only write, so an archived segment can never be
 * overwritten, and a repeated write of the same object is recognised by its checksum.
 */
export interface StoredObject {
  body: Buffer;
  metadata: Record<string, string>;
}

export interface ObjectInfo {
  key: string;
  size: number;
  metadata: Record<string, string>;
}

export interface ObjectStore {
  /** Where it is, for logs and errors: never a credential. */
  readonly description: string;
  /**
   * Write the object unless the key exists. `written` when this call wrote it; otherwise
   * the existing object's info, for the caller to compare checksums.
   */
  putIfAbsent(
    key: string,
    body: Buffer,
    metadata: Record<string, string>,
  ): Promise<{ outcome: 'written' } | { outcome: 'exists'; existing: ObjectInfo }>;
  get(key: string): Promise<StoredObject | undefined>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Keys under a prefix, in lexical order. */
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
}

/** Metadata keys are lower-case letters, digits and `-` (S3 folds case); values printable ASCII. */
export function checkMetadata(metadata: Record<string, string>): void {
  for (const [k, v] of Object.entries(metadata)) {
    if (!/^[a-z0-9-]+$/.test(k) || !/^[\x20-\x7e]*$/.test(v))
      throw new Error(`object metadata ${k}=${v} must be lower-case key and printable ASCII`);
  }
}

/** A key is a relative path of plain segments: no `..`, no leading `/`, no empty parts. */
export function checkKey(key: string): void {
  if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(key) || key.split('/').some((p) => p === '.' || p === '..')) {
    throw new Error(`"${key}" is not a valid object key`);
  }
}

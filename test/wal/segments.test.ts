import { describe, expect, it } from 'vitest';
import { nextSegments, walKind } from '../../src/wal/segments.ts';

describe('WAL file names', () => {
  it('knows segments, history, partial and backup files, and nothing else', () => {
    expect(walKind('000000010000000000000003')).toBe('segment');
    expect(walKind('00000002.history')).toBe('history');
    expect(walKind('000000010000000000000003.partial')).toBe('partial');
    expect(walKind('000000010000000000000003.00000028.backup')).toBe('backup');
    for (const bad of ['../../etc/passwd', '00000001000000000000000', 'archive_status', '000000010000000000000003.tmp']) expect(walKind(bad)).toBeUndefined();
  });

  it('counts the next segments across a log id', () => {
    expect(nextSegments('0000000100000000000000FE', 3)).toEqual(['0000000100000000000000FF', '000000010000000100000000', '000000010000000100000001']);
    expect(nextSegments('00000002.history', 3)).toEqual([]);
  });
});

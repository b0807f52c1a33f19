import { describe, expect, it } from 'vitest';
import { archiveLagBytes } from '../../observers/postgres.ts';
import { historyName, nextSegments, segmentName, walKind } from '../../src/wal/segments.ts';

describe('WAL file names', () => {
  it('knows segments, history, partial and backup files, and nothing else', () => {
    expect(walKind('000000010000000000000003')).toBe('segment');
    expect(walKind('00000002.history')).toBe('history');
    expect(walKind('000000010000000000000003.partial')).toBe('partial');
    expect(walKind('000000010000000000000003.00000028.backup')).toBe('backup');
    for (const bad of ['../../etc/passwd', '00000001000000000000000', 'archive_status', '000000010000000000000003.tmp'])
      expect(walKind(bad)).toBeUndefined();
  });

  it('counts the next segments across a log id', () => {
    expect(nextSegments('0000000100000000000000FE', 3)).toEqual([
      '0000000100000000000000FF',
      '000000010000000100000000',
      '000000010000000100000001',
    ]);
    expect(nextSegments('00000002.history', 3)).toEqual([]);
  });
});

describe('archive lag', () => {
  it('is the WAL written past the oldest segment waiting to be archived', () => {
    // Segment 3 begins at 0/3000000; the server is at 0/4000100.
    expect(archiveLagBytes('0/4000100', '000000010000000000000003')).toBe(0x1000100);
    expect(archiveLagBytes('1/00000010', '0000000100000000000000FF')).toBe(0x1000010);
    // A promotion's cut-short segment waits as its segment.
    expect(archiveLagBytes('0/5000000', '000000010000000000000003.partial')).toBe(0x2000000);
    expect(archiveLagBytes(undefined, '000000010000000000000003')).toBeUndefined();
  });

  it('is what the current segment holds when nothing waits, whatever the position', () => {
    expect(archiveLagBytes('0/4000100', undefined)).toBe(0x100);
    expect(archiveLagBytes('2A/00000000', undefined)).toBe(0);
    expect(archiveLagBytes('2A/00FFFFFF', undefined)).toBe(0xffffff);
  });
});

describe('the WAL file of a position', () => {
  it('names the segment holding a byte position on a timeline, and the history file of a timeline', () => {
    expect(segmentName(1, 0)).toBe('000000010000000000000000');
    expect(segmentName(1, 16 * 1024 * 1024 - 1)).toBe('000000010000000000000000');
    expect(segmentName(2, 16 * 1024 * 1024)).toBe('000000020000000000000001');
    expect(segmentName(0x1a, 5 * 2 ** 32 + 0xff * 16 * 1024 * 1024 + 7)).toBe('0000001A00000005000000FF');
    expect(historyName(10)).toBe('0000000A.history');
  });
});

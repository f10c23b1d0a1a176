/**
 * Bind values written as SQL literals (services/kernel/sql-literal.ts), for COPY: pure checks of the
 * text, then a round trip through real PostgreSQL showing that every hostile string comes back as
 * the one value it was, whatever quotes, backslashes or `$names` it holds.
 */
import fc from 'fast-check';
import { inlineBind, sqlLiteral } from '../services/kernel/sql-literal.js';
import { SqlLiteralError } from '../services/kernel/errors.js';
import { createTestDatabase, createTestEngineCore } from './helpers/db.js';
import type { EngineCore } from '../src/engine.js';

describe('sqlLiteral and inlineBind', () => {
  it('writes each kind of value as one literal', () => {
    expect(sqlLiteral("it's")).toBe("'it''s'");
    expect(sqlLiteral('a\\b')).toBe(" E'a\\\\b'");
    expect(sqlLiteral(42)).toBe('42');
    expect(sqlLiteral(-3)).toBe('(-3)');
    expect(sqlLiteral(true)).toBe('TRUE');
    expect(sqlLiteral(null)).toBe('NULL');
    expect(sqlLiteral(new Date('2026-11-30T10:00:00Z'))).toBe("'2026-11-30T10:00:00.000Z'");
    expect(sqlLiteral([1, 'x'])).toBe("ARRAY[1, 'x']");
    expect(sqlLiteral([])).toBe('ARRAY[]');
  });

  it('replaces whole placeholder names only, and refuses what it cannot write', () => {
    expect(inlineBind('$a::int + $ab::int', { a: 1, ab: 2 })).toBe('1::int + 2::int');
    expect(() => inlineBind('$missing', {})).toThrow(SqlLiteralError);
    expect(() => inlineBind('$x', { x: Number.NaN })).toThrow(/\$x: NaN is not a finite number/);
    expect(() => inlineBind('$x', { x: { a: 1 } })).toThrow(/\$x: cannot be written/);
    expect(() => sqlLiteral(new Date('nope'), 'when')).toThrow(/\$when: invalid date/);
  });

  describe('against PostgreSQL', () => {
    let core: EngineCore;
    beforeAll(async () => {
      core = await createTestEngineCore({ databaseUrl: await createTestDatabase() });
    });
    afterAll(() => core.close());

    it('reads back every string and array as the value it was (property-based)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.string({ unit: 'grapheme' }), fc.array(fc.string(), { maxLength: 4 }), fc.integer(), async (s, arr, n) => {
          const clean = (x: string) => x.replace(/\0/g, '');
          const [[row]] = (await core.apiDb.query(
            inlineBind('SELECT $s::text AS s, $arr::text[] AS arr, $n::int AS n', { s: clean(s), arr: arr.map(clean), n }),
          )) as [{ s: string; arr: string[]; n: number }[], unknown];
          expect(row).toEqual({ s: clean(s), arr: arr.map(clean), n });
        }),
        { numRuns: 200 },
      );
    });
  });
});

import fc from 'fast-check';
import { DateTime, IANAZone } from 'luxon';
import { isValidZone, msUntilReset, nextQuotaReset, quotaDayExpired, quotaDayOf } from '../services/quota-day.js';

const HOUR = 3_600_000;

/** A local wall-clock time in `zone` (only for unambiguous times; ambiguous ones are written with an explicit offset). */
const at = (iso: string, zone: string): DateTime => DateTime.fromISO(iso, { zone });
/** An instant written with an explicit UTC offset, viewed in `zone`. */
const instant = (isoWithOffset: string, zone: string): DateTime => DateTime.fromISO(isoWithOffset, { setZone: true }).setZone(zone);

describe('quotaDayOf', () => {
  it('flips at local midnight in Asia/Tokyo (15:00 UTC), not at UTC midnight', () => {
    const zone = 'Asia/Tokyo';
    expect(quotaDayOf(instant('2026-05-10T14:59:59.999Z', zone), zone)).toBe('2026-05-10');
    expect(quotaDayOf(instant('2026-05-10T15:00:00.000Z', zone), zone)).toBe('2026-05-11');
    // UTC midnight is 09:00 in Tokyo: no flip there.
    expect(quotaDayOf(instant('2026-05-10T23:59:59.999Z', zone), zone)).toBe('2026-05-11');
    expect(quotaDayOf(instant('2026-05-11T00:00:00.000Z', zone), zone)).toBe('2026-05-11');
  });

  it('flips at local midnight in America/Los_Angeles (07:00 UTC in summer, 08:00 in winter)', () => {
    const zone = 'America/Los_Angeles';
    expect(quotaDayOf(new Date('2026-07-01T06:59:59.999Z'), zone)).toBe('2026-06-30');
    expect(quotaDayOf(new Date('2026-07-01T07:00:00.000Z'), zone)).toBe('2026-07-01');
    expect(quotaDayOf(new Date('2026-12-01T07:59:59.999Z'), zone)).toBe('2026-11-30');
    expect(quotaDayOf(new Date('2026-12-01T08:00:00.000Z'), zone)).toBe('2026-12-01');
    // At UTC midnight it is still the previous afternoon in Los Angeles.
    expect(quotaDayOf(new Date('2026-07-01T00:00:00.000Z'), zone)).toBe('2026-06-30');
  });

  it('accepts a luxon DateTime in any zone and a JS Date alike', () => {
    const inUtc = DateTime.fromISO('2026-05-10T15:30:00Z', { zone: 'utc' });
    expect(quotaDayOf(inUtc, 'Asia/Tokyo')).toBe('2026-05-11');
    expect(quotaDayOf(inUtc.toJSDate(), 'Asia/Tokyo')).toBe('2026-05-11');
    expect(quotaDayOf(inUtc, 'UTC')).toBe('2026-05-10');
  });

  it('answers from its per-zone cache exactly as the wall clock does, across midnights and DST changes', () => {
    // Instants a few minutes apart, in order (what the scheduler asks) and then backwards, over days
    // with a DST change, a midnight that does not exist (America/Santiago) and a 45-minute offset.
    const zones = ['Europe/Paris', 'America/Santiago', 'Asia/Kathmandu', 'Australia/Lord_Howe', 'UTC'];
    const days = ['2026-03-28T12:00:00Z', '2026-04-04T12:00:00Z', '2026-09-05T12:00:00Z', '2026-10-24T12:00:00Z'];
    const wallDay = (ms: number, zone: string) => DateTime.fromMillis(ms, { zone }).toISODate();
    for (const zone of zones) {
      for (const start of days) {
        const t0 = Date.parse(start);
        const steps = Array.from({ length: (48 * 60) / 7 }, (_, i) => t0 + i * 7 * 60_000 + (i % 3));
        for (const ms of [...steps, ...steps.reverse()])
          expect([zone, ms, quotaDayOf(new Date(ms), zone)]).toEqual([zone, ms, wallDay(ms, zone)]);
      }
    }
    fc.assert(
      fc.property(fc.integer({ min: Date.parse('2020-01-01'), max: Date.parse('2035-01-01') }), fc.constantFrom(...zones), (ms, zone) => {
        expect(quotaDayOf(new Date(ms), zone)).toBe(wallDay(ms, zone));
        expect(quotaDayOf(new Date(ms + 59 * 60_000), zone)).toBe(wallDay(ms + 59 * 60_000, zone));
      }),
    );
  });
});

describe('nextQuotaReset', () => {
  it('is the next local midnight, returned in the zone', () => {
    const r = nextQuotaReset(at('2026-05-10T13:45', 'Asia/Tokyo'), 'Asia/Tokyo');
    expect(r.toISO()).toBe('2026-05-11T00:00:00.000+09:00');
    expect(r.zoneName).toBe('Asia/Tokyo');
    expect(r.toUTC().toISO()).toBe('2026-05-10T15:00:00.000Z');
  });

  it('at exactly midnight, is the following midnight (strictly after now)', () => {
    const zone = 'America/Los_Angeles';
    const midnight = at('2026-07-01T00:00', zone);
    expect(nextQuotaReset(midnight, zone).toISO()).toBe('2026-07-02T00:00:00.000-07:00');
    expect(msUntilReset(midnight, zone)).toBe(24 * HOUR);
    expect(msUntilReset(midnight.minus(1), zone)).toBe(1);
  });

  it('Europe/Paris spring forward (2026-03-29 lasts 23 h)', () => {
    const zone = 'Europe/Paris';
    const startOfDay = nextQuotaReset(at('2026-03-28T18:00', zone), zone);
    expect(startOfDay.toISO()).toBe('2026-03-29T00:00:00.000+01:00');
    // 01:30 CET and 03:30 CEST (after the jump) on the short day both reset at the same next midnight.
    const before = nextQuotaReset(at('2026-03-29T01:30', zone), zone);
    const after = nextQuotaReset(at('2026-03-29T03:30', zone), zone);
    expect(before.toISO()).toBe('2026-03-30T00:00:00.000+02:00');
    expect(after.toMillis()).toBe(before.toMillis());
    expect(before.toMillis() - startOfDay.toMillis()).toBe(23 * HOUR);
    expect(msUntilReset(at('2026-03-29T00:00', zone), zone)).toBe(23 * HOUR);
  });

  it('Europe/Paris fall back (2026-10-25 lasts 25 h), from both passes of the repeated hour', () => {
    const zone = 'Europe/Paris';
    const startOfDay = nextQuotaReset(at('2026-10-24T18:00', zone), zone);
    expect(startOfDay.toISO()).toBe('2026-10-25T00:00:00.000+02:00');
    const firstPass = nextQuotaReset(instant('2026-10-25T02:30:00+02:00', zone), zone);
    const secondPass = nextQuotaReset(instant('2026-10-25T02:30:00+01:00', zone), zone);
    expect(firstPass.toISO()).toBe('2026-10-26T00:00:00.000+01:00');
    expect(secondPass.toMillis()).toBe(firstPass.toMillis());
    expect(firstPass.toMillis() - startOfDay.toMillis()).toBe(25 * HOUR);
    expect(msUntilReset(at('2026-10-25T00:00', zone), zone)).toBe(25 * HOUR);
  });

  it('America/Santiago 2026-09-06: midnight is skipped (00:00 -04 jumps to 01:00 -03), the day starts at 01:00', () => {
    const zone = 'America/Santiago';
    // Check the premise against the tz database in use: 23:59:59.999 -04 is followed by 01:00 -03.
    const beforeJump = instant('2026-09-06T03:59:59.999Z', zone);
    expect(beforeJump.toISO()).toBe('2026-09-05T23:59:59.999-04:00');
    expect(beforeJump.plus(1).toISO()).toBe('2026-09-06T01:00:00.000-03:00');

    const reset = nextQuotaReset(at('2026-09-05T12:00', zone), zone);
    expect(reset.toISO()).toBe('2026-09-06T01:00:00.000-03:00');
    expect(reset.toMillis()).toBe(beforeJump.toMillis() + 1);
    expect(quotaDayOf(reset, zone)).toBe('2026-09-06');
    expect(quotaDayOf(reset.minus(1), zone)).toBe('2026-09-05');
    // The skipped day lasts 23 h: the following reset is the (regular) midnight of 2026-09-07.
    const next = nextQuotaReset(reset, zone);
    expect(next.toISO()).toBe('2026-09-07T00:00:00.000-03:00');
    expect(next.toMillis() - reset.toMillis()).toBe(23 * HOUR);
  });

  it('America/Santiago 2026-04-05: clocks go back at 00:00 to 23:00 the day before, so 2026-04-04 lasts 25 h', () => {
    const zone = 'America/Santiago';
    const startOfDay = nextQuotaReset(at('2026-04-03T12:00', zone), zone);
    expect(startOfDay.toISO()).toBe('2026-04-04T00:00:00.000-03:00');
    const reset = nextQuotaReset(instant('2026-04-04T23:30:00-03:00', zone), zone);
    expect(reset.toISO()).toBe('2026-04-05T00:00:00.000-04:00');
    expect(nextQuotaReset(instant('2026-04-04T23:30:00-04:00', zone), zone).toMillis()).toBe(reset.toMillis());
    expect(reset.toMillis() - startOfDay.toMillis()).toBe(25 * HOUR);
  });

  it('Asia/Beirut and America/Havana also skip midnight on their spring-forward day', () => {
    expect(nextQuotaReset(at('2026-03-28T12:00', 'Asia/Beirut'), 'Asia/Beirut').toISO()).toBe('2026-03-29T01:00:00.000+03:00');
    expect(nextQuotaReset(at('2026-03-07T12:00', 'America/Havana'), 'America/Havana').toISO()).toBe('2026-03-08T01:00:00.000-04:00');
  });

  it('America/Havana 2026-11-01: the clock goes back from 01:00 to 00:00, so midnight is shown twice; the reset is the earlier one', () => {
    const zone = 'America/Havana';
    const reset = nextQuotaReset(at('2026-10-31T12:00', zone), zone);
    expect(reset.toISO()).toBe('2026-11-01T00:00:00.000-04:00');
    expect(nextQuotaReset(reset, zone).toISO()).toBe('2026-11-02T00:00:00.000-05:00');
    expect(nextQuotaReset(reset, zone).toMillis() - reset.toMillis()).toBe(25 * HOUR);
  });
});

describe('quotaDayExpired', () => {
  const zone = 'Asia/Tokyo';
  const now = instant('2026-05-10T15:00:00Z', zone); // 2026-05-11 00:00 in Tokyo, still 2026-05-10 in UTC

  it('is true for a stored day before the local day of now', () => {
    expect(quotaDayExpired('2026-05-10', now, zone)).toBe(true);
    expect(quotaDayExpired('2025-12-31', now, zone)).toBe(true);
  });

  it('is false for the current local day (and a day in the future)', () => {
    expect(quotaDayExpired('2026-05-11', now, zone)).toBe(false);
    expect(quotaDayExpired('2026-05-12', now, zone)).toBe(false);
  });

  it('depends on the zone, not on UTC', () => {
    expect(quotaDayExpired('2026-05-10', now, 'UTC')).toBe(false);
    expect(quotaDayExpired('2026-05-10', now.minus(1), zone)).toBe(false);
  });

  it('rejects a stored day that is not an ISO date', () => {
    expect(() => quotaDayExpired('2026-5-10', now, zone)).toThrow('invalid quota day "2026-5-10"');
    expect(() => quotaDayExpired('2026-02-30', now, zone)).toThrow('invalid quota day');
  });
});

describe('zones', () => {
  it('isValidZone accepts IANA zones and rejects the rest', () => {
    for (const z of ['UTC', 'Europe/Paris', 'America/Santiago', 'Australia/Lord_Howe', 'Asia/Kolkata']) expect(isValidZone(z)).toBe(true);
    for (const z of ['', 'Mars/Olympus_Mons', 'local', 'UTC+3', 'Europe/']) expect(isValidZone(z)).toBe(false);
  });

  it('every function throws an error naming an invalid zone', () => {
    const now = new Date('2026-05-10T12:00:00Z');
    expect(() => quotaDayOf(now, 'Mars/Olympus_Mons')).toThrow('invalid IANA time zone: "Mars/Olympus_Mons"');
    expect(() => nextQuotaReset(now, 'Mars/Olympus_Mons')).toThrow('"Mars/Olympus_Mons"');
    expect(() => msUntilReset(now, 'Nowhere')).toThrow('"Nowhere"');
    expect(() => quotaDayExpired('2026-05-10', now, '')).toThrow('invalid IANA time zone: ""');
  });

  it('rejects an invalid instant', () => {
    expect(() => quotaDayOf(new Date(NaN), 'UTC')).toThrow('invalid instant');
    expect(() => nextQuotaReset(DateTime.invalid('test'), 'UTC')).toThrow('invalid instant');
  });
});

describe('properties', () => {
  const ZONES = ['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo', 'Australia/Lord_Howe', 'America/Santiago', 'Asia/Kolkata'];
  const MIN = Date.UTC(2020, 0, 1);
  const MAX = Date.UTC(2031, 0, 1) - 1;
  const dayAfter = (isoDate: string): string => DateTime.fromISO(isoDate, { zone: 'utc' }).plus({ days: 1 }).toISODate() ?? '';

  /** Instants 2020-2030, uniform or within two days of local midnight (where DST transitions and resets happen). */
  const arbNow = fc.oneof(
    fc.integer({ min: MIN, max: MAX }),
    fc.record({ base: fc.integer({ min: MIN, max: MAX }), delta: fc.integer({ min: -2 * HOUR, max: 2 * HOUR }) }).map(({ base, delta }) => {
      const utcMidnight = Math.floor(base / (24 * HOUR)) * 24 * HOUR;
      return utcMidnight + delta;
    }),
  );

  it('nextQuotaReset is after now, on the next local day, and the last instant before it is still today', () => {
    fc.assert(
      fc.property(arbNow, fc.constantFrom(...ZONES), (ms, zone) => {
        const now = DateTime.fromMillis(ms, { zone: 'utc' });
        const reset = nextQuotaReset(now, zone);
        const today = quotaDayOf(now, zone);
        expect(reset.toMillis()).toBeGreaterThan(ms);
        expect(reset.zoneName).toBe(zone);
        expect(quotaDayOf(reset, zone)).toBe(dayAfter(today));
        expect(quotaDayOf(reset.minus(1), zone)).toBe(today);
        expect(msUntilReset(now, zone)).toBe(reset.toMillis() - ms);
        expect(quotaDayExpired(today, reset, zone)).toBe(true);
        expect(quotaDayExpired(today, reset.minus(1), zone)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('around each DST transition 2020-2030 of the zones, the day after the reset is the next local day', () => {
    // Instants within two days of every offset change, found by scanning the zone's offsets day by day.
    const cases: { zone: string; ms: number }[] = [];
    for (const zone of ZONES) {
      const z = IANAZone.create(zone);
      let prev = z.offset(MIN);
      for (let ms = MIN; ms < MAX; ms += 24 * HOUR) {
        const off = z.offset(ms);
        if (off !== prev) cases.push({ zone, ms });
        prev = off;
      }
    }
    expect(cases.length).toBeGreaterThan(80); // Paris, New York, Lord Howe, Santiago: ~2 a year each
    fc.assert(
      fc.property(fc.constantFrom(...cases), fc.integer({ min: -2 * 24 * HOUR, max: 2 * 24 * HOUR }), ({ zone, ms }, delta) => {
        const now = ms + delta;
        const reset = nextQuotaReset(new Date(now), zone);
        const today = quotaDayOf(new Date(now), zone);
        expect(reset.toMillis()).toBeGreaterThan(now);
        expect(quotaDayOf(reset, zone)).toBe(dayAfter(today));
        expect(quotaDayOf(reset.minus(1), zone)).toBe(today);
      }),
      { numRuns: 1000 },
    );
  });
});

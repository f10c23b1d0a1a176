import fc from 'fast-check';
import { DateTime, IANAZone } from 'luxon';
import { isInsideWindow, nextSendTime, validateSendWindow, windowEnd, type SendWindow } from '../services/send-window.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A local wall-clock time in `zone` (only for unambiguous times; ambiguous ones are written with an explicit offset). */
const at = (iso: string, zone: string): DateTime => DateTime.fromISO(iso, { zone });
/** An instant written with an explicit UTC offset, viewed in `zone`. */
const instant = (isoWithOffset: string, zone: string): DateTime => DateTime.fromISO(isoWithOffset, { setZone: true }).setZone(zone);

const PARIS = 'Europe/Paris';
const OFFICE: SendWindow = { start: '09:00', end: '18:00', days: [1, 2, 3, 4, 5] };

describe('nextSendTime, isInsideWindow, windowEnd', () => {
  it('inside the window: returns now itself, and the window closes at today’s end', () => {
    const now = at('2026-05-13T11:17:42.123', PARIS); // a Wednesday
    expect(now.weekday).toBe(3);
    expect(isInsideWindow(OFFICE, PARIS, now)).toBe(true);
    const next = nextSendTime(OFFICE, PARIS, now);
    expect(next.toMillis()).toBe(now.toMillis());
    expect(next.zoneName).toBe(PARIS);
    expect(windowEnd(OFFICE, PARIS, now)?.toISO()).toBe('2026-05-13T18:00:00.000+02:00');
  });

  it('the window is [start, end): start is inside, end is outside', () => {
    expect(isInsideWindow(OFFICE, PARIS, at('2026-05-13T09:00', PARIS))).toBe(true);
    expect(isInsideWindow(OFFICE, PARIS, at('2026-05-13T08:59:59.999', PARIS))).toBe(false);
    expect(isInsideWindow(OFFICE, PARIS, at('2026-05-13T17:59:59.999', PARIS))).toBe(true);
    expect(isInsideWindow(OFFICE, PARIS, at('2026-05-13T18:00', PARIS))).toBe(false);
    expect(windowEnd(OFFICE, PARIS, at('2026-05-13T18:00', PARIS))).toBeUndefined();
  });

  it('before the start on a listed day: today’s start', () => {
    const now = at('2026-05-13T07:10', PARIS);
    expect(isInsideWindow(OFFICE, PARIS, now)).toBe(false);
    expect(nextSendTime(OFFICE, PARIS, now).toISO()).toBe('2026-05-13T09:00:00.000+02:00');
  });

  it('after the end: the start on the next listed day', () => {
    const w: SendWindow = { start: '09:00', end: '12:00', days: [1, 3, 5] };
    expect(nextSendTime(w, PARIS, at('2026-05-11T12:00', PARIS)).toISO()).toBe('2026-05-13T09:00:00.000+02:00'); // Monday -> Wednesday
    expect(nextSendTime({ start: '09:00', end: '12:00' }, PARIS, at('2026-05-11T19:00', PARIS)).toISO()).toBe(
      '2026-05-12T09:00:00.000+02:00',
    ); // no days: every day
  });

  it('skips the weekend with days 1..5: Friday 18:00 -> Monday 09:00', () => {
    const friday = at('2026-05-15T18:00', PARIS);
    expect(friday.weekday).toBe(5);
    expect(nextSendTime(OFFICE, PARIS, friday).toISO()).toBe('2026-05-18T09:00:00.000+02:00');
    expect(nextSendTime(OFFICE, PARIS, at('2026-05-16T12:00', PARIS)).toISO()).toBe('2026-05-18T09:00:00.000+02:00');
    expect(isInsideWindow(OFFICE, PARIS, at('2026-05-16T12:00', PARIS))).toBe(false);
  });

  it('only Sundays: a Monday waits six days', () => {
    const w: SendWindow = { start: '10:00', end: '11:00', days: [7] };
    expect(nextSendTime(w, PARIS, at('2026-05-11T10:30', PARIS)).toISO()).toBe('2026-05-17T10:00:00.000+02:00');
    // Just after the Sunday window: the next one is a week later.
    expect(nextSendTime(w, PARIS, at('2026-05-17T11:00', PARIS)).toISO()).toBe('2026-05-24T10:00:00.000+02:00');
  });

  describe('a window crossing midnight (22:00-06:00, opening on Fridays only)', () => {
    const NIGHT: SendWindow = { start: '22:00', end: '06:00', days: [5] };

    it('is open from Friday 22:00 to Saturday 06:00', () => {
      expect(isInsideWindow(NIGHT, PARIS, at('2026-05-15T23:00', PARIS))).toBe(true);
      const saturdayNight = at('2026-05-16T03:00', PARIS);
      expect(isInsideWindow(NIGHT, PARIS, saturdayNight)).toBe(true);
      expect(nextSendTime(NIGHT, PARIS, saturdayNight).toMillis()).toBe(saturdayNight.toMillis());
      expect(windowEnd(NIGHT, PARIS, saturdayNight)?.toISO()).toBe('2026-05-16T06:00:00.000+02:00');
      expect(windowEnd(NIGHT, PARIS, at('2026-05-15T22:00', PARIS))?.toISO()).toBe('2026-05-16T06:00:00.000+02:00');
      expect(isInsideWindow(NIGHT, PARIS, at('2026-05-16T06:00', PARIS))).toBe(false);
    });

    it('the days filter applies to the opening day: Friday 05:00 and Saturday 23:00 are outside', () => {
      // Friday 05:00 would be in the window opened on Thursday, which is not listed.
      expect(isInsideWindow(NIGHT, PARIS, at('2026-05-15T05:00', PARIS))).toBe(false);
      expect(nextSendTime(NIGHT, PARIS, at('2026-05-15T05:00', PARIS)).toISO()).toBe('2026-05-15T22:00:00.000+02:00');
      expect(isInsideWindow(NIGHT, PARIS, at('2026-05-16T23:00', PARIS))).toBe(false);
      expect(nextSendTime(NIGHT, PARIS, at('2026-05-16T23:00', PARIS)).toISO()).toBe('2026-05-22T22:00:00.000+02:00');
    });

    it('every day: open before 06:00 and from 22:00', () => {
      const w: SendWindow = { start: '22:00', end: '06:00' };
      expect(isInsideWindow(w, PARIS, at('2026-05-13T05:59', PARIS))).toBe(true);
      expect(nextSendTime(w, PARIS, at('2026-05-13T06:00', PARIS)).toISO()).toBe('2026-05-13T22:00:00.000+02:00');
      expect(windowEnd(w, PARIS, at('2026-05-13T00:00', PARIS))?.toISO()).toBe('2026-05-13T06:00:00.000+02:00');
    });
  });

  describe('DST gap: Europe/Paris 2026-03-29, 02:00 CET jumps to 03:00 CEST', () => {
    const EARLY: SendWindow = { start: '02:30', end: '05:00' };

    it('checks the premise: 02:30 does not exist that day', () => {
      const lastCet = instant('2026-03-29T00:59:59.999Z', PARIS);
      expect(lastCet.toISO()).toBe('2026-03-29T01:59:59.999+01:00');
      expect(lastCet.plus(1).toISO()).toBe('2026-03-29T03:00:00.000+02:00');
    });

    it('a start inside the gap opens the window at the first valid instant after it (03:00 CEST), the same day', () => {
      const next = nextSendTime(EARLY, PARIS, at('2026-03-29T01:00', PARIS));
      expect(next.toISO()).toBe('2026-03-29T03:00:00.000+02:00');
      expect(isInsideWindow(EARLY, PARIS, next)).toBe(true);
      expect(isInsideWindow(EARLY, PARIS, next.minus(1))).toBe(false);
      // Only Sundays: the Sunday of the jump is not skipped either.
      expect(nextSendTime({ ...EARLY, days: [7] }, PARIS, at('2026-03-29T01:59:59.999', PARIS)).toISO()).toBe(
        '2026-03-29T03:00:00.000+02:00',
      );
    });

    it('after the jump, inside the window: now itself, never a time before now', () => {
      const now = at('2026-03-29T03:10', PARIS);
      expect(nextSendTime(EARLY, PARIS, now).toMillis()).toBe(now.toMillis());
      expect(windowEnd(EARLY, PARIS, now)?.toISO()).toBe('2026-03-29T05:00:00.000+02:00');
    });

    it('a window entirely inside the gap does not open that day', () => {
      const w: SendWindow = { start: '02:10', end: '02:50' };
      expect(nextSendTime(w, PARIS, at('2026-03-29T01:00', PARIS)).toISO()).toBe('2026-03-30T02:10:00.000+02:00');
      expect(nextSendTime({ ...w, days: [7] }, PARIS, at('2026-03-29T01:00', PARIS)).toISO()).toBe('2026-04-05T02:10:00.000+02:00');
    });

    it('a weekly window inside the gap, just after its last opening, next opens two weeks later (found by the property test)', () => {
      // Sundays 02:00-02:30 in New York; 2029-03-11 springs forward at 02:00, so that Sunday has no window.
      const w: SendWindow = { start: '02:00', end: '02:30', days: [7] };
      const NY = 'America/New_York';
      const now = DateTime.fromMillis(1867303800000, { zone: 'utc' });
      expect(now.setZone(NY).toISO()).toBe('2029-03-04T02:30:00.000-05:00');
      expect(isInsideWindow(w, NY, now)).toBe(false);
      expect(nextSendTime(w, NY, now).toISO()).toBe('2029-03-18T02:00:00.000-04:00');
    });

    it('a night window ending inside the gap closes at the jump', () => {
      const w: SendWindow = { start: '23:00', end: '02:30' };
      expect(windowEnd(w, PARIS, at('2026-03-29T01:30', PARIS))?.toISO()).toBe('2026-03-29T03:00:00.000+02:00');
    });
  });

  describe('DST overlap: Europe/Paris 2026-10-25, 03:00 CEST goes back to 02:00 CET (02:00-03:00 happens twice)', () => {
    it('an ambiguous start opens at its earlier occurrence (CEST)', () => {
      const w: SendWindow = { start: '02:30', end: '05:00' };
      const next = nextSendTime(w, PARIS, at('2026-10-25T01:00', PARIS));
      expect(next.toISO()).toBe('2026-10-25T02:30:00.000+02:00');
      expect(next.toUTC().toISO()).toBe('2026-10-25T00:30:00.000Z');
      // Once open, the window stays open while the clock shows 02:00-02:30 a second time.
      const secondPass = instant('2026-10-25T02:10:00+01:00', PARIS);
      expect(isInsideWindow(w, PARIS, secondPass)).toBe(true);
      expect(windowEnd(w, PARIS, secondPass)?.toISO()).toBe('2026-10-25T05:00:00.000+01:00');
    });

    it('an ambiguous end closes the window at its earlier occurrence, and it does not reopen in the repeated hour', () => {
      const w: SendWindow = { start: '01:00', end: '02:30' };
      const firstPass = instant('2026-10-25T02:10:00+02:00', PARIS);
      expect(windowEnd(w, PARIS, firstPass)?.toISO()).toBe('2026-10-25T02:30:00.000+02:00');
      const secondPass = instant('2026-10-25T02:10:00+01:00', PARIS);
      expect(isInsideWindow(w, PARIS, secondPass)).toBe(false);
      expect(nextSendTime(w, PARIS, secondPass).toISO()).toBe('2026-10-26T01:00:00.000+01:00');
    });
  });

  it('recipients in America/New_York and Asia/Tokyo at the same instant get different answers', () => {
    const now = new Date('2026-05-15T13:00:00Z'); // Friday 09:00 in New York, Friday 22:00 in Tokyo
    const ny = nextSendTime(OFFICE, 'America/New_York', now);
    const tokyo = nextSendTime(OFFICE, 'Asia/Tokyo', now);
    expect(isInsideWindow(OFFICE, 'America/New_York', now)).toBe(true);
    expect(ny.toMillis()).toBe(now.getTime());
    expect(ny.toISO()).toBe('2026-05-15T09:00:00.000-04:00');
    expect(isInsideWindow(OFFICE, 'Asia/Tokyo', now)).toBe(false);
    expect(tokyo.toISO()).toBe('2026-05-18T09:00:00.000+09:00');
    expect(tokyo.zoneName).toBe('Asia/Tokyo');
  });

  it('throws on an invalid window or zone', () => {
    const now = new Date('2026-05-15T13:00:00Z');
    expect(() => nextSendTime({ start: '9:00', end: '18:00' }, PARIS, now)).toThrow('invalid send window: start must be a time HH:mm');
    expect(() => isInsideWindow({ start: '09:00', end: '09:00' }, PARIS, now)).toThrow('end must differ from start');
    expect(() => windowEnd({ start: '09:00', end: '18:00', days: [] }, PARIS, now)).toThrow('days must not be empty');
    expect(() => nextSendTime(OFFICE, 'Mars/Olympus_Mons', now)).toThrow('invalid IANA time zone: "Mars/Olympus_Mons"');
  });
});

describe('validateSendWindow', () => {
  const paths = (w: unknown): string[] => validateSendWindow(w).map((i) => i.path);

  it('accepts valid windows', () => {
    expect(validateSendWindow(OFFICE)).toEqual([]);
    expect(validateSendWindow({ start: '22:00', end: '06:00' })).toEqual([]);
    expect(validateSendWindow({ start: '00:00', end: '23:59', days: [7, 1] })).toEqual([]);
  });

  it('names the path of each issue', () => {
    expect(validateSendWindow({ start: '9:00', end: '18:00' })).toEqual([
      { path: 'start', message: 'must be a time HH:mm (00:00 to 23:59), got "9:00"' },
    ]);
    expect(paths({ start: '09:00', end: '24:00' })).toEqual(['end']);
    expect(paths({ start: '09:60', end: 1800 })).toEqual(['start', 'end']);
    expect(paths({ end: '18:00' })).toEqual(['start']);
    expect(validateSendWindow({ start: '09:00', end: '09:00' })).toEqual([{ path: 'end', message: 'must differ from start' }]);
    expect(paths({ start: '09:00', end: '18:00', days: [1, 2, 9] })).toEqual(['days.2']);
    expect(paths({ start: '09:00', end: '18:00', days: [0, 1.5, '3'] })).toEqual(['days.0', 'days.1', 'days.2']);
    expect(validateSendWindow({ start: '09:00', end: '18:00', days: [1, 2, 1] })).toEqual([
      { path: 'days.2', message: 'duplicate weekday 1' },
    ]);
    expect(paths({ start: '09:00', end: '18:00', days: [] })).toEqual(['days']);
    expect(paths({ start: '09:00', end: '18:00', days: 'weekdays' })).toEqual(['days']);
    expect(paths({ start: '09:00', end: '18:00', day: [1] })).toEqual(['day']);
  });

  it('rejects what is not an object', () => {
    for (const w of [null, undefined, '09:00-18:00', [], 3]) expect(paths(w)).toEqual(['']);
  });
});

describe('properties', () => {
  const ZONES = ['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo', 'Australia/Lord_Howe', 'America/Santiago', 'Asia/Kolkata'];
  const FIXED_OFFSET_ZONES = new Set(['UTC', 'Asia/Tokyo', 'Asia/Kolkata']);
  const MIN = Date.UTC(2020, 0, 1);
  const MAX = Date.UTC(2031, 0, 1) - 1;
  const hhmm = (m: number): string => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;

  // Offset changes 2020-2030 of the zones (to the day), so that many cases fall near a DST transition.
  const transitions: { zone: string; ms: number }[] = [];
  for (const zone of ZONES) {
    const z = IANAZone.create(zone);
    let prev = z.offset(MIN);
    for (let ms = MIN; ms < MAX; ms += DAY) {
      const off = z.offset(ms);
      if (off !== prev) transitions.push({ zone, ms });
      prev = off;
    }
  }

  // Minutes of the day, biased to the hours where transitions happen (00:00-03:30) and to half hours.
  const arbMinute = fc.oneof(
    fc.integer({ min: 0, max: 1439 }),
    fc.integer({ min: 0, max: 7 }).map((h) => h * 30),
  );
  const arbWindow: fc.Arbitrary<SendWindow> = fc
    .record({
      start: arbMinute,
      end: arbMinute,
      days: fc.option(fc.uniqueArray(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 7 }), { nil: undefined }),
    })
    .filter((w) => w.start !== w.end)
    .map(({ start, end, days }) =>
      days === undefined ? { start: hhmm(start), end: hhmm(end) } : { start: hhmm(start), end: hhmm(end), days },
    );
  const arbCase = fc.oneof(
    fc.record({ zone: fc.constantFrom(...ZONES), ms: fc.integer({ min: MIN, max: MAX }) }),
    // Near a transition, or one to two weeks before it (a weekly window the transition will swallow).
    fc
      .record({
        t: fc.constantFrom(...transitions),
        delta: fc.oneof(fc.integer({ min: -2 * DAY, max: 2 * DAY }), fc.integer({ min: -15 * DAY, max: -6 * DAY })),
      })
      .map(({ t, delta }) => ({
        zone: t.zone,
        ms: t.ms + delta,
      })),
  );

  it('scans enough DST transitions to matter', () => {
    expect(transitions.length).toBeGreaterThan(80);
    expect(new Set(transitions.map((t) => t.zone))).toEqual(
      new Set(['Europe/Paris', 'America/New_York', 'Australia/Lord_Howe', 'America/Santiago']),
    );
  });

  it('nextSendTime is >= now, inside the window, idempotent, within 15 days, and the earliest such instant', () => {
    fc.assert(
      fc.property(arbWindow, arbCase, (w, { zone, ms }) => {
        const now = DateTime.fromMillis(ms, { zone: 'utc' });
        const next = nextSendTime(w, zone, now);
        const t = next.toMillis();
        expect(next.zoneName).toBe(zone);
        expect(t).toBeGreaterThanOrEqual(ms);
        // A week and a day, or two when a DST gap swallows the window's only weekday once.
        expect(t - ms).toBeLessThan(15 * DAY);
        expect(isInsideWindow(w, zone, next)).toBe(true);
        expect(nextSendTime(w, zone, next).toMillis()).toBe(t);
        expect(windowEnd(w, zone, next)?.toMillis()).toBeGreaterThan(t);
        if (t === ms) {
          expect(isInsideWindow(w, zone, now)).toBe(true);
        } else {
          // Nothing earlier: now and the instant just before are outside, and the window opens at `start`
          // unless `start` fell in a DST gap, in which case it opens at the transition, after `start`.
          expect(isInsideWindow(w, zone, now)).toBe(false);
          expect(isInsideWindow(w, zone, next.minus(1))).toBe(false);
          expect(windowEnd(w, zone, now)).toBeUndefined();
          const atTransition = next.minus(1).offset !== next.offset;
          if (atTransition) expect(next.toFormat('HH:mm') > w.start || next.toFormat('HH:mm') === w.start).toBe(true);
          else expect(next.toFormat('HH:mm')).toBe(w.start);
          if (w.days) expect(w.days).toContain(next.weekday);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('without DST, isInsideWindow is the plain wall-clock test', () => {
    const toMin = (s: string): number => Number(s.slice(0, 2)) * 60 + Number(s.slice(3));
    fc.assert(
      fc.property(arbWindow, fc.constantFrom(...FIXED_OFFSET_ZONES), fc.integer({ min: MIN, max: MAX }), (w, zone, ms) => {
        const local = DateTime.fromMillis(ms, { zone });
        const m = local.hour * 60 + local.minute;
        const [start, end] = [toMin(w.start), toMin(w.end)];
        const listed = (weekday: number): boolean => w.days === undefined || w.days.includes(weekday);
        const yesterday = local.minus({ days: 1 }).weekday;
        const expected =
          start < end
            ? listed(local.weekday) && m >= start && m < end
            : (listed(local.weekday) && m >= start) || (listed(yesterday) && m < end);
        expect(isInsideWindow(w, zone, new Date(ms))).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });
});

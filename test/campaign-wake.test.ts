/**
 * When a campaign whose claim found nothing due looks for work again (campaign-pool.ts,
 * lookAgainAt): pure.
 */
import { describe, expect, it } from '@jest/globals';
import { IN_FLIGHT_RECHECK_MS, lookAgainAt } from '../services/scheduler/campaign-pool.js';

const now = Date.parse('2026-12-01T04:00:00Z');
const inMs = (ms: number) => new Date(now + ms);

describe('a campaign with nothing due looks again', () => {
  it('at its next queued message when nothing is in flight, never when nothing is queued either', () => {
    expect(lookAgainAt({ nextAt: inMs(900_000), inFlight: 0 }, now)).toBe(now + 900_000);
    expect(lookAgainAt({ nextAt: null, inFlight: 0 }, now)).toBeNull();
  });

  it('within IN_FLIGHT_RECHECK_MS while messages are in flight, however late the next queued one', () => {
    expect(IN_FLIGHT_RECHECK_MS).toBe(1000);
    expect(lookAgainAt({ nextAt: null, inFlight: 3 }, now)).toBe(now + IN_FLIGHT_RECHECK_MS);
    // A provider suspended for 15 minutes: a retry of a message in flight now is due long before.
    expect(lookAgainAt({ nextAt: inMs(900_000), inFlight: 1 }, now)).toBe(now + IN_FLIGHT_RECHECK_MS);
    // A queued message due sooner than that comes first.
    expect(lookAgainAt({ nextAt: inMs(300), inFlight: 1 }, now)).toBe(now + 300);
  });
});

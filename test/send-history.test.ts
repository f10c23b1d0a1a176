/**
 * The 15-minute send history behind the status API's rate_history: 10-second buckets per
 * service, zeros where nothing was sent (a pause is visible), old buckets forgotten.
 */
import { EventEmitter } from 'node:events';
import type { Engine } from '../src/engine.js';
import { attachSendHistory, SendHistory } from '../src/http/send-history.js';

const T0 = Date.UTC(2026, 10, 30, 12, 0, 0); // a bucket boundary
const at = (ms: number) => new Date(T0 + ms);

describe('SendHistory', () => {
  it('counts sends per service in 10 s buckets over 15 minutes, oldest first, zeros included', () => {
    const h = new SendHistory();
    h.record(1, at(0));
    h.record(1, at(9_999));
    h.record(2, at(5_000));
    h.record(1, at(10_000));
    // A pause of 30 s, then sending again.
    h.record(1, at(50_000));
    const w = h.window(T0 + 55_000);
    expect(w.bucketSeconds).toBe(10);
    expect(w.of(1)).toHaveLength(90);
    // The newest bucket holds now (50-60 s); the window starts 89 buckets earlier.
    expect(w.startsAt).toEqual(at(50_000 - 89 * 10_000));
    expect(w.of(1).slice(-6)).toEqual([2, 1, 0, 0, 0, 1]);
    expect(w.of(2).slice(-6)).toEqual([1, 0, 0, 0, 0, 0]);
    expect(w.of(3)).toEqual(Array(90).fill(0));
    expect(w.of(1).reduce((a, b) => a + b, 0)).toBe(4);
  });

  it('drops what is older than the window, in the answer and in memory', () => {
    const h = new SendHistory(10_000, 60_000);
    h.record(1, at(0));
    h.record(1, at(30_000));
    // 60 s later the first bucket is out of a 6-bucket window; the second is still in.
    expect(h.window(T0 + 60_000).of(1)).toEqual([0, 0, 1, 0, 0, 0]);
    expect(h.window(T0 + 55_000).of(1)).toEqual([1, 0, 0, 1, 0, 0]);
    h.record(1, at(120_000));
    expect(h.window(T0 + 55_000).of(1)).toEqual([0, 0, 0, 0, 0, 0]);
    expect((h as unknown as { buckets: Map<number, unknown> }).buckets.size).toBe(1);
  });

  it('refuses a window that is not a whole number of buckets', () => {
    expect(() => new SendHistory(10_000, 15_000)).toThrow(RangeError);
  });

  it("listens to the scheduler's sent events until detached", () => {
    const scheduler = new EventEmitter();
    const { history, detach } = attachSendHistory({ scheduler } as unknown as Pick<Engine, 'scheduler'>);
    scheduler.emit('sent', { serviceId: 7, at: at(1_000) });
    scheduler.emit('sent', { serviceId: 7, at: at(2_000) });
    detach();
    scheduler.emit('sent', { serviceId: 7, at: at(3_000) });
    expect(
      history
        .window(T0 + 5_000)
        .of(7)
        .at(-1),
    ).toBe(2);
    expect(scheduler.listenerCount('sent')).toBe(0);
  });
});

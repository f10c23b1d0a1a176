/**
 * The benchmark's Redis for the BullMQ peer (bench/lib/redis.ts): when nothing answers at the
 * given port, it starts Debian's redis-server on a free port, which answers PING, and stops it.
 * No timing is asserted here (figures are the bench's).
 */
import { createServer } from 'node:net';
import { benchRedis, ping } from '../bench/lib/redis.js';

async function deadPort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

test('starts a redis-server of its own when nothing answers, says so, and stops it', async () => {
  const port0 = await deadPort();
  expect(await ping('127.0.0.1', port0, 300)).toBe(false);
  const redis = await benchRedis(port0);
  try {
    expect(redis.port).not.toBe(port0);
    expect(redis.how).toContain(`nothing answered at 127.0.0.1:${port0}: started`);
    expect(await ping(redis.host, redis.port)).toBe(true);
    expect((await redis.pids()).length).toBe(1);
  } finally {
    await redis.stop();
  }
  expect(await ping(redis.host, redis.port, 300)).toBe(false);
});

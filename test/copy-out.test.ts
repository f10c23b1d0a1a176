/**
 * CopyOut's reading of the COPY protocol (services/kernel/copy-out.ts), as pure code: the server's
 * bytes cut at random places into socket reads must come out as exactly the CopyData messages,
 * whole and in order, with the notices between them skipped, and everything from CopyDone (or an
 * ErrorResponse) on handed back to pg's own reader. The real round trip is in generation-copy.test.
 */
import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import { CopyOut } from '../services/kernel/copy-out.js';

const message = (code: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(code, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};

/** A stand-in for pg's connection: a socket-like emitter with pg's one 'data' listener. */
function fakeConnection() {
  const stream = Object.assign(new EventEmitter(), { pause: () => stream, resume: () => stream });
  const toPg: Buffer[] = [];
  stream.on('data', (b: Buffer) => toPg.push(b));
  return { connection: { stream, query: () => undefined }, stream, toPg };
}

async function run(bytes: Buffer, cuts: number[]) {
  const { connection, stream, toPg } = fakeConnection();
  const out = new CopyOut('COPY x TO STDOUT');
  const got: Buffer[] = [];
  let ended = false;
  out.on('data', (b: Buffer) => got.push(b));
  out.on('end', () => (ended = true));
  out.submit(connection as never);
  let at = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b).concat(bytes.length)) {
    if (cut > at) stream.emit('data', bytes.subarray(at, cut));
    at = Math.max(at, cut);
  }
  await new Promise((resolve) => setImmediate(resolve)); // 'data' and 'end' come on later ticks
  return { out: Buffer.concat(got), pieces: got, toPg: Buffer.concat(toPg), ended };
}

const rows = fc.array(fc.uint8Array({ minLength: 0, maxLength: 40 }), { minLength: 0, maxLength: 30 });

describe('CopyOut', () => {
  it('passes every CopyData message through whole, skips notices, and hands the end to pg (property-based)', async () => {
    await fc.assert(
      fc.asyncProperty(rows, fc.array(fc.nat(), { maxLength: 12 }), fc.nat(), async (data, rawCuts, noticeAt) => {
        const dataMessages = data.map((r) => message('d', Buffer.from(r)));
        const notice = message('N', Buffer.from('SNOTICE\0Mhello\0\0'));
        const stream = [message('H', Buffer.from([1, 0, 0])), ...dataMessages];
        stream.splice(1 + (noticeAt % (dataMessages.length + 1)), 0, notice);
        const tail = Buffer.concat([message('C', Buffer.from('COPY 3\0')), message('Z', Buffer.from('I'))]);
        const bytes = Buffer.concat([...stream, message('c', Buffer.alloc(0)), tail]);
        const r = await run(
          bytes,
          rawCuts.map((c) => c % (bytes.length + 1)),
        );
        expect(r.out.equals(Buffer.concat(dataMessages))).toBe(true);
        // Every piece is a run of whole messages: the writer may abort between any two.
        for (const p of r.pieces) {
          let pos = 0;
          while (pos < p.length) pos += 1 + p.readUInt32BE(pos + 1);
          expect(pos).toBe(p.length);
        }
        expect(r.toPg.equals(tail)).toBe(true);
        expect(r.ended).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('stops at an ErrorResponse and gives pg the error from its first byte', async () => {
    const before = [message('d', Buffer.from('row one')), message('d', Buffer.from('row two'))];
    const error = message('E', Buffer.from('SERROR\0Mboom\0\0'));
    const bytes = Buffer.concat([message('H', Buffer.from([1, 0, 0])), ...before, error, message('Z', Buffer.from('E'))]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const r = await run(bytes, [cut]);
      expect(r.out.equals(Buffer.concat(before))).toBe(true);
      expect(r.toPg.equals(Buffer.concat([error, message('Z', Buffer.from('E'))]))).toBe(true);
      expect(r.ended).toBe(false);
    }
  });
});

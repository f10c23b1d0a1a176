/**
 * `COPY ... TO STDOUT` for node-postgres as a readable stream of whole CopyData MESSAGES, framing
 * included, to be written as they are to another connection in COPY FROM STDIN (a CopyData message
 * has the same bytes in both directions): copyIntoRaw below. Nothing is copied per row: each socket
 * read goes out as subarrays of itself, runs of complete CopyData messages; only a message cut by
 * the end of a read is copied, to be completed by the next. Only complete messages go out, so the
 * writer can always abort with CopyFail between two of them.
 *
 * Why: binary COPY sends one message per row. pg-copy-streams' `to()` (whose handling of the
 * connection this follows: the same take-over of the socket and hand-back to pg) strips and queues
 * every row's framing, and its `from()` frames every chunk again; at a million rows that cost the
 * engine 0.6-2 s of CPU on the development machine, competing with PostgreSQL's two backends for
 * its 2 cores.
 *
 * Protocol (PostgreSQL's "COPY Operations"): after the query, the server sends CopyOutResponse,
 * then CopyData messages, possibly NoticeResponse / ParameterStatus / NotificationResponse between
 * them, then CopyDone, CommandComplete and ReadyForQuery; or an ErrorResponse at any point. Every
 * message is a code byte and a 4-byte length (itself included). CopyData messages go out whole;
 * CopyOutResponse and the asynchronous messages are skipped; from CopyDone or an ErrorResponse on,
 * the bytes go back to pg, which completes the query (handleCommandComplete, handleReadyForQuery)
 * or fails it (handleError: the stream errors).
 *
 * States: reading (socket taken over, rows out) -> handed back (pg reads the socket again) ->
 * ended (push(null)) | errored.
 */
import { Readable } from 'node:stream';
import { from as copyFrom, type CopyStreamQuery as CopyFromStream } from 'pg-copy-streams';

const CODE = {
  CopyData: 0x64,
  CopyDone: 0x63,
  CopyOutResponse: 0x48,
  NoticeResponse: 0x4e,
  ParameterStatus: 0x53,
  Notification: 0x41,
  Error: 0x45,
};
const SKIPPED = new Set([CODE.CopyOutResponse, CODE.NoticeResponse, CODE.ParameterStatus, CODE.Notification]);

interface PgConnection {
  stream: NodeJS.ReadableStream & { listeners(e: 'data'): ((b: Buffer) => void)[] };
  query(text: string): void;
}

export class CopyOut extends Readable {
  rowCount = 0;
  private connection: PgConnection | undefined;
  private pgData: ((b: Buffer) => void) | undefined;
  /** The start of a message cut by the end of the last read, completed by the next. */
  private rest: Buffer | undefined;
  private wanted = true;
  private handedBack = false;

  constructor(readonly text: string) {
    super();
  }

  /** Called by pg's client when the query's turn comes. */
  submit(connection: PgConnection): void {
    this.connection = connection;
    const s = connection.stream;
    const listeners = s.listeners('data');
    if (listeners.length !== 1) throw new Error(`CopyOut: expected pg's one data listener, found ${listeners.length}`);
    this.pgData = listeners[0]!;
    s.removeListener('data', this.pgData);
    s.on('data', this.onData);
    connection.query(this.text);
  }

  // The socket stays in flowing mode (each read as it came, never concatenated by read()), and is
  // paused while the reader of this stream is full.
  private readonly onData = (chunk: Buffer) => {
    this.parse(chunk);
    if (!this.wanted && !this.handedBack) this.connection!.stream.pause();
  };

  override _read(): void {
    this.wanted = true;
    if (this.connection && !this.handedBack) this.connection.stream.resume();
  }

  private parse(chunk: Buffer): void {
    let pos = 0;
    const pieces: Buffer[] = [];
    if (this.rest) {
      // Complete the message left over from the last read, with only the bytes it still needs.
      const have = this.rest.length;
      const header = have >= 5 ? this.rest : Buffer.concat([this.rest, chunk.subarray(0, 5 - have)]);
      if (header.length < 5) {
        this.rest = header;
        return;
      }
      const total = 1 + header.readUInt32BE(1);
      const take = total - have;
      if (take > chunk.length) {
        this.rest = Buffer.concat([this.rest, chunk]);
        return;
      }
      const message = Buffer.concat([this.rest, chunk.subarray(0, take)]);
      this.rest = undefined;
      pos = take;
      const code = message[0]!;
      if (code === CODE.CopyData) pieces.push(message);
      else if (!SKIPPED.has(code))
        return this.finish(pieces, code === CODE.CopyDone ? chunk.subarray(pos) : Buffer.concat([message, chunk.subarray(pos)]), code);
    }
    let run = pos;
    for (;;) {
      if (chunk.length - pos < 1) break;
      const code = chunk[pos]!;
      if (code !== CODE.CopyData && !SKIPPED.has(code) && code !== CODE.CopyDone) {
        // An ErrorResponse, or anything else that ends copy-out mode: pg reads it (whole or not).
        if (pos > run) pieces.push(chunk.subarray(run, pos));
        return this.finish(pieces, chunk.subarray(pos), code);
      }
      if (chunk.length - pos < 5) break;
      const end = pos + 1 + chunk.readUInt32BE(pos + 1);
      if (end > chunk.length) break;
      if (code === CODE.CopyData) {
        pos = end;
        continue;
      }
      if (pos > run) pieces.push(chunk.subarray(run, pos));
      if (code === CODE.CopyDone) return this.finish(pieces, chunk.subarray(end), code);
      pos = run = end; // a skipped message
    }
    if (pos > run) pieces.push(chunk.subarray(run, pos));
    if (pos < chunk.length) this.rest = Buffer.from(chunk.subarray(pos));
    this.out(pieces);
  }

  private out(pieces: Buffer[]): void {
    for (const p of pieces) this.wanted = this.push(p);
  }

  /** Copy-out mode ended (CopyDone) or failed (ErrorResponse): the rest of the bytes are pg's. */
  private finish(pieces: Buffer[], toPg: Buffer, code: number): void {
    this.out(pieces);
    this.handBack(toPg);
    if (code === CODE.CopyDone) this.push(null);
  }

  /** Gives the socket back to pg with the bytes it has to read first. */
  private handBack(bytes: Buffer): void {
    this.handedBack = true;
    const s = this.connection!.stream;
    s.removeListener('data', this.onData);
    s.on('data', this.pgData!);
    this.pgData!(bytes);
    s.resume();
  }

  /** pg's query callbacks. */
  handleError(err: Error): void {
    this.destroy(err);
  }
  handleCommandComplete(msg: { text?: string } | undefined): void {
    const m = /COPY (\d+)/.exec(msg?.text ?? '');
    if (m) this.rowCount = Number(m[1]);
  }
  handleReadyForQuery(): void {}
  /** pg may set it (query_timeout); defining it lets pg find it. */
  callback(): void {}
}

export const copyOut = (text: string): CopyOut => new CopyOut(text);

/**
 * pg-copy-streams' COPY FROM STDIN stream, taking chunks that are already whole CopyData messages
 * (CopyOut's) and writing them unchanged: its one framing step, flushChunk, is replaced.
 */
export function copyIntoRaw(text: string): CopyFromStream {
  const into = copyFrom(text) as CopyFromStream & { flushChunk(chunk: Buffer): boolean; connection: { stream: NodeJS.WritableStream } };
  if (typeof into.flushChunk !== 'function') throw new Error('pg-copy-streams: flushChunk is gone; copyIntoRaw needs updating');
  into.flushChunk = (chunk: Buffer) => into.connection.stream.write(chunk);
  return into;
}

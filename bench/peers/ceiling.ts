/**
 * The ceiling: nodemailer's pooled SMTP transport (the very transport fairsend builds for a
 * service) sending already rendered messages from memory, no database, `inFlight` sends at a time.
 */
import type { SendMailOptions } from 'nodemailer';
import { createServiceTransport } from '../../services/delivery/transport.js';

export async function sendAll(port: number, mails: SendMailOptions[], connections: number, inFlight: number): Promise<void> {
  const transport = createServiceTransport({ host: '127.0.0.1', port }, connections, null);
  let next = 0;
  const worker = async () => {
    while (next < mails.length) await transport.sendMail(mails[next++]!);
  };
  try {
    await Promise.all(Array.from({ length: inFlight }, worker));
  } finally {
    transport.close();
  }
}

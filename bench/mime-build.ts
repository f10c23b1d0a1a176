/**
 * What building one message costs the thread that sends it: nodemailer's MailComposer and MIME
 * stream, as the send worker runs them (services/delivery/message.ts's options), into a sink that
 * drops the bytes. No SMTP, no database: CPU per message, nodemailer as shipped against nodemailer
 * with its header-key normalization remembered (services/delivery/header-keys.ts). The two take
 * turns within each round and the ratio is taken per round, so a busy machine moves both.
 *
 *   npm run build && node dist/bench/mime-build.js [--rounds=7] [--n=10000]
 */
import { Writable } from 'node:stream';
import MailComposer from 'nodemailer/lib/mail-composer';
import { buildMessage, compileForSending } from '../services/delivery/message.js';
import { forgetHeaderKeys, rememberHeaderKeys } from '../services/delivery/header-keys.js';
import { median } from './lib/stats.js';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => Number(args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? def);
const ROUNDS = arg('rounds', 7);
const N = arg('n', 10000);

const template = compileForSending({
  subject: 'News for {{ contact.name }}',
  html: '<h1>Hello {{ contact.name }}</h1><p>This month: three things worth your time.</p><p><a href="{{ unsubscribeUrl }}">Unsubscribe</a></p>',
  text: null,
});
const campaign = { id: 7, name: 'November', fromAddress: 'news@example.com', fromName: 'Fair Send' };
const options = { unsubscribeBase: 'https://u.example.com/u', unsubscribeSecret: 'bench-secret-bench-secret-bench-secret' };

function mailFor(i: number) {
  return buildMessage(
    template,
    campaign,
    { taskId: 7, contactId: i, email: `reader${i}@d${i % 1000}.example`, name: `Reader ${i}`, attributes: {} },
    options,
  );
}

const sink = () =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

async function buildOne(mail: ReturnType<typeof mailFor>): Promise<void> {
  const stream = new MailComposer(mail).compile().createReadStream();
  await new Promise<void>((resolve, reject) => {
    stream.on('error', reject);
    stream.pipe(sink()).on('finish', resolve).on('error', reject);
  });
}

/**
 * CPU of this thread per message (us) over n messages. The options are made beforehand, as the
 * main thread makes them (rendering is bench/render.ts's): the send worker gets them ready.
 */
async function measure(n: number, offset: number): Promise<number> {
  const mails = Array.from({ length: n }, (_, i) => mailFor(offset + i));
  const c0 = process.cpuUsage();
  for (const mail of mails) await buildOne(mail);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

async function main(): Promise<void> {
  // Warm both variants (JIT, the cache) before measuring.
  forgetHeaderKeys();
  await measure(2000, 0);
  rememberHeaderKeys();
  await measure(2000, 0);
  const shipped: number[] = [];
  const remembered: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const first = round % 2 === 0;
    for (const which of first ? ['shipped', 'remembered'] : ['remembered', 'shipped']) {
      if (which === 'shipped') forgetHeaderKeys();
      else rememberHeaderKeys();
      (which === 'shipped' ? shipped : remembered).push(await measure(N, round * N));
    }
    ratios.push(remembered[round]! / shipped[round]!);
  }
  console.log(`building one message (nodemailer MIME stream, no SMTP): ${ROUNDS} rounds of ${N.toLocaleString('en-US')}, taking turns\n`);
  console.log('| nodemailer as shipped (CPU us/msg, median) | header keys remembered | ratio (median of rounds, min-max) |');
  console.log('| --- | --- | --- |');
  console.log(
    `| ${median(shipped).toFixed(0)} | ${median(remembered).toFixed(0)} | ${median(ratios).toFixed(2)}x (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}) |`,
  );
}

await main();

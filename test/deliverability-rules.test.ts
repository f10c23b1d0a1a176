/**
 * Deferral rules as pure code: reply parsing, the built-in table against the replies the
 * providers send (texts as published or commonly logged), precedence of user rules, validation.
 */
import { BUILTIN_RULES, RuleSet, parseReply, parseRules } from '../services/deliverability/rules.js';
import { ValidationError } from '../services/kernel/errors.js';

const GMAIL_4728 =
  '421-4.7.28 [203.0.113.42] Our system has detected an unusual rate of\r\n421-4.7.28 unsolicited mail originating from your IP address. To protect our\r\n421 4.7.28 users from spam, mail sent from your IP address has been temporarily rate limited. - gsmtp';
const GMAIL_470 = '421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp';
const GMAIL_421 =
  '450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.';
const YAHOO = (ts: string) =>
  `421 4.7.0 [${ts}] Messages from 203.0.113.42 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes`;
const YAHOO_TS03 = '553 5.7.1 [TS03] All messages from 203.0.113.42 will be permanently deferred; Retrying will NOT succeed.';
const MS_4500 = '451 4.7.500 Access denied, please try again later. For more information please go to https://aka.ms/...';
const MS_4650 = '451 4.7.650 The mail server [203.0.113.42] has been temporarily rate limited due to IP reputation.';
const MS_5515 = '550 5.7.515 Access denied, sending domain example.com does not meet the required authentication level.';

describe('parseReply', () => {
  it('reads the code and enhanced code of single and multi-line replies', () => {
    expect(parseReply(GMAIL_4728)).toMatchObject({ code: 421, enhanced: '4.7.28' });
    expect(parseReply('451 Try later')).toEqual({ code: 451, text: '451 Try later' });
    expect(parseReply('Try later', 421)).toEqual({ code: 421, text: 'Try later' });
    expect(parseReply(YAHOO('TS04'))).toMatchObject({ code: 421, enhanced: '4.7.0' });
  });
});

describe('built-in rules', () => {
  const rules = new RuleSet();
  it.each([
    [GMAIL_4728, 'google', 'gmail-4.7.28-rate-limited', 'suspend'],
    [GMAIL_470, 'google', 'gmail-4.7.0-try-later', 'slow'],
    [GMAIL_421, 'google', 'gmail-4.2.1-recipient-rate', 'retry'],
    [YAHOO('TS01'), 'yahoo', 'yahoo-ts01-ts02-complaints', 'suspend'],
    [YAHOO('TS02'), 'yahoo', 'yahoo-ts01-ts02-complaints', 'suspend'],
    [YAHOO('TSS04'), 'yahoo', 'yahoo-ts04-volume', 'suspend'],
    [YAHOO('TS04'), 'yahoo', 'yahoo-ts04-volume', 'suspend'],
    [YAHOO_TS03, 'yahoo', 'yahoo-ts03-blocked', 'fail'],
    [MS_4500, 'microsoft', 'microsoft-4.7.5xx-6xx-throttled', 'slow'],
    [MS_4650, 'microsoft', 'microsoft-4.7.5xx-6xx-throttled', 'slow'],
    [MS_5515, 'microsoft', 'microsoft-5.7.515-authentication', 'fail'],
    ['421 4.3.2 Service shutting down', 'other:acme.com', 'generic-421-try-later', 'slow'],
    ['451 4.3.0 Too many messages, try again later', 'other:acme.com', 'generic-451-try-later', 'slow'],
  ])('%s (%s) -> %s', (reply, provider, name, action) => {
    const m = rules.match(reply, provider as never);
    expect(m?.rule.name).toBe(name);
    expect(m?.rule.action.type).toBe(action);
  });

  it('leaves replies no rule names to the usual retry or failure', () => {
    expect(rules.match('451 4.3.0 Local error in processing', 'other:acme.com')).toBeUndefined();
    expect(rules.match('550 5.1.1 No such user', 'google')).toBeUndefined();
    // Microsoft's range ends at 4.7.650; another provider's 4.7.500 is not Microsoft's rule
    expect(rules.match('451 4.7.651 Please try again later', 'microsoft')?.rule.name).toBe('generic-451-try-later');
    expect(rules.match('451 4.7.651 Something else', 'microsoft')).toBeUndefined();
    expect(rules.match(MS_4500, 'yahoo')?.rule.name).toBe('generic-451-try-later');
  });

  it('scopes Gmail 4.7.28 to the pair and names a time', () => {
    const r = BUILTIN_RULES.find((x) => x.name === 'gmail-4.7.28-rate-limited')!;
    expect(r.scope).toBe('provider');
    expect(r.action).toEqual({ type: 'suspend', seconds: 900 });
  });
});

describe('user rules', () => {
  it('come before the built-in ones', () => {
    const mine = parseRules([
      { name: 'my-gmail', provider: 'google', enhanced: '4.7.28', scope: 'provider', action: { type: 'slow', factor: 0.25 } },
      { name: 'acme-greylist', provider: 'other:acme.com', code: 451, pattern: 'greylist', scope: 'message', action: { type: 'retry' } },
    ]);
    const rules = new RuleSet(mine);
    expect(rules.match(GMAIL_4728, 'google')?.rule.name).toBe('my-gmail');
    expect(rules.match('451 4.7.1 Greylisted, come back later', 'other:acme.com')?.rule.name).toBe('acme-greylist');
    expect(rules.match('451 4.7.1 Greylisted, come back later', 'other:beta.com')).toBeUndefined();
  });

  it('are refused with the field named', () => {
    const bad = (rule: unknown) => {
      try {
        parseRules([rule]);
      } catch (e) {
        expect(e).toBeInstanceOf(ValidationError);
        return (e as ValidationError).issues.map((i) => `${i.path}: ${i.message}`);
      }
      throw new Error('accepted');
    };
    expect(bad({ name: 'x', enhanced: '4.7', scope: 'provider', action: { type: 'retry' } })).toEqual([
      expect.stringMatching(/^rules\.0\.enhanced: must be like 4\.7\.28/),
    ]);
    expect(bad({ name: 'x', pattern: '([', scope: 'provider', action: { type: 'retry' } })).toEqual([
      'rules.0.pattern: must be a valid regular expression',
    ]);
    expect(bad({ name: 'x', code: 421, scope: 'provider', action: { type: 'slow', factor: 2 } })[0]).toMatch(/^rules\.0\.action\.factor: /);
    expect(bad({ name: 'x', scope: 'provider', action: { type: 'retry' } })).toEqual([
      'rules.0: a rule needs at least one of code, enhanced or pattern',
    ]);
    expect(bad({ name: 'x', code: 421, scope: 'message', action: { type: 'suspend', seconds: 60 } })).toEqual([
      'rules.0.action: scope "message" allows only the actions retry and fail',
    ]);
    expect(bad({ name: 'x', code: 421, provider: 'gmail', scope: 'provider', action: { type: 'retry' } })[0]).toMatch(
      /^rules\.0\.provider: /,
    );
    expect(bad({ name: 'x', enhanced: '4.7.600-4.7.500', scope: 'provider', action: { type: 'retry' } })[0]).toMatch(/run upwards/);
  });
});

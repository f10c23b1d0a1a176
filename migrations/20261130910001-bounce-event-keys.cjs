'use strict';
/**
 * bounce_event_keys: the reports already applied, by a key their sender gives them, so a report
 * delivered twice is applied once. Providers deliver webhooks at least once (a timeout or a 5xx
 * makes SendGrid, Mailgun, SNS and the others send the same events again), the IMAP poller
 * re-reads a message when it stopped between applying it and flagging it \Seen, and the same DSN
 * can arrive both by SMTP and in a mailbox. Applied twice, a soft bounce counts twice towards the
 * suppression limit and a complaint twice towards a campaign's safety breaker.
 *
 * A key names one event: the provider's event id (SendGrid sg_event_id, Mailgun event id, Postmark
 * ID, SparkPost event_id, an SNS MessageId with the recipient), or a report's own Message-ID with
 * the recipient, or an API caller's event_id. cleanup_old_data deletes keys older than the
 * retention, long after any provider stops retrying.
 */

const UP = `
CREATE TABLE bounce_event_keys (
  key         text PRIMARY KEY CHECK (length(key) <= 600),
  received_at timestamptz NOT NULL
);
CREATE INDEX bounce_event_keys_received_at ON bounce_event_keys (received_at);
`;
const DOWN = `DROP TABLE IF EXISTS bounce_event_keys;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

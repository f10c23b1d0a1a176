'use strict';
/**
 * delivery_counts: the hourly, daily and warm-up caps of (service, mailbox provider) pairs, one
 * row per window (deliverability/cap-ledger.ts). `sent` counts the units reserved from the cap:
 * an engine reserves before it sends (never beyond the cap, in one upsert), and gives back what
 * it did not use at a clean stop, so a restart, a takeover or a second engine continues from the
 * row. `last_grant` carries the grant of the last reservation out of its statement. Windows that
 * ended more than a day ago are pruned when a runner starts.
 */

const UP = `
CREATE TABLE delivery_counts (
  service_id integer NOT NULL REFERENCES email_services(id) ON DELETE CASCADE,
  -- a mailbox provider, or '*' for a warm-up schedule of the whole service
  provider text NOT NULL,
  scope text NOT NULL CHECK (scope IN ('hour', 'day', 'warmup')),
  -- the window: a UTC hour, a quota day, or a warm-up schedule's zone and day
  bucket text NOT NULL,
  sent integer NOT NULL CHECK (sent >= 0),
  last_grant integer NOT NULL DEFAULT 0,
  ends_at timestamptz NOT NULL,
  PRIMARY KEY (service_id, provider, scope, bucket)
);`;
const DOWN = `DROP TABLE IF EXISTS delivery_counts;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

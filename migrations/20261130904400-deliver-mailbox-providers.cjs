'use strict';
/**
 * Mailbox providers (issue 13, services/deliverability/):
 *
 * - subtasks.provider: the recipient's mailbox provider (`google`, `microsoft`, `yahoo`, `apple`,
 *   `other:<domain>`), written by generation so the scheduler can group and skip by it. Nullable
 *   and without a default, so adding it rewrites nothing (PostgreSQL stores no value for existing
 *   rows); rows generated before this migration have NULL and are resolved from their address by
 *   the built-in table when they are sent.
 * - mail_domains: the provider of each recipient domain, filled before a campaign's one
 *   INSERT ... SELECT (MX lookups happen there, never per row inside the statement).
 * - email_services.deliverability: the service's own shaping settings (limits per provider,
 *   adaptive settings, deferral rules, warm-up schedules), validated by services/deliverability/shaping.ts.
 */

const UP = `
ALTER TABLE subtasks ADD COLUMN provider text;
CREATE TABLE mail_domains (
  domain       text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 255),
  provider     text NOT NULL CHECK (provider IN ('google', 'microsoft', 'yahoo', 'apple') OR provider LIKE 'other:%'),
  -- How the provider was found: the built-in table, the MX hosts, or a failed lookup (retried sooner).
  source       text NOT NULL CHECK (source IN ('builtin', 'mx', 'fallback')),
  resolved_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE email_services ADD COLUMN deliverability jsonb;
`;
const DOWN = `
ALTER TABLE email_services DROP COLUMN IF EXISTS deliverability;
DROP TABLE IF EXISTS mail_domains;
ALTER TABLE subtasks DROP COLUMN IF EXISTS provider;
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

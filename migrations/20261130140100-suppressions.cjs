'use strict';
/**
 * The suppression list and the bounce record (issue 14).
 *
 * suppressions: addresses fairsend must not mail. user_id NULL is the admin-managed global list;
 * otherwise the entry applies to that user's campaigns only. `email` is the canonical form
 * (services/bounces/canonical.ts), so the list matches however a contact's address was typed.
 * Generation excludes suppressed addresses with an anti-join on (email): the index below serves it
 * for a small list, and a hash anti-join serves it for a large one.
 *
 * bounce_events: every hard bounce, soft bounce and complaint received, whoever reported it (DSN,
 * ARF, provider webhook, admin). Soft bounces are counted per (user, address) over a window to
 * suppress an address that keeps failing; the campaign's counts feed the safety breakers.
 *
 * inbound_review: inbound mail that was not a parseable report (autoreplies, unknown formats), kept
 * for a person to look at and never acted on.
 */

const UP = `
CREATE TABLE suppressions (
  id          bigserial PRIMARY KEY,
  user_id     integer REFERENCES users (id) ON DELETE CASCADE,
  email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
  reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual')),
  source      text NOT NULL DEFAULT 'api' CHECK (length(source) <= 100),
  detail      text CHECK (length(detail) <= 1000),
  created_at  timestamptz NOT NULL DEFAULT now()
);
-- One entry per scope and address: the global list is scope 0 (user ids start at 1).
CREATE UNIQUE INDEX suppressions_scope_email_key ON suppressions (COALESCE(user_id, 0), email);
CREATE INDEX suppressions_email_idx ON suppressions (email);

CREATE TABLE bounce_events (
  id           bigserial PRIMARY KEY,
  type         text NOT NULL CHECK (type IN ('hard_bounce', 'soft_bounce', 'complaint')),
  email        text NOT NULL CHECK (length(email) <= 320),
  user_id      integer,
  task_id      bigint,
  contact_id   bigint,
  service_id   integer,
  source       text NOT NULL CHECK (length(source) <= 100),
  status_code  text CHECK (length(status_code) <= 20),
  detail       text CHECK (length(detail) <= 1000),
  received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bounce_events_soft_idx ON bounce_events (email, received_at) WHERE type = 'soft_bounce';
CREATE INDEX bounce_events_task_idx ON bounce_events (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX bounce_events_received_idx ON bounce_events (received_at);

CREATE TABLE inbound_review (
  id           bigserial PRIMARY KEY,
  source       text NOT NULL CHECK (length(source) <= 100),
  reason       text NOT NULL CHECK (length(reason) <= 500),
  envelope_to  text,
  subject      text,
  raw          text NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_review_received_idx ON inbound_review (received_at);

-- Safety breakers: counts of a campaign's hard bounces and complaints, and why it paused itself.
ALTER TABLE tasks ADD COLUMN hard_bounce_count integer NOT NULL DEFAULT 0 CHECK (hard_bounce_count >= 0);
ALTER TABLE tasks ADD COLUMN complaint_count integer NOT NULL DEFAULT 0 CHECK (complaint_count >= 0);
ALTER TABLE tasks ADD COLUMN pause_reason text CHECK (length(pause_reason) <= 500);
-- A user paused across campaigns (by an admin or a breaker): the reason, NULL when not paused.
ALTER TABLE users ADD COLUMN paused_reason text CHECK (length(paused_reason) <= 500);
`;

const DOWN = `
ALTER TABLE users DROP COLUMN IF EXISTS paused_reason;
ALTER TABLE tasks DROP COLUMN IF EXISTS pause_reason;
ALTER TABLE tasks DROP COLUMN IF EXISTS complaint_count;
ALTER TABLE tasks DROP COLUMN IF EXISTS hard_bounce_count;
DROP TABLE IF EXISTS inbound_review;
DROP TABLE IF EXISTS bounce_events;
DROP TABLE IF EXISTS suppressions;
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

'use strict';
/**
 * send_attempts: one row per attempt to hand a message to a sending service (issue 14): when,
 * through which service, to which provider, what the server replied (SMTP code, enhanced status
 * code, the reply's text, truncated) and how long it took. The subtask keeps the current state;
 * this table says how it got there ("what happened to this recipient?").
 *
 * Written on the hot path, in the scheduler's outcome write (the same statement), so it is kept
 * lean: no primary key, no foreign keys (like subtasks), one B-tree for the recipient's history and
 * a BRIN index on the time for the retention job (append-only, so the time follows the heap).
 *
 * `provider` is the recipient's domain; `mailbox_provider` is left for the mailbox provider
 * (gmail, outlook, ...) once subtasks carry one (another change fills it).
 */

const UP = `
CREATE TABLE send_attempts (
  task_id           bigint NOT NULL,
  contact_id        bigint NOT NULL,
  attempted_at      timestamptz NOT NULL,
  service_id        integer,
  provider          text,
  mailbox_provider  text,
  result            text NOT NULL CHECK (result IN ('accepted', 'transient', 'permanent', 'ambiguous', 'connection')),
  smtp_code         smallint,
  enhanced_code     text,
  reply             text CHECK (length(reply) <= 500),
  duration_ms       integer
);
CREATE INDEX send_attempts_subtask_idx ON send_attempts (task_id, contact_id);
CREATE INDEX send_attempts_time_brin ON send_attempts USING brin (attempted_at);

-- A campaign's attempts go with it, as its subtasks do (statement-level, see the initial schema).
CREATE OR REPLACE FUNCTION fairsend_delete_campaign_subtasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM subtasks WHERE task_id IN (SELECT id FROM gone);
  DELETE FROM send_attempts WHERE task_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
`;

const DOWN = `
CREATE OR REPLACE FUNCTION fairsend_delete_campaign_subtasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM subtasks WHERE task_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
DROP TABLE IF EXISTS send_attempts;
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

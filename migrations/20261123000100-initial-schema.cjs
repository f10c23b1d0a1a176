'use strict';
/**
 * fairsend's initial schema. Plain SQL, so every constraint the engine relies on is visible in
 * one place and enforced by PostgreSQL itself, whoever writes to the tables.
 *
 * Subtask indexes are deliberately few: a campaign's whole queue is written in one
 * INSERT ... SELECT (1,000,000 rows in a few seconds), and every index costs on that path.
 * The primary key (task_id, contact_id) does double duty: a second generation of the same
 * campaign would violate it, and it is the scheduler's claim index (next queued subtask of a
 * campaign by contact id). A subtask is named by that pair; so is its Message-ID.
 */

const STATUS = {
  task: ['scheduled', 'sending', 'paused', 'completed', 'cancelled'],
  subtask: ['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown'],
  contact: ['active', 'unsubscribed', 'bounced'],
  role: ['admin', 'user'],
};
const list = (xs) => xs.map((x) => `'${x}'`).join(', ');

const UP = `
CREATE TABLE users (
  id               serial PRIMARY KEY,
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  email            text NOT NULL CHECK (email ~ '^[^@\\s]+@[^@\\s]+$' AND length(email) <= 320),
  role             text NOT NULL DEFAULT 'user' CHECK (role IN (${list(STATUS.role)})),
  remaining_quota  bigint NOT NULL DEFAULT 0 CHECK (remaining_quota >= 0),
  timezone         text NOT NULL DEFAULT 'UTC',
  api_token_hash   text UNIQUE,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE email_services (
  id                    serial PRIMARY KEY,
  name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  transport             jsonb NOT NULL CHECK (jsonb_typeof(transport) = 'object'),
  sending_rate          numeric(12,4) NOT NULL CHECK (sending_rate >= 0),
  daily_quota           integer NOT NULL CHECK (daily_quota >= 0),
  used_quota            integer NOT NULL DEFAULT 0 CHECK (used_quota >= 0),
  quota_day             date NOT NULL DEFAULT CURRENT_DATE,
  quota_timezone        text NOT NULL DEFAULT 'UTC',
  max_connections       integer NOT NULL DEFAULT 5 CHECK (max_connections BETWEEN 1 AND 100),
  open_to_all           boolean NOT NULL DEFAULT true,
  enabled               boolean NOT NULL DEFAULT true,
  dkim                  jsonb,
  is_healthy            boolean NOT NULL DEFAULT true,
  consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
  last_error            text,
  last_error_at         timestamptz,
  last_sent_at          timestamptz,
  next_probe_at         timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_services (
  user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  service_id  integer NOT NULL REFERENCES email_services (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, service_id)
);
CREATE INDEX user_services_service_idx ON user_services (service_id);

CREATE TABLE contacts (
  id          bigserial PRIMARY KEY,
  user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  email       text NOT NULL CHECK (email ~ '^[^@\\s]+@[^@\\s]+$' AND length(email) <= 320),
  name        text CHECK (length(name) <= 200),
  tags        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
  attributes  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
  status      text NOT NULL DEFAULT 'active' CHECK (status IN (${list(STATUS.contact)})),
  timezone    text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX contacts_user_email_key ON contacts (user_id, lower(email));
CREATE INDEX contacts_tags_gin ON contacts USING gin (tags);

CREATE TABLE templates (
  id          serial PRIMARY KEY,
  user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 998 AND subject !~ '[\\r\\n]'),
  html        text CHECK (length(html) <= 1048576),
  text        text CHECK (length(text) <= 1048576),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (html IS NOT NULL OR text IS NOT NULL)
);
CREATE INDEX templates_user_idx ON templates (user_id);

CREATE TABLE tasks (
  id               bigserial PRIMARY KEY,
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  status           text NOT NULL DEFAULT 'scheduled' CHECK (status IN (${list(STATUS.task)})),
  scheduled_at     timestamptz NOT NULL DEFAULT now(),
  timezone         text NOT NULL DEFAULT 'UTC',
  from_address     text NOT NULL CHECK (from_address !~ '[\\r\\n]' AND length(from_address) <= 320),
  from_name        text CHECK (from_name !~ '[\\r\\n]' AND length(from_name) <= 200),
  created_by       integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  contacts         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(contacts) = 'array'),
  templates        jsonb NOT NULL CHECK (jsonb_typeof(templates) = 'array' AND jsonb_array_length(templates) >= 1),
  recipient_rule   jsonb CHECK (recipient_rule IS NULL OR jsonb_typeof(recipient_rule) = 'object'),
  send_window      jsonb CHECK (send_window IS NULL OR jsonb_typeof(send_window) = 'object'),
  priority         integer NOT NULL DEFAULT 0,
  total_count      integer NOT NULL DEFAULT 0 CHECK (total_count >= 0),
  sent_count       integer NOT NULL DEFAULT 0 CHECK (sent_count >= 0),
  failed_count     integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
  cancelled_count  integer NOT NULL DEFAULT 0 CHECK (cancelled_count >= 0),
  unknown_count    integer NOT NULL DEFAULT 0 CHECK (unknown_count >= 0),
  reserved_quota   integer NOT NULL DEFAULT 0 CHECK (reserved_quota >= 0),
  generated_at     timestamptz,
  completed_at     timestamptz,
  wait_reason      text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_due_idx ON tasks (scheduled_at) WHERE generated_at IS NULL AND status = 'scheduled';
CREATE INDEX tasks_active_idx ON tasks (created_by, priority DESC, id) WHERE status IN ('scheduled', 'sending');

CREATE TABLE subtasks (
  task_id           bigint NOT NULL,
  contact_id        bigint NOT NULL,
  user_id           integer NOT NULL,
  email             text NOT NULL,
  template_id       integer NOT NULL,
  -- The service that carried (or is carrying) the message: history, so no foreign key.
  service_id        integer,
  status            text NOT NULL DEFAULT 'queued' CHECK (status IN (${list(STATUS.subtask)})),
  attempts          smallint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  not_before        timestamptz NOT NULL DEFAULT now(),
  -- The recipient's zone, kept only when the campaign has a send window (re-checked at send time).
  timezone          text,
  lease_owner       text,
  lease_expires_at  timestamptz,
  message_id        text,
  last_error        text,
  sent_at           timestamptz,
  -- No updated_at: every byte and default is paid a million times per large campaign; sent_at and
  -- the lease carry the times that matter.
  PRIMARY KEY (task_id, contact_id),
  CHECK ((status = 'sending') = (lease_owner IS NOT NULL))
);
-- Leases to recover after a crash: only rows in 'sending' are in this index, so it stays tiny.
CREATE INDEX subtasks_leases_idx ON subtasks (lease_expires_at) WHERE status = 'sending';
-- Retries waiting for their backoff: generated rows have attempts = 0 and never enter this index,
-- so it costs nothing at generation and stays as small as the set of messages being retried.
CREATE INDEX subtasks_retries_idx ON subtasks (task_id, not_before) WHERE status = 'queued' AND attempts > 0;

-- No foreign keys on subtasks: their RI triggers fire once per inserted row, even for NULLs, and
-- cost about 1 to 10 s per million generated rows on the development machine (measured: 7.9 s
-- without, 17.4 s with a task_id FK; 1.0 s for an all-NULL service_id FK). task_id and user_id are
-- written only by generation, from a locked campaign row; removal follows the campaign through this
-- statement-level trigger (a user's deletion cascades to their tasks, and so here).
CREATE FUNCTION fairsend_delete_campaign_subtasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM subtasks WHERE task_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
CREATE TRIGGER tasks_delete_subtasks AFTER DELETE ON tasks
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION fairsend_delete_campaign_subtasks();

CREATE TABLE error_logs (
  id             bigserial PRIMARY KEY,
  error_type     text NOT NULL CHECK (length(error_type) <= 100),
  message        text NOT NULL CHECK (length(message) <= 1000),
  count          integer NOT NULL DEFAULT 1 CHECK (count >= 1),
  service_id     integer REFERENCES email_services (id) ON DELETE SET NULL,
  first_seen_at  timestamptz NOT NULL DEFAULT now(),
  last_seen_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (error_type, message)
);

CREATE TABLE scheduler_instances (
  id            text PRIMARY KEY,
  host          text NOT NULL,
  pid           integer NOT NULL,
  started_at    timestamptz NOT NULL DEFAULT now(),
  heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
`;

const DOWN = `
DROP TABLE IF EXISTS scheduler_instances;
DROP TABLE IF EXISTS error_logs;
DROP TABLE IF EXISTS subtasks;
DROP TRIGGER IF EXISTS tasks_delete_subtasks ON tasks;
DROP FUNCTION IF EXISTS fairsend_delete_campaign_subtasks();
DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS templates;
DROP TABLE IF EXISTS contacts;
DROP TABLE IF EXISTS user_services;
DROP TABLE IF EXISTS email_services;
DROP TABLE IF EXISTS users;
-- The seeders' records (sequelize-cli and the engine both keep them in "SequelizeData") describe
-- rows that no longer exist once every table is gone: without this, db:seed:all after
-- db:migrate:undo:all and db:migrate would find the demo data "done" and seed nothing.
DROP TABLE IF EXISTS "SequelizeData";
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

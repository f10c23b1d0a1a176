'use strict';
/**
 * contact_status_events: every unsubscribe (when, from which campaign, how: the one-click POST,
 * the confirmation page, the API, a complaint) and every re-activation (which admin, why). A
 * contact's status says where it is; this table says how it got there. Rows outlive the campaign
 * they name (task_id is kept, not a foreign key: retention may delete old campaigns) but go with
 * the contact.
 */

const UP = `
CREATE TABLE contact_status_events (
  id          bigserial PRIMARY KEY,
  contact_id  bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
  user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  email       text NOT NULL,
  from_status text NOT NULL CHECK (from_status IN ('active', 'unsubscribed', 'bounced')),
  to_status   text NOT NULL CHECK (to_status IN ('active', 'unsubscribed', 'bounced')),
  method      text NOT NULL CHECK (method IN ('one_click', 'page', 'api', 'complaint', 'bounce', 'reactivation')),
  task_id     bigint,
  actor_id    integer REFERENCES users (id) ON DELETE SET NULL,
  reason      text CHECK (length(reason) <= 1000),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (method <> 'reactivation' OR (reason IS NOT NULL AND length(btrim(reason)) > 0))
);
CREATE INDEX contact_status_events_contact ON contact_status_events (contact_id, id);
CREATE INDEX contact_status_events_task ON contact_status_events (task_id) WHERE task_id IS NOT NULL;
`;
const DOWN = `DROP TABLE IF EXISTS contact_status_events;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

'use strict';
/**
 * quota_holds: quota units an engine reserved from a service's daily quota and has not used yet,
 * as of its last write. email_services.used_quota counts them while they are held; an engine that
 * dies leaves its holds behind, and lease recovery gives them back to the quota (the exact ledger,
 * docs/delivery.md). Rows of an engine that stopped cleanly are gone: it returns them at stop.
 */

const UP = `
CREATE TABLE quota_holds (
  instance_id text NOT NULL,
  service_id integer NOT NULL REFERENCES email_services(id) ON DELETE CASCADE,
  day date NOT NULL,
  units integer NOT NULL CHECK (units >= 0),
  PRIMARY KEY (instance_id, service_id, day)
);`;
const DOWN = `DROP TABLE IF EXISTS quota_holds;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

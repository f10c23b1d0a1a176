'use strict';
/**
 * A subtask has a lease owner only while it is being sent. The scheduler's outcome write relies
 * on it (it finds a leased row by primary key and owner alone, see services/scheduler/sql.ts), so
 * the database enforces it. Added NOT VALID then validated: the check scans an existing table
 * once without blocking writes for the scan.
 */

const UP = `
ALTER TABLE subtasks ADD CONSTRAINT subtasks_lease_only_while_sending
  CHECK (lease_owner IS NULL OR status = 'sending') NOT VALID;
ALTER TABLE subtasks VALIDATE CONSTRAINT subtasks_lease_only_while_sending;
`;
const DOWN = `ALTER TABLE subtasks DROP CONSTRAINT IF EXISTS subtasks_lease_only_while_sending;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

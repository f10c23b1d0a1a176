'use strict';
/**
 * The `metrics` role: a token that may only scrape /metrics (Prometheus), nothing under /api.
 *
 * Down: the check goes back to admin and user; a metrics user becomes a plain user without a token
 * (so nothing gains access it did not have), and must be given a new token to be used again.
 */

const UP = `
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'user', 'metrics'));
`;
const DOWN = `
UPDATE users SET role = 'user', api_token_hash = NULL, updated_at = now() WHERE role = 'metrics';
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'user'));
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

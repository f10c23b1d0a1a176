'use strict';
/**
 * tasks_due_idx orders by (scheduled_at, id), the order in which generation takes due campaigns
 * (services/generation.ts, DUE_TASK_SQL: ORDER BY scheduled_at, id LIMIT 1 FOR UPDATE SKIP
 * LOCKED). On scheduled_at alone, PostgreSQL read every due campaign and sorted them to take one:
 * with 15,000 due (bench W4 seeding 10,000 users x 3 campaigns) 100 ms per campaign generated,
 * so a backlog of n due campaigns cost n^2 / 2 index reads. With the id in the index the pick
 * reads the first entries in order and stops.
 */

const UP = `
DROP INDEX tasks_due_idx;
CREATE INDEX tasks_due_idx ON tasks (scheduled_at, id) WHERE generated_at IS NULL AND status = 'scheduled';`;
const DOWN = `
DROP INDEX tasks_due_idx;
CREATE INDEX tasks_due_idx ON tasks (scheduled_at) WHERE generated_at IS NULL AND status = 'scheduled';`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

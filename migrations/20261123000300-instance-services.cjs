'use strict';
/**
 * scheduler_instances.services: the sending services each engine owns, written with its
 * heartbeat, so status can show how services are spread across processes.
 */

const UP = `ALTER TABLE scheduler_instances ADD COLUMN services integer[] NOT NULL DEFAULT '{}';`;
const DOWN = `ALTER TABLE scheduler_instances DROP COLUMN IF EXISTS services;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

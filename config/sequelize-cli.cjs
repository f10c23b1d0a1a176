'use strict';
// sequelize-cli reads its connection from DATABASE_URL, the same variable the engine reads.
// Seeders are recorded in the SequelizeData table, as the engine records them.
if (!process.env.DATABASE_URL) {
  throw new Error('sequelize-cli needs DATABASE_URL (e.g. postgres://user@127.0.0.1:5432/fairsend)');
}
const settings = {
  use_env_variable: 'DATABASE_URL',
  dialect: 'postgres',
  seederStorage: 'sequelize',
  seederStorageTableName: 'SequelizeData',
  migrationStorageTableName: 'SequelizeMeta',
  logging: false,
};
module.exports = { development: settings, test: settings, production: settings };

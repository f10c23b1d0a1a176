'use strict';
/**
 * contact_imports: large contact imports run as background jobs (services/import-jobs.ts). One row
 * per job, written by the process running it: its progress (rows read, bytes read of the total),
 * refreshed at least every few seconds as a heartbeat, and at the end its outcome (the counts, or
 * the error with its issues). The rows themselves are never stored here: the import writes them in
 * its own single transaction, all or nothing.
 */

const UP = `
CREATE TABLE contact_imports (
  id               bigserial PRIMARY KEY,
  user_id          integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  format           text NOT NULL CHECK (format IN ('csv', 'json')),
  status           text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
  rows_read        integer NOT NULL DEFAULT 0 CHECK (rows_read >= 0),
  bytes_read       bigint NOT NULL DEFAULT 0 CHECK (bytes_read >= 0),
  bytes_total      bigint CHECK (bytes_total >= 0),
  rows_total       integer CHECK (rows_total >= 0),
  result           jsonb CHECK (result IS NULL OR jsonb_typeof(result) = 'object'),
  error            jsonb CHECK (error IS NULL OR jsonb_typeof(error) = 'object'),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz
);
CREATE INDEX contact_imports_user_idx ON contact_imports (user_id, id);
`;
const DOWN = `DROP TABLE IF EXISTS contact_imports;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

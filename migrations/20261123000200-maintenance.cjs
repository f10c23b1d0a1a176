'use strict';
/**
 * Tables of the maintenance jobs (services/maintenance/).
 *
 * - maintenance_runs: one row per planned run of a singleton job (ANALYZE, purge, reports), inserted
 *   with ON CONFLICT DO NOTHING by the process that claims it, so with several fairsend processes each
 *   planned run happens once; the claimer records the outcome. Rows older than the retention period
 *   are purged by cleanup_old_data.
 * - purged_campaigns: campaigns whose subtasks cleanup_old_data has deleted (or is deleting). The row
 *   is inserted in the transaction that stores the campaign's final counts on tasks, and only that
 *   transaction stores them: a resumed or concurrent purge never overwrites them. Progress reporting
 *   reads the counts on tasks for these campaigns, their subtasks being gone.
 * - performance_reports: the daily performance_report snapshots (one jsonb document each).
 */

const UP = `
CREATE TABLE maintenance_runs (
  job            text NOT NULL CHECK (length(job) BETWEEN 1 AND 100),
  scheduled_for  timestamptz NOT NULL,
  claimed_by     text NOT NULL CHECK (length(claimed_by) <= 200),
  claimed_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz,
  outcome        text CHECK (outcome IN ('success', 'failure')),
  duration_ms    integer CHECK (duration_ms >= 0),
  error          text,
  PRIMARY KEY (job, scheduled_for)
);

CREATE TABLE purged_campaigns (
  task_id           bigint PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
  counts_saved_at   timestamptz NOT NULL DEFAULT now(),
  subtasks_deleted  bigint NOT NULL DEFAULT 0 CHECK (subtasks_deleted >= 0),
  finished_at       timestamptz
);

CREATE TABLE performance_reports (
  id          bigserial PRIMARY KEY,
  created_at  timestamptz NOT NULL DEFAULT now(),
  report      jsonb NOT NULL CHECK (jsonb_typeof(report) = 'object')
);
CREATE INDEX performance_reports_created_idx ON performance_reports (created_at DESC, id DESC);
`;

const DOWN = `
DROP TABLE IF EXISTS performance_reports;
DROP TABLE IF EXISTS purged_campaigns;
DROP TABLE IF EXISTS maintenance_runs;
`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

'use strict';
/**
 * One canonical address per mailbox, for the rows written before the door canonicalized (issue 17).
 *
 * Contacts: every address is rewritten to the canonical form of services/email-address.ts (NFC, the
 * domain in lowercase punycode). The door REFUSES invisible code points and a trailing dot; rows
 * already stored with them are repaired instead, since they reached the same mailbox on the wire:
 * invisible code points (soft hyphen, zero-width characters, bidi controls) are removed and a
 * trailing dot on the domain is dropped. A row that still is not an address after that (a local
 * part with fullwidth characters, garbage) is left as it is and counted in the log: guessing the
 * mailbox of a fullwidth local part is the receiving server's business.
 *
 * Duplicates found (one user, one canonical address, compared case-insensitively like the unique
 * index) are merged into the OLDEST row (lowest id), which keeps its id:
 * - its status becomes the most restrictive of the group: unsubscribed, then bounced, then active;
 *   the change is recorded in contact_status_events with method 'merge' and the merged addresses
 *   as the reason;
 * - tags are the union, attributes the merge (the kept row's values win), name and timezone the
 *   kept row's or else the first non-null;
 * - history moves to the kept row: contact_status_events, bounce_events, subtasks (contact_id)
 *   and the explicit recipient lists of campaigns (tasks.contacts). A merged row's subtask in a
 *   campaign that also has one for the kept row cannot move (the primary key is (task_id,
 *   contact_id)): sent or failed ones stay as history under the old id (subtasks have no foreign
 *   key), and a still-queued one is cancelled, with the campaign's count and the owner's credit, so
 *   the mailbox gets the campaign once;
 * - queued mail of a group that is now unsubscribed or bounced is cancelled the same way.
 * Queued subtasks also get the canonical address, since they carry the address they send to.
 * Subtasks being sent ('sending') are left alone: the scheduler re-checks the contact's status.
 *
 * Suppressions: the entries are rewritten to the canonical key (lowercase canonical form) and the
 * duplicates within one scope dropped (the oldest entry stays).
 *
 * Down does not un-merge (the merged rows are gone); it removes the 'merge' status events and the
 * method, so the schema goes back.
 */
const { domainToASCII } = require('node:url');

const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Bidi_Control}]/gu;
const LOCAL = /^[^\s@\p{Cc}"<>,;:()\\[\]]{1,64}$/u;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const TLD = /^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$/;
const PAGE = 5000;

/** The canonical form of a stored address, repaired as described above; null when there is none. */
function repair(stored) {
  const s = stored.trim().normalize('NFC').replace(INVISIBLE, '');
  const at = s.indexOf('@');
  if (at <= 0 || at !== s.lastIndexOf('@')) return null;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1).replace(/\.+$/, '');
  if (!LOCAL.test(local) || local.normalize('NFKC') !== local) return null;
  const ascii = domain.length > 0 && domain.length <= 255 ? domainToASCII(domain) : '';
  const labels = ascii.split('.');
  if (!ascii || ascii.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l)) || !TLD.test(labels.at(-1))) {
    return null;
  }
  return `${local}@${ascii}`;
}

// Rows that may not be canonical: anything non-ASCII or non-printable, surrounding space, a trailing
// dot, or an upper-case domain. An all-ASCII, lowercase-domain address is its own canonical form.
const SUSPECT = `(email ~ '[^\\x21-\\x7e]' OR email ~ '\\.$' OR split_part(email, '@', 2) <> lower(split_part(email, '@', 2)))`;

async function canonicalize(sequelize, t, table, log) {
  const q = (sql, bind) => sequelize.query(sql, { bind, transaction: t });
  const changed = [];
  let unfixable = 0;
  let after = 0;
  for (;;) {
    const [rows] = await q(`SELECT id, email FROM ${table} WHERE id > $1 AND ${SUSPECT} ORDER BY id LIMIT ${PAGE}`, [after]);
    if (!rows.length) break;
    for (const r of rows) {
      const c = repair(r.email);
      if (c === null) unfixable++;
      else if (c !== r.email) changed.push({ id: String(r.id), email: c });
    }
    after = rows[rows.length - 1].id;
  }
  if (unfixable) log(`${table}: ${unfixable} stored address(es) have no canonical form and were left as they are`);
  return changed;
}

async function up(queryInterface) {
  const sequelize = queryInterface.sequelize;
  const log = (m) => console.log(`[migration canonical-contacts] ${m}`);
  await sequelize.transaction(async (t) => {
    const q = (sql, bind) => sequelize.query(sql, { bind, transaction: t });
    await q(`ALTER TABLE contact_status_events DROP CONSTRAINT IF EXISTS contact_status_events_method_check`);
    await q(`ALTER TABLE contact_status_events ADD CONSTRAINT contact_status_events_method_check
               CHECK (method IN ('one_click', 'page', 'api', 'complaint', 'bounce', 'reactivation', 'merge'))`);

    // --- contacts ---
    const changed = await canonicalize(sequelize, t, 'contacts', log);
    await q(`CREATE TEMP TABLE canon_new (id bigint PRIMARY KEY, email text NOT NULL) ON COMMIT DROP`);
    for (let i = 0; i < changed.length; i += PAGE) {
      const part = changed.slice(i, i + PAGE);
      await q(`INSERT INTO canon_new SELECT * FROM unnest($1::bigint[], $2::text[])`, [part.map((c) => c.id), part.map((c) => c.email)]);
    }
    // Every row of a (user, canonical key) that a changed row belongs to, with its new address.
    await q(`CREATE TEMP TABLE canon_rows ON COMMIT DROP AS
      WITH keys AS (SELECT DISTINCT c.user_id, lower(n.email) AS key FROM canon_new n JOIN contacts c ON c.id = n.id)
      SELECT c.id, c.user_id, COALESCE(n.email, c.email) AS email, c.email AS stored, k.key, c.status
        FROM contacts c LEFT JOIN canon_new n ON n.id = c.id
        JOIN keys k ON k.user_id = c.user_id AND k.key = lower(COALESCE(n.email, c.email))`);
    // Groups: the kept row (oldest), the group's most restrictive status, the merged rows.
    await q(`CREATE TEMP TABLE canon_groups ON COMMIT DROP AS
      SELECT user_id, key, min(id) AS kept_id,
             (array_agg(email ORDER BY id))[1] AS email,
             CASE max(CASE status WHEN 'unsubscribed' THEN 2 WHEN 'bounced' THEN 1 ELSE 0 END)
               WHEN 2 THEN 'unsubscribed' WHEN 1 THEN 'bounced' ELSE 'active' END AS status,
             count(*)::int AS n
        FROM canon_rows GROUP BY user_id, key`);
    await q(`CREATE TEMP TABLE canon_merged ON COMMIT DROP AS
      SELECT r.id AS old_id, g.kept_id, g.email, r.stored AS old_email
        FROM canon_rows r JOIN canon_groups g ON g.user_id = r.user_id AND g.key = r.key
       WHERE r.id <> g.kept_id`);
    await q(`CREATE INDEX ON canon_merged (old_id)`);
    const [[counts]] = await q(
      `SELECT (SELECT count(*) FROM canon_merged)::int AS merged, (SELECT count(*) FROM canon_groups WHERE n > 1)::int AS groups`,
    );

    // History moves to the kept row.
    await q(`UPDATE contact_status_events e SET contact_id = m.kept_id FROM canon_merged m WHERE e.contact_id = m.old_id`);
    await q(`UPDATE bounce_events b SET contact_id = m.kept_id FROM canon_merged m WHERE b.contact_id = m.old_id`);
    // Subtasks of merged rows: in a campaign without one for the kept row, the first moves to it;
    // the others collide with it (the key is (task_id, contact_id)): a queued one is cancelled, so
    // the mailbox gets the campaign once, and the others stay under the old id as history.
    await q(`CREATE TEMP TABLE canon_sub ON COMMIT DROP AS
      SELECT s.task_id, s.contact_id, m.kept_id, m.email,
             NOT EXISTS (SELECT 1 FROM subtasks k WHERE k.task_id = s.task_id AND k.contact_id = m.kept_id)
               AND s.contact_id = min(s.contact_id) OVER (PARTITION BY s.task_id, m.kept_id) AS moves
        FROM subtasks s JOIN canon_merged m ON s.contact_id = m.old_id`);
    await q(`CREATE TEMP TABLE canon_cancel (task_id bigint, contact_id bigint) ON COMMIT DROP`);
    await q(`WITH c AS (
               UPDATE subtasks s SET status = 'cancelled', last_error = 'duplicate address merged into contact ' || x.kept_id
                 FROM canon_sub x
                WHERE s.task_id = x.task_id AND s.contact_id = x.contact_id AND NOT x.moves AND s.status = 'queued'
                  AND s.task_id IN (SELECT id FROM tasks WHERE status IN ('sending', 'scheduled', 'paused'))
               RETURNING s.task_id, s.contact_id)
             INSERT INTO canon_cancel SELECT * FROM c`);
    await q(`UPDATE subtasks s SET contact_id = x.kept_id,
                    email = CASE WHEN s.status = 'queued' THEN x.email ELSE s.email END
               FROM canon_sub x
              WHERE s.task_id = x.task_id AND s.contact_id = x.contact_id AND x.moves`);
    // Queued mail of a group that is no longer active is cancelled, like an unsubscribe does.
    await q(`WITH c AS (
               UPDATE subtasks s SET status = 'cancelled', last_error = 'recipient unsubscribed or bounced'
                 FROM canon_groups g
                WHERE s.contact_id = g.kept_id AND g.status <> 'active' AND s.status = 'queued'
                  AND s.task_id IN (SELECT id FROM tasks WHERE status IN ('sending', 'scheduled', 'paused'))
               RETURNING s.task_id, s.contact_id)
             INSERT INTO canon_cancel SELECT * FROM c`);
    await q(`WITH per_task AS (SELECT task_id, count(*)::int AS n FROM canon_cancel GROUP BY task_id),
             t AS (
               UPDATE tasks SET cancelled_count = cancelled_count + p.n,
                      status = CASE WHEN tasks.status = 'sending'
                                     AND sent_count + failed_count + cancelled_count + unknown_count + p.n >= total_count
                                    THEN 'completed' ELSE tasks.status END,
                      completed_at = CASE WHEN tasks.status = 'sending'
                                     AND sent_count + failed_count + cancelled_count + unknown_count + p.n >= total_count
                                    THEN now() ELSE completed_at END,
                      updated_at = now()
                 FROM per_task p WHERE tasks.id = p.task_id
               RETURNING tasks.created_by, p.n)
             UPDATE users SET remaining_quota = remaining_quota + r.n, updated_at = now()
               FROM (SELECT created_by, sum(n)::int AS n FROM t GROUP BY created_by) r
              WHERE users.id = r.created_by`);
    // Explicit recipient lists name the kept row, once.
    await q(`UPDATE tasks t SET contacts = (
               SELECT COALESCE(jsonb_agg(x.id ORDER BY x.first), '[]'::jsonb) FROM (
                 SELECT COALESCE(m.kept_id, e.value::bigint) AS id, min(e.ord) AS first
                   FROM jsonb_array_elements_text(t.contacts) WITH ORDINALITY e(value, ord)
                   LEFT JOIN canon_merged m ON m.old_id = e.value::bigint
                  GROUP BY 1) x)
              WHERE EXISTS (SELECT 1 FROM jsonb_array_elements_text(t.contacts) e(value)
                             WHERE e.value::bigint IN (SELECT old_id FROM canon_merged))`);
    // The kept row takes the group's data, then the merged rows go, then the addresses change.
    await q(`UPDATE contacts k SET
               tags = (SELECT COALESCE(jsonb_agg(DISTINCT tag), '[]'::jsonb) FROM contacts c, jsonb_array_elements(c.tags) tag
                        WHERE c.id = k.id OR c.id IN (SELECT old_id FROM canon_merged WHERE kept_id = k.id)),
               attributes = (SELECT COALESCE(jsonb_object_agg(a.key, a.value), '{}'::jsonb) FROM (
                               SELECT DISTINCT ON (e.key) e.key, e.value FROM contacts c, jsonb_each(c.attributes) e
                                WHERE c.id = k.id OR c.id IN (SELECT old_id FROM canon_merged WHERE kept_id = k.id)
                                ORDER BY e.key, (c.id = k.id) DESC, c.id) a),
               name = COALESCE(k.name, (SELECT c.name FROM contacts c JOIN canon_merged m ON m.old_id = c.id
                                         WHERE m.kept_id = k.id AND c.name IS NOT NULL ORDER BY c.id LIMIT 1)),
               timezone = COALESCE(k.timezone, (SELECT c.timezone FROM contacts c JOIN canon_merged m ON m.old_id = c.id
                                                 WHERE m.kept_id = k.id AND c.timezone IS NOT NULL ORDER BY c.id LIMIT 1)),
               updated_at = now()
              WHERE k.id IN (SELECT kept_id FROM canon_groups WHERE n > 1)`);
    await q(`INSERT INTO contact_status_events (contact_id, user_id, email, from_status, to_status, method, reason)
             SELECT k.id, k.user_id, g.email, k.status, g.status, 'merge',
                    left('merged duplicate address(es): ' || (SELECT string_agg(m.old_email, ', ' ORDER BY m.old_id)
                                                             FROM canon_merged m WHERE m.kept_id = k.id), 1000)
               FROM contacts k JOIN canon_groups g ON g.kept_id = k.id
              WHERE g.n > 1 AND k.status <> g.status`);
    await q(`DELETE FROM contacts WHERE id IN (SELECT old_id FROM canon_merged)`);
    await q(`UPDATE contacts k SET email = g.email, status = g.status, updated_at = now()
               FROM canon_groups g WHERE k.id = g.kept_id AND (k.email <> g.email OR k.status <> g.status)`);
    // Queued subtasks of a row whose address changed send to the new form.
    await q(`UPDATE subtasks s SET email = g.email FROM canon_groups g
              WHERE s.contact_id = g.kept_id AND s.status = 'queued' AND s.email <> g.email`);

    // --- suppressions: the canonical key, one entry per scope ---
    const sup = await canonicalize(sequelize, t, 'suppressions', log);
    await q(`CREATE TEMP TABLE canon_sup (id bigint PRIMARY KEY, email text NOT NULL) ON COMMIT DROP`);
    for (let i = 0; i < sup.length; i += PAGE) {
      const part = sup.slice(i, i + PAGE);
      await q(`INSERT INTO canon_sup SELECT * FROM unnest($1::bigint[], $2::text[])`, [
        part.map((c) => c.id),
        part.map((c) => c.email.toLowerCase()),
      ]);
    }
    const [dropped] = await q(`DELETE FROM suppressions s USING (
               SELECT id, row_number() OVER (PARTITION BY COALESCE(user_id, 0), final ORDER BY id) AS rn FROM (
                 SELECT o.id, o.user_id, COALESCE(n.email, o.email) AS final
                   FROM suppressions o LEFT JOIN canon_sup n ON n.id = o.id
                  WHERE COALESCE(n.email, o.email) IN (SELECT email FROM canon_sup)) x) d
              WHERE s.id = d.id AND d.rn > 1
             RETURNING s.id`);
    await q(`UPDATE suppressions s SET email = n.email FROM canon_sup n WHERE s.id = n.id`);

    if (changed.length || sup.length)
      log(
        `${changed.length} contact address(es) rewritten, ${counts.merged} duplicate(s) merged into ${counts.groups} contact(s); ` +
          `${sup.length} suppression(s) rewritten, ${dropped.length} duplicate suppression(s) dropped`,
      );
  });
}

async function down(queryInterface) {
  const sequelize = queryInterface.sequelize;
  await sequelize.transaction(async (t) => {
    const q = (sql) => sequelize.query(sql, { transaction: t });
    await q(`DELETE FROM contact_status_events WHERE method = 'merge'`);
    await q(`ALTER TABLE contact_status_events DROP CONSTRAINT IF EXISTS contact_status_events_method_check`);
    await q(`ALTER TABLE contact_status_events ADD CONSTRAINT contact_status_events_method_check
               CHECK (method IN ('one_click', 'page', 'api', 'complaint', 'bounce', 'reactivation'))`);
  });
}

module.exports = { up, down, repair };

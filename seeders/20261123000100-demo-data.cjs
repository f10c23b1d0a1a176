'use strict';
/**
 * The demo data set `npm start` loads into an empty database (and `npx sequelize-cli db:seed:all`
 * loads anywhere): three users, three sending services with very different rates and quotas, all
 * pointing at the local SMTP catcher, a few hundred tagged contacts, templates, and three
 * campaigns of very different sizes. Set-based SQL throughout: no statement per contact.
 *
 * Campaigns are written as created (recipients in JSONB, quota reserved); the scheduler
 * generates their subtask queues when they are due.
 */
const smtpHost = process.env.SMTP_CATCHER_HOST || '127.0.0.1';
const smtpPort = Number(process.env.SMTP_CATCHER_PORT || 2525);
const USERS = ['alice@demo.fairsend.test', 'bob@demo.fairsend.test', 'carol@demo.fairsend.test'];
const SERVICES = ['demo-relay-fast', 'demo-smtp-steady', 'demo-smtp-slow'];

const UP = `
INSERT INTO users (name, email, role, remaining_quota, timezone) VALUES
  ('Alice Admin', '${USERS[0]}', 'admin', 100000, 'Europe/Paris'),
  ('Bob Builder', '${USERS[1]}', 'user',  100000, 'America/New_York'),
  ('Carol Chen',  '${USERS[2]}', 'user',  1000,   'Asia/Tokyo');

INSERT INTO email_services (name, transport, sending_rate, daily_quota, quota_timezone, max_connections, open_to_all, quota_day) VALUES
  ('${SERVICES[0]}', :transport, 0.05, 5000, 'UTC',           5, true,  (now() AT TIME ZONE 'UTC')::date),
  ('${SERVICES[1]}', :transport, 1,    1000, 'Europe/Paris',  2, true,  (now() AT TIME ZONE 'Europe/Paris')::date),
  ('${SERVICES[2]}', :transport, 60,   100,  'Asia/Tokyo',    1, false, (now() AT TIME ZONE 'Asia/Tokyo')::date);

-- The slow service is reserved to Carol.
INSERT INTO user_services (user_id, service_id)
SELECT u.id, s.id FROM users u, email_services s WHERE u.email = '${USERS[2]}' AND s.name = '${SERVICES[2]}';

-- 240 contacts for Alice, 80 for Bob, 12 for Carol; tags and attributes vary by position.
INSERT INTO contacts (user_id, email, name, tags, attributes, status, timezone)
SELECT u.id,
       'reader' || g || '@' || split_part(u.email, '@', 1) || '.example.test',
       'Reader ' || g,
       CASE WHEN g % 10 = 0 THEN '["newsletter","vip"]'::jsonb
            WHEN g % 7 = 0  THEN '["product"]'::jsonb
            WHEN g % 13 = 0 THEN '["newsletter","churned"]'::jsonb
            ELSE '["newsletter"]'::jsonb END,
       jsonb_build_object('city', (ARRAY['Paris','Lisbon','Osaka','Austin'])[1 + g % 4],
                          'plan', CASE WHEN g % 5 = 0 THEN 'pro' ELSE 'free' END),
       CASE WHEN g % 29 = 0 THEN 'unsubscribed' ELSE 'active' END,
       (ARRAY['Europe/Paris','America/New_York','Asia/Tokyo', NULL])[1 + g % 4]
FROM users u
JOIN LATERAL generate_series(1, CASE u.email WHEN '${USERS[0]}' THEN 240 WHEN '${USERS[1]}' THEN 80 ELSE 12 END) g ON true
WHERE u.email IN (:users);

INSERT INTO templates (user_id, name, subject, html, text)
SELECT u.id, 'Monthly letter', 'Hello {{name}}, news from ' || split_part(u.name, ' ', 1),
       '<p>Hi {{name}},</p><p>This month in {{city}}: plenty. Your plan: {{plan}}.</p>',
       'Hi {{name}}, this month in {{city}}: plenty. Your plan: {{plan}}.'
FROM users u WHERE u.email IN (:users);

-- Three campaigns of very different sizes.
INSERT INTO tasks (name, status, scheduled_at, timezone, from_address, from_name, created_by, contacts, templates, recipient_rule, priority)
SELECT 'Autumn newsletter', 'scheduled', now(), u.timezone, 'news@alice.example.test', 'Alice at fairsend demo', u.id, '[]'::jsonb,
       jsonb_build_array(t.id), '{"type":"tag_based","include_tags":["newsletter"],"exclude_tags":["churned"]}'::jsonb, 0
FROM users u JOIN templates t ON t.user_id = u.id WHERE u.email = '${USERS[0]}'
UNION ALL
SELECT 'Product launch', 'scheduled', now(), u.timezone, 'launch@bob.example.test', 'Bob', u.id, '[]'::jsonb,
       jsonb_build_array(t.id), '{"type":"tag_based","include_tags":["product"]}'::jsonb, 5
FROM users u JOIN templates t ON t.user_id = u.id WHERE u.email = '${USERS[1]}'
UNION ALL
SELECT 'VIP invitation', 'scheduled', now(), u.timezone, 'carol@carol.example.test', 'Carol', u.id,
       (SELECT jsonb_agg(c.id ORDER BY c.id) FROM (SELECT id FROM contacts WHERE user_id = u.id ORDER BY id LIMIT 5) c),
       jsonb_build_array(t.id), NULL::jsonb, 0
FROM users u JOIN templates t ON t.user_id = u.id WHERE u.email = '${USERS[2]}';

-- Reserve each campaign's quota as campaign creation does: one unit per active recipient.
WITH counts AS (
  SELECT t.id, t.created_by, count(DISTINCT lower(c.email)) AS n
  FROM tasks t
  JOIN users u ON u.id = t.created_by AND u.email IN (:users)
  JOIN contacts c ON c.user_id = t.created_by AND c.status = 'active'
   AND (c.id IN (SELECT jsonb_array_elements_text(t.contacts)::bigint)
        OR (t.recipient_rule->>'type' = 'tag_based'
            AND (t.recipient_rule->'include_tags' IS NULL OR c.tags ?| ARRAY(SELECT jsonb_array_elements_text(t.recipient_rule->'include_tags')))
            AND NOT (c.tags ?| ARRAY(SELECT jsonb_array_elements_text(COALESCE(t.recipient_rule->'exclude_tags', '[]'))))))
  GROUP BY t.id, t.created_by
), reserved AS (
  UPDATE tasks SET reserved_quota = counts.n FROM counts WHERE tasks.id = counts.id RETURNING tasks.created_by, counts.n
)
UPDATE users SET remaining_quota = remaining_quota - r.total
FROM (SELECT created_by, sum(n) AS total FROM reserved GROUP BY created_by) r WHERE users.id = r.created_by;
`;

module.exports = {
  async up(queryInterface) {
    const transport = JSON.stringify({ host: smtpHost, port: smtpPort, secure: false });
    await queryInterface.sequelize.transaction((transaction) =>
      queryInterface.sequelize.query(UP, { transaction, replacements: { transport, users: USERS } }),
    );
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction(async (transaction) => {
      await queryInterface.sequelize.query('DELETE FROM users WHERE email IN (:users)', { transaction, replacements: { users: USERS } });
      await queryInterface.sequelize.query('DELETE FROM email_services WHERE name IN (:services)', {
        transaction,
        replacements: { services: SERVICES },
      });
    });
  },
};

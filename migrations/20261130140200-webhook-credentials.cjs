'use strict';
/**
 * Provider webhooks (issue 14): the credentials that verify a provider's webhook for a sending
 * service (a Mailgun signing key, a SendGrid public key, basic-auth user and password for Postmark
 * and SparkPost, accepted SNS topics for SES). One row per service and provider.
 */

const UP = `
CREATE TABLE webhook_credentials (
  service_id   integer NOT NULL REFERENCES email_services (id) ON DELETE CASCADE,
  provider     text NOT NULL CHECK (provider IN ('mailgun', 'sendgrid', 'postmark', 'sparkpost', 'ses')),
  credentials  jsonb NOT NULL CHECK (jsonb_typeof(credentials) = 'object'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, provider)
);
`;
const DOWN = `DROP TABLE IF EXISTS webhook_credentials;`;

module.exports = {
  async up(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(UP, { transaction: t }));
  },
  async down(queryInterface) {
    await queryInterface.sequelize.transaction((t) => queryInterface.sequelize.query(DOWN, { transaction: t }));
  },
};

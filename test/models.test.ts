import { ValidationError as SequelizeValidationError, UniqueConstraintError, DatabaseError } from 'sequelize';
import type { EngineCore } from '../src/engine.js';
import { createTestEngineCore } from './helpers/db.js';

describe('models and database constraints', () => {
  let engine: EngineCore;
  beforeAll(async () => {
    engine = await createTestEngineCore();
  });
  afterAll(() => engine.close());

  const sql = (q: string, replacements?: Record<string, unknown>) => engine.apiDb.query(q, { replacements });

  it('refuses a negative quota in the model and in the database', async () => {
    const { User, EmailService } = engine.models;
    await expect(User.create({ name: 'N', email: 'neg@example.test', remainingQuota: -1 })).rejects.toBeInstanceOf(
      SequelizeValidationError,
    );
    await expect(sql(`INSERT INTO users (name, email, remaining_quota) VALUES ('N', 'neg@example.test', -1)`)).rejects.toThrow(
      /users_remaining_quota_check/,
    );
    await expect(
      EmailService.create({ name: 's', transport: { host: 'h', port: 25 }, sendingRate: 1, dailyQuota: -5 }),
    ).rejects.toBeInstanceOf(SequelizeValidationError);
    await expect(sql(`INSERT INTO email_services (name, transport, sending_rate, daily_quota) VALUES ('s', '{}', -1, 10)`)).rejects.toThrow(
      /email_services_sending_rate_check/,
    );
  });

  it('refuses a bad email in the model and in the database', async () => {
    const { User, Contact } = engine.models;
    await expect(User.create({ name: 'B', email: 'not-an-email' })).rejects.toBeInstanceOf(SequelizeValidationError);
    await expect(sql(`INSERT INTO users (name, email) VALUES ('B', 'not an email')`)).rejects.toThrow(/users_email_check/);
    const u = await User.create({ name: 'Owner', email: 'owner@example.test' });
    await expect(Contact.create({ userId: u.id, email: 'bad@' })).rejects.toBeInstanceOf(SequelizeValidationError);
    await expect(sql(`INSERT INTO contacts (user_id, email) VALUES (:id, '@nope')`, { id: u.id })).rejects.toThrow(/contacts_email_check/);
  });

  it('refuses a duplicate user email, case-insensitively, in the database', async () => {
    const { User } = engine.models;
    await User.create({ name: 'First', email: 'dup@example.test' });
    await expect(User.create({ name: 'Second', email: 'dup@example.test' })).rejects.toBeInstanceOf(UniqueConstraintError);
    await expect(User.create({ name: 'Third', email: 'DUP@Example.TEST' })).rejects.toBeInstanceOf(UniqueConstraintError);
    expect(await User.count({ where: { name: ['Second', 'Third'] } })).toBe(0);
  });

  it('refuses invalid statuses, CR/LF in subjects, and dangling foreign keys', async () => {
    const { User, Template } = engine.models;
    const u = await User.create({ name: 'T', email: 't@example.test' });
    await expect(sql(`UPDATE users SET role = 'root' WHERE id = :id`, { id: u.id })).rejects.toThrow(/users_role_check/);
    await expect(Template.create({ userId: u.id, name: 'x', subject: 'Hi\r\nBcc: a@b.c', text: 'x' })).rejects.toBeInstanceOf(
      SequelizeValidationError,
    );
    await expect(
      sql(`INSERT INTO templates (user_id, name, subject, text) VALUES (:id, 'x', E'Hi\\nBcc: a@b.c', 'x')`, { id: u.id }),
    ).rejects.toThrow(/templates_subject_check/);
    await expect(sql(`INSERT INTO tasks (name, from_address, created_by, templates) VALUES ('c', 'a@b.c', 999999, '[1]')`)).rejects.toThrow(
      /foreign key/,
    );
    await expect(
      sql(`INSERT INTO tasks (name, from_address, created_by, templates, status) VALUES ('c', 'a@b.c', :id, '[1]', 'done')`, { id: u.id }),
    ).rejects.toBeInstanceOf(DatabaseError);
  });

  it('keeps JSONB shapes: tags must be an array, attributes an object', async () => {
    const { User, Contact } = engine.models;
    const u = await User.create({ name: 'J', email: 'j@example.test' });
    await expect(sql(`INSERT INTO contacts (user_id, email, tags) VALUES (:id, 'a@b.c', '{"a":1}')`, { id: u.id })).rejects.toThrow(
      /contacts_tags_check/,
    );
    const c = await Contact.create({
      userId: u.id,
      email: 'tagged@example.test',
      tags: ['news', "o'reilly"],
      attributes: { city: 'Paris' },
    });
    const back = await Contact.findByPk(c.id);
    expect(back!.tags).toEqual(['news', "o'reilly"]);
    expect(back!.attributes).toEqual({ city: 'Paris' });
  });

  it('increments repeated errors in error_logs instead of adding rows', async () => {
    const upsert = `INSERT INTO error_logs (error_type, message) VALUES ('smtp', '451 try later')
                    ON CONFLICT (error_type, message) DO UPDATE SET count = error_logs.count + 1, last_seen_at = now()`;
    await sql(upsert);
    await sql(upsert);
    const rows = await engine.models.ErrorLog.findAll();
    expect(rows.map((r) => [r.errorType, r.message, r.count])).toEqual([['smtp', '451 try later', 2]]);
  });
});

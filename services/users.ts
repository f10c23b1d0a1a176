import { UniqueConstraintError } from 'sequelize';
import { NotFoundError, ValidationError } from './kernel/errors.js';
import type { User, UserRole } from '../models/index.js';
import type { ServiceContext } from './context.js';
import { createUserSchema, parseId, parseInput, type CreateUserInput } from './validation.js';

export interface UserView {
  id: number;
  name: string;
  email: string;
  role: UserRole;
  /** Sending credit left: each recipient of a campaign reserves one unit at creation. */
  remainingQuota: number;
  timezone: string;
}

export function toUserView(u: User): UserView {
  return { id: u.id, name: u.name, email: u.email, role: u.role, remainingQuota: u.remainingQuota, timezone: u.timezone };
}

export function createUsersApi(ctx: ServiceContext) {
  const { User } = ctx.models;
  return {
    async create(input: CreateUserInput): Promise<UserView> {
      const v = parseInput(createUserSchema, input);
      try {
        const u = await User.create({
          name: v.name,
          email: v.email,
          remainingQuota: v.quota,
          timezone: v.timezone ?? ctx.config.defaultTimezone,
          role: v.role ?? 'user',
        });
        return toUserView(u);
      } catch (err) {
        if (err instanceof UniqueConstraintError) throw new ValidationError([{ path: 'email', message: `${v.email} is already a user` }]);
        throw err;
      }
    },
    async get(id: number): Promise<UserView> {
      const u = await User.findByPk(parseId(id, 'userId'));
      if (!u) throw new NotFoundError('user', id);
      return toUserView(u);
    },
    async list(): Promise<UserView[]> {
      return (await User.findAll({ order: [['id', 'ASC']] })).map(toUserView);
    },
    /** Adds (or with a negative amount, removes) sending credit; never below zero. */
    async addQuota(id: number, amount: number): Promise<UserView> {
      const [rows] = (await ctx.apiDb.query(
        `UPDATE users SET remaining_quota = remaining_quota + $amount, updated_at = now()
          WHERE id = $id AND remaining_quota + $amount >= 0 RETURNING id`,
        { bind: { id: parseId(id, 'userId'), amount } },
      )) as [unknown[], unknown];
      if (rows.length === 0) {
        await this.get(id);
        throw new ValidationError([{ path: 'amount', message: 'would make the remaining quota negative' }]);
      }
      return this.get(id);
    },
  };
}
export type UsersApi = ReturnType<typeof createUsersApi>;

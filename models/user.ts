import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/** admin: everything; user: their own campaigns, contacts and templates; metrics: may only scrape /metrics. */
export const USER_ROLES = ['admin', 'user', 'metrics'] as const;
export type UserRole = (typeof USER_ROLES)[number];

export class User extends Model<InferAttributes<User>, InferCreationAttributes<User>> {
  declare id: CreationOptional<number>;
  declare name: string;
  declare email: string;
  declare role: CreationOptional<UserRole>;
  /** Sending credit: each recipient of a campaign reserves one unit at creation. */
  declare remainingQuota: CreationOptional<number>;
  declare timezone: CreationOptional<string>;
  declare apiTokenHash: CreationOptional<string | null>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

export const userAttributes: ModelAttributes<User> = {
  id: { type: DataTypes.INTEGER, autoIncrement: true, primaryKey: true },
  name: { type: DataTypes.TEXT, allowNull: false, validate: { len: [1, 200] } },
  email: { type: DataTypes.TEXT, allowNull: false, unique: true, validate: { isEmail: true, len: [3, 320] } },
  role: { type: DataTypes.TEXT, allowNull: false, defaultValue: 'user', validate: { isIn: [[...USER_ROLES]] } },
  remainingQuota: {
    type: DataTypes.BIGINT,
    allowNull: false,
    defaultValue: 0,
    validate: { min: 0, isInt: true },
    // pg returns BIGINT as a string; quotas fit in a JS number.
    get(this: User) {
      return Number(this.getDataValue('remainingQuota'));
    },
  },
  timezone: { type: DataTypes.TEXT, allowNull: false, defaultValue: 'UTC' },
  apiTokenHash: { type: DataTypes.TEXT, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

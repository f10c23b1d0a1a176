import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

export type TaskStatus = 'scheduled' | 'sending' | 'paused' | 'completed' | 'cancelled';

/** Stored form of a recipient rule (snake_case, as in the original design). */
export type StoredRecipientRule = { type: 'all' } | { type: 'tag_based'; include_tags?: string[]; exclude_tags?: string[] };

export interface StoredSendWindow {
  start: string;
  end: string;
  days?: number[];
  timezone: string;
}

/** A campaign. Recipients live in JSONB (`contacts` ids and/or `recipient_rule`) until generation. */
export class Task extends Model<InferAttributes<Task>, InferCreationAttributes<Task>> {
  declare id: CreationOptional<number>;
  declare name: string;
  declare status: CreationOptional<TaskStatus>;
  declare scheduledAt: CreationOptional<Date>;
  declare timezone: CreationOptional<string>;
  declare fromAddress: string;
  declare fromName: CreationOptional<string | null>;
  declare createdBy: number;
  declare contacts: CreationOptional<number[]>;
  declare templates: number[];
  declare recipientRule: CreationOptional<StoredRecipientRule | null>;
  declare sendWindow: CreationOptional<StoredSendWindow | null>;
  declare priority: CreationOptional<number>;
  declare totalCount: CreationOptional<number>;
  declare sentCount: CreationOptional<number>;
  declare failedCount: CreationOptional<number>;
  declare cancelledCount: CreationOptional<number>;
  declare unknownCount: CreationOptional<number>;
  declare reservedQuota: CreationOptional<number>;
  declare generatedAt: CreationOptional<Date | null>;
  declare completedAt: CreationOptional<Date | null>;
  declare waitReason: CreationOptional<string | null>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

export const taskAttributes: ModelAttributes<Task> = {
  id: {
    type: DataTypes.BIGINT,
    autoIncrement: true,
    primaryKey: true,
    get(this: Task) {
      return Number(this.getDataValue('id'));
    },
  },
  name: { type: DataTypes.TEXT, allowNull: false, validate: { len: [1, 200] } },
  status: {
    type: DataTypes.TEXT,
    allowNull: false,
    defaultValue: 'scheduled',
    validate: { isIn: [['scheduled', 'sending', 'paused', 'completed', 'cancelled']] },
  },
  scheduledAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
  timezone: { type: DataTypes.TEXT, allowNull: false, defaultValue: 'UTC' },
  fromAddress: { type: DataTypes.TEXT, allowNull: false, validate: { is: /^[^\r\n]*$/ } },
  fromName: { type: DataTypes.TEXT, allowNull: true, validate: { is: /^[^\r\n]*$/ } },
  createdBy: { type: DataTypes.INTEGER, allowNull: false },
  contacts: { type: DataTypes.JSONB, allowNull: false, defaultValue: [] },
  templates: { type: DataTypes.JSONB, allowNull: false },
  recipientRule: { type: DataTypes.JSONB, allowNull: true },
  sendWindow: { type: DataTypes.JSONB, allowNull: true },
  priority: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  totalCount: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  sentCount: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  failedCount: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  cancelledCount: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  unknownCount: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  reservedQuota: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  generatedAt: { type: DataTypes.DATE, allowNull: true },
  completedAt: { type: DataTypes.DATE, allowNull: true },
  waitReason: { type: DataTypes.TEXT, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

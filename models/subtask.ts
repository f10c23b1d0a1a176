import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/** queued -> sending -> sent | failed | cancelled; `unknown` when an at-most-once send's outcome is lost. */
export type SubtaskStatus = 'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown';

/** One recipient of one campaign, pre-generated; carries all the sender needs. */
export class Subtask extends Model<InferAttributes<Subtask>, InferCreationAttributes<Subtask>> {
  /** (taskId, contactId) is the primary key. */
  declare taskId: number;
  declare userId: number;
  declare contactId: number;
  declare email: string;
  declare templateId: number;
  declare serviceId: CreationOptional<number | null>;
  declare status: CreationOptional<SubtaskStatus>;
  declare attempts: CreationOptional<number>;
  declare notBefore: CreationOptional<Date>;
  /** The recipient's zone, set only when the campaign has a send window. */
  declare timezone: CreationOptional<string | null>;
  /** The recipient's mailbox provider (`google`, `other:acme.com`), set at generation; null on rows older than the column. */
  declare provider: CreationOptional<string | null>;
  declare leaseOwner: CreationOptional<string | null>;
  declare leaseExpiresAt: CreationOptional<Date | null>;
  declare messageId: CreationOptional<string | null>;
  declare lastError: CreationOptional<string | null>;
  declare sentAt: CreationOptional<Date | null>;
}

const asNumber = (field: 'taskId' | 'contactId') =>
  function (this: Subtask) {
    return Number(this.getDataValue(field));
  };

export const subtaskAttributes: ModelAttributes<Subtask> = {
  taskId: { type: DataTypes.BIGINT, allowNull: false, primaryKey: true, get: asNumber('taskId') },
  userId: { type: DataTypes.INTEGER, allowNull: false },
  contactId: { type: DataTypes.BIGINT, allowNull: false, primaryKey: true, get: asNumber('contactId') },
  email: { type: DataTypes.TEXT, allowNull: false },
  templateId: { type: DataTypes.INTEGER, allowNull: false },
  serviceId: { type: DataTypes.INTEGER, allowNull: true },
  status: {
    type: DataTypes.TEXT,
    allowNull: false,
    defaultValue: 'queued',
    validate: { isIn: [['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown']] },
  },
  attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  notBefore: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
  timezone: { type: DataTypes.TEXT, allowNull: true },
  provider: { type: DataTypes.TEXT, allowNull: true },
  leaseOwner: { type: DataTypes.TEXT, allowNull: true },
  leaseExpiresAt: { type: DataTypes.DATE, allowNull: true },
  messageId: { type: DataTypes.TEXT, allowNull: true },
  lastError: { type: DataTypes.TEXT, allowNull: true },
  sentAt: { type: DataTypes.DATE, allowNull: true },
};

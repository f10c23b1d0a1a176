import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/** SMTP settings of a sending service; `auth.pass` is a secret, never returned or logged. */
export interface TransportConfig {
  host: string;
  port: number;
  secure?: boolean;
  auth?: { user: string; pass: string };
  /** Send timeout in ms (socket and greeting). */
  timeoutMs?: number;
  /** Allow self-signed certificates (local relays and tests). */
  tlsInsecure?: boolean;
}

export interface DkimConfig {
  domainName: string;
  keySelector: string;
  privateKey: string;
}

export class EmailService extends Model<InferAttributes<EmailService>, InferCreationAttributes<EmailService>> {
  declare id: CreationOptional<number>;
  declare name: string;
  declare transport: TransportConfig;
  /** Seconds between two sends of this service: 60 is one a minute, 0.02 is fifty a second, 0 is no limit. */
  declare sendingRate: number;
  declare dailyQuota: number;
  declare usedQuota: CreationOptional<number>;
  /** The service-local date `usedQuota` counts for; it resets at local midnight in `quotaTimezone`. */
  declare quotaDay: CreationOptional<string>;
  declare quotaTimezone: CreationOptional<string>;
  declare maxConnections: CreationOptional<number>;
  /** When true any user may send through this service; otherwise only users in user_services. */
  declare openToAll: CreationOptional<boolean>;
  declare enabled: CreationOptional<boolean>;
  declare dkim: CreationOptional<DkimConfig | null>;
  declare isHealthy: CreationOptional<boolean>;
  declare consecutiveFailures: CreationOptional<number>;
  declare lastError: CreationOptional<string | null>;
  declare lastErrorAt: CreationOptional<Date | null>;
  declare lastSentAt: CreationOptional<Date | null>;
  declare nextProbeAt: CreationOptional<Date | null>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

export const emailServiceAttributes: ModelAttributes<EmailService> = {
  id: { type: DataTypes.INTEGER, autoIncrement: true, primaryKey: true },
  name: { type: DataTypes.TEXT, allowNull: false, unique: true, validate: { len: [1, 200] } },
  transport: { type: DataTypes.JSONB, allowNull: false },
  sendingRate: {
    type: DataTypes.DECIMAL(12, 4),
    allowNull: false,
    validate: { min: 0 },
    get(this: EmailService) {
      return Number(this.getDataValue('sendingRate'));
    },
  },
  dailyQuota: { type: DataTypes.INTEGER, allowNull: false, validate: { min: 0, isInt: true } },
  usedQuota: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0, validate: { min: 0, isInt: true } },
  quotaDay: { type: DataTypes.DATEONLY, allowNull: false, defaultValue: DataTypes.NOW },
  quotaTimezone: { type: DataTypes.TEXT, allowNull: false, defaultValue: 'UTC' },
  maxConnections: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 5, validate: { min: 1, max: 100 } },
  openToAll: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
  enabled: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
  dkim: { type: DataTypes.JSONB, allowNull: true },
  isHealthy: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
  consecutiveFailures: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  lastError: { type: DataTypes.TEXT, allowNull: true },
  lastErrorAt: { type: DataTypes.DATE, allowNull: true },
  lastSentAt: { type: DataTypes.DATE, allowNull: true },
  nextProbeAt: { type: DataTypes.DATE, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

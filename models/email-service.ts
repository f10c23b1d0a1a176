import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/**
 * SMTP settings of a sending service. Secrets, never returned or logged: `auth.pass`,
 * `auth.accessToken` and `tls.ca` (a private CA is not secret in itself, but it decides whom the
 * service trusts, so it is kept like a credential).
 */
export interface TransportConfig {
  host: string;
  port: number;
  /** Implicit TLS: TLS from the first byte (usually port 465). */
  secure?: boolean;
  /**
   * Refuse to send unless the connection is upgraded with STARTTLS (nothing goes in clear).
   * Unset: true when `secure` is false and the port is 587, else false (STARTTLS when offered).
   */
  requireTLS?: boolean;
  /** PLAIN or LOGIN with a password, XOAUTH2 with an access token; no method: what the server offers. */
  auth?: { user: string; pass?: string; accessToken?: string; method?: SmtpAuthMethod };
  /** Send timeout in ms (socket and greeting). */
  timeoutMs?: number;
  /** Allow self-signed certificates (local relays and tests); the same as `tls.rejectUnauthorized: false`. */
  tlsInsecure?: boolean;
  tls?: TransportTls;
  /** The name this service gives in EHLO (default: the machine's host name). */
  name?: string;
}

export type SmtpAuthMethod = 'PLAIN' | 'LOGIN' | 'XOAUTH2';

export interface TransportTls {
  /** CA certificates (PEM) this service trusts, instead of the system's (a private CA). */
  ca?: string;
  /** The name checked against the server's certificate and sent as SNI (default: the host, unless an IP address). */
  servername?: string;
  minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  /** false: certificate checking is off. */
  rejectUnauthorized?: boolean;
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
  /** Shaping per mailbox provider, deferral rules, warm-up (services/deliverability/shaping.ts); null: the defaults. */
  declare deliverability: CreationOptional<Record<string, unknown> | null>;
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
  deliverability: { type: DataTypes.JSONB, allowNull: true },
  isHealthy: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
  consecutiveFailures: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  lastError: { type: DataTypes.TEXT, allowNull: true },
  lastErrorAt: { type: DataTypes.DATE, allowNull: true },
  lastSentAt: { type: DataTypes.DATE, allowNull: true },
  nextProbeAt: { type: DataTypes.DATE, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

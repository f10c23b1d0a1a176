import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/** One row per distinct (type, message); repeats increment `count` and move `lastSeenAt`. */
export class ErrorLog extends Model<InferAttributes<ErrorLog>, InferCreationAttributes<ErrorLog>> {
  declare id: CreationOptional<number>;
  declare errorType: string;
  declare message: string;
  declare count: CreationOptional<number>;
  declare serviceId: CreationOptional<number | null>;
  declare firstSeenAt: CreationOptional<Date>;
  declare lastSeenAt: CreationOptional<Date>;
}

export const errorLogAttributes: ModelAttributes<ErrorLog> = {
  id: { type: DataTypes.BIGINT, autoIncrement: true, primaryKey: true },
  errorType: { type: DataTypes.TEXT, allowNull: false },
  message: { type: DataTypes.TEXT, allowNull: false },
  count: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 1 },
  serviceId: { type: DataTypes.INTEGER, allowNull: true },
  firstSeenAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
  lastSeenAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
};

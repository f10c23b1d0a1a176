import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

/** A running engine process; it heartbeats so others can tell it is alive. */
export class SchedulerInstance extends Model<InferAttributes<SchedulerInstance>, InferCreationAttributes<SchedulerInstance>> {
  declare id: string;
  declare host: string;
  declare pid: number;
  declare startedAt: CreationOptional<Date>;
  declare heartbeatAt: CreationOptional<Date>;
  /** Sending services this engine owns, as of its last heartbeat. */
  declare services: CreationOptional<number[]>;
}

export const schedulerInstanceAttributes: ModelAttributes<SchedulerInstance> = {
  id: { type: DataTypes.TEXT, primaryKey: true },
  host: { type: DataTypes.TEXT, allowNull: false },
  pid: { type: DataTypes.INTEGER, allowNull: false },
  startedAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
  heartbeatAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
  services: { type: DataTypes.ARRAY(DataTypes.INTEGER), allowNull: false, defaultValue: [] },
};

import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

export class Template extends Model<InferAttributes<Template>, InferCreationAttributes<Template>> {
  declare id: CreationOptional<number>;
  declare userId: number;
  declare name: string;
  /** May hold `{{variable}}` placeholders; never CR or LF (header injection). */
  declare subject: string;
  declare html: CreationOptional<string | null>;
  declare text: CreationOptional<string | null>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

export const templateAttributes: ModelAttributes<Template> = {
  id: { type: DataTypes.INTEGER, autoIncrement: true, primaryKey: true },
  userId: { type: DataTypes.INTEGER, allowNull: false },
  name: { type: DataTypes.TEXT, allowNull: false, validate: { len: [1, 200] } },
  subject: { type: DataTypes.TEXT, allowNull: false, validate: { len: [1, 998], is: /^[^\r\n]*$/ } },
  html: { type: DataTypes.TEXT, allowNull: true },
  text: { type: DataTypes.TEXT, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

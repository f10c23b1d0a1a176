import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type ModelAttributes,
} from 'sequelize';

export type ContactStatus = 'active' | 'unsubscribed' | 'bounced';

export class Contact extends Model<InferAttributes<Contact>, InferCreationAttributes<Contact>> {
  declare id: CreationOptional<number>;
  declare userId: number;
  declare email: string;
  declare name: CreationOptional<string | null>;
  declare tags: CreationOptional<string[]>;
  /** Personalization fields, available to templates as `{{key}}`. */
  declare attributes: CreationOptional<Record<string, unknown>>;
  declare status: CreationOptional<ContactStatus>;
  declare timezone: CreationOptional<string | null>;
  declare createdAt: CreationOptional<Date>;
  declare updatedAt: CreationOptional<Date>;
}

export const contactAttributes: ModelAttributes<Contact> = {
  id: {
    type: DataTypes.BIGINT,
    autoIncrement: true,
    primaryKey: true,
    get(this: Contact) {
      return Number(this.getDataValue('id'));
    },
  },
  userId: { type: DataTypes.INTEGER, allowNull: false },
  email: { type: DataTypes.TEXT, allowNull: false, validate: { isEmail: true, len: [3, 320] } },
  name: { type: DataTypes.TEXT, allowNull: true, validate: { len: [0, 200] } },
  tags: { type: DataTypes.JSONB, allowNull: false, defaultValue: [] },
  attributes: { type: DataTypes.JSONB, allowNull: false, defaultValue: {} },
  status: { type: DataTypes.TEXT, allowNull: false, defaultValue: 'active', validate: { isIn: [['active', 'unsubscribed', 'bounced']] } },
  timezone: { type: DataTypes.TEXT, allowNull: true },
  createdAt: DataTypes.DATE,
  updatedAt: DataTypes.DATE,
};

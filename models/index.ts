/**
 * Binds fairsend's models to one Sequelize instance. Each call defines fresh subclasses, so two
 * engines (or the API and a test) in one process never share model state.
 */
import { DataTypes, Model, type Sequelize } from 'sequelize';
import { Contact, contactAttributes } from './contact.js';
import { EmailService, emailServiceAttributes } from './email-service.js';
import { ErrorLog, errorLogAttributes } from './error-log.js';
import { SchedulerInstance, schedulerInstanceAttributes } from './scheduler-instance.js';
import { Subtask, subtaskAttributes } from './subtask.js';
import { Task, taskAttributes } from './task.js';
import { Template, templateAttributes } from './template.js';
import { User, userAttributes } from './user.js';

export { Contact, EmailService, ErrorLog, SchedulerInstance, Subtask, Task, Template, User };
export type { ContactStatus } from './contact.js';
export type { TransportConfig, TransportTls, SmtpAuthMethod, DkimConfig } from './email-service.js';
export type { SubtaskStatus } from './subtask.js';
export type { TaskStatus, StoredRecipientRule, StoredSendWindow } from './task.js';
export { USER_ROLES, type UserRole } from './user.js';

export class UserService extends Model {
  declare userId: number;
  declare serviceId: number;
}

export interface Models {
  User: typeof User;
  EmailService: typeof EmailService;
  UserService: typeof UserService;
  Contact: typeof Contact;
  Template: typeof Template;
  Task: typeof Task;
  Subtask: typeof Subtask;
  ErrorLog: typeof ErrorLog;
  SchedulerInstance: typeof SchedulerInstance;
}

export function defineModels(sequelize: Sequelize): Models {
  const common = { sequelize, underscored: true } as const;
  const M = {
    User: class extends User {},
    EmailService: class extends EmailService {},
    UserService: class extends UserService {},
    Contact: class extends Contact {},
    Template: class extends Template {},
    Task: class extends Task {},
    Subtask: class extends Subtask {},
    ErrorLog: class extends ErrorLog {},
    SchedulerInstance: class extends SchedulerInstance {},
  };
  M.User.init(userAttributes, { ...common, tableName: 'users', modelName: 'User' });
  M.EmailService.init(emailServiceAttributes, { ...common, tableName: 'email_services', modelName: 'EmailService' });
  M.UserService.init(
    {
      userId: { type: DataTypes.INTEGER, primaryKey: true },
      serviceId: { type: DataTypes.INTEGER, primaryKey: true },
    },
    { ...common, tableName: 'user_services', modelName: 'UserService', updatedAt: false },
  );
  M.Contact.init(contactAttributes, { ...common, tableName: 'contacts', modelName: 'Contact' });
  M.Template.init(templateAttributes, { ...common, tableName: 'templates', modelName: 'Template' });
  M.Task.init(taskAttributes, { ...common, tableName: 'tasks', modelName: 'Task' });
  M.Subtask.init(subtaskAttributes, { ...common, tableName: 'subtasks', modelName: 'Subtask', timestamps: false });
  M.ErrorLog.init(errorLogAttributes, { ...common, tableName: 'error_logs', modelName: 'ErrorLog', timestamps: false });
  M.SchedulerInstance.init(schedulerInstanceAttributes, {
    ...common,
    tableName: 'scheduler_instances',
    modelName: 'SchedulerInstance',
    timestamps: false,
  });

  M.User.belongsToMany(M.EmailService, { through: M.UserService, foreignKey: 'userId', otherKey: 'serviceId', as: 'services' });
  M.EmailService.belongsToMany(M.User, { through: M.UserService, foreignKey: 'serviceId', otherKey: 'userId', as: 'users' });
  M.Contact.belongsTo(M.User, { foreignKey: 'userId', as: 'user' });
  M.Template.belongsTo(M.User, { foreignKey: 'userId', as: 'user' });
  M.Task.belongsTo(M.User, { foreignKey: 'createdBy', as: 'creator' });
  M.Task.hasMany(M.Subtask, { foreignKey: 'taskId', as: 'subtasks' });
  M.Subtask.belongsTo(M.Task, { foreignKey: 'taskId', as: 'task' });
  return M;
}

/** fairsend's public API. */
export { createEngine, createEngineCore, type Engine, type EngineCore, type EngineOptions } from './engine.js';
export type { Clock } from '../services/context.js';
export type { UserView } from '../services/users.js';
export type { ServiceView, ServiceQuota } from '../services/sending-services.js';
export type { BulkCreateResult } from '../services/contacts.js';
export type { TemplateView } from '../services/templates.js';
export type { CampaignView, CampaignProgress } from '../services/campaigns.js';
export type { GenerationResult } from '../services/generation.js';
export type { SchedulerStatus, ServiceStatus, InstanceInfo, SentEvent, DeliveryMode } from '../services/scheduler/loop.js';
export type {
  CreateUserInput,
  CreateServiceInput,
  UpdateServiceInput,
  ContactInput,
  CreateTemplateInput,
  CreateCampaignInput,
  RecipientRule,
  SendWindowInput,
} from '../services/validation.js';
export { loadConfig, VARIABLES, type Config, type ConfigOverrides } from '../services/kernel/config.js';
export {
  FairsendError,
  ConfigError,
  ValidationError,
  NotFoundError,
  ConflictError,
  QuotaExceededError,
  ErrorCodes,
  type ErrorCode,
  type FieldIssue,
} from '../services/kernel/errors.js';
export { SmtpCatcher, startSmtpCatcher, type CaughtMessage, type SmtpCatcherOptions, type SmtpReply } from './smtp-catcher.js';
export type * from '../models/index.js';

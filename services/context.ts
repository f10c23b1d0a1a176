import { DateTime } from 'luxon';
import type { Sequelize } from 'sequelize';
import type { Config } from './kernel/config.js';
import type { Logger } from './kernel/logger.js';
import type { Models } from '../models/index.js';
import type { Keyring } from './kernel/secrets.js';

/** The clock every time-dependent decision reads; tests inject their own. */
export type Clock = () => DateTime;
export const systemClock: Clock = () => DateTime.now();

/** What the domain services need: the API pool and models, the scheduler pool, a clock, a logger. */
export interface ServiceContext {
  config: Config;
  logger: Logger;
  apiDb: Sequelize;
  schedulerDb: Sequelize;
  models: Models;
  clock: Clock;
  /** Seals secrets when they are stored; opened only where a transport is built. */
  secrets: Keyring;
}

import type {
  FastifyBaseLogger,
  FastifyInstance,
  FastifyRequest,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Engine } from '../engine.js';
import { NotFoundError } from '../../services/kernel/errors.js';
import type { CampaignView } from '../../services/campaigns.js';
import { isAdmin, userOf } from './auth.js';
import type { ResolvedHttpOptions } from './options.js';
import type { SendHistory } from './send-history.js';

/** A fastify instance with zod schemas (see compilers.ts). */
export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression<RawServerDefault>,
  RawReplyDefaultExpression<RawServerDefault>,
  FastifyBaseLogger,
  ZodTypeProvider
>;

/** What routes share: the engine, the resolved options, and a few cached reads. */
export interface RouteContext {
  engine: Engine;
  options: ResolvedHttpOptions;
  version: string;
  /** Queued subtasks in the whole database, cached for one second (status polls and scrapes share it). */
  queuedCount(): Promise<number>;
  /** This process's sends per service over the last 15 minutes (status, the dashboard's chart). */
  sendHistory: SendHistory;
}

/**
 * The campaign, if the requester may see it. Another user's campaign is a 404, exactly like a
 * missing one, so a user cannot learn that it exists.
 */
export async function campaignFor(engine: Engine, request: FastifyRequest, id: number): Promise<CampaignView> {
  const campaign = await engine.campaigns.get(id);
  if (!isAdmin(request) && campaign.userId !== userOf(request).id) throw new NotFoundError('campaign', id);
  return campaign;
}

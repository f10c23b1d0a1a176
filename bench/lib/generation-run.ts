/**
 * Queue pre-generation, shared by `bench/generation.ts` (npm run bench:generation) and W2: one
 * user with N tagged contacts (10 % more carry an excluded tag, so the rule really filters), then
 * one tag-rule campaign per run whose queue processScheduledTasks() generates.
 *
 * The recipients' domains are spread as a real list's are: 3 in 10 gmail.com, 1 in 10 each
 * outlook.com, yahoo.com, icloud.com, and 4 in 10 over 400 custom domains (`d<n>.example`, n ending in 6-9:
 * names reserved for examples, which the resolver never looks up, so no DNS is involved and the
 * figure is the database's work; real MX lookups add at most ceil(new domains / 16) x
 * MX_LOOKUP_TIMEOUT_MS the first time a domain is seen, then nothing for 30 days).
 *
 * The cost of resolving mailbox providers at generation: each run also generates the same queue
 * through a generator with `resolveProviders: false` (the path before issue 13: no domain scan,
 * no lookups, no join, provider NULL), alternating which goes first.
 */
import { createEngineCore, type Engine, type EngineCore } from '../../src/engine.js';
import { createGenerator, type Generator } from '../../services/generation.js';
import { systemClock } from '../../services/context.js';
import { createLogger } from '../../services/kernel/logger.js';

export interface GenerationData {
  userId: number;
  templateId: number;
}

export async function loadGenerationData(engine: Engine, n: number, runs: number): Promise<GenerationData> {
  const user = await engine.users.create({ name: 'Bench', email: 'bench@example.test', quota: n * (3 * runs + 1) });
  const tpl = await engine.templates.create(user.id, { name: 't', subject: 'Hello {{name}}', text: 'Hi {{name}}' });
  // N matching contacts, plus 10 % that match the include tag but carry the excluded one.
  await engine.apiDb.query(
    `INSERT INTO contacts (user_id, email, name, tags)
     SELECT $u, 'r' || g || '@' || CASE WHEN g % 10 < 3 THEN 'gmail.com' WHEN g % 10 = 3 THEN 'outlook.com'
                                         WHEN g % 10 = 4 THEN 'yahoo.com' WHEN g % 10 = 5 THEN 'icloud.com'
                                         ELSE 'd' || (g % 1000) || '.example' END,
            'Reader ' || g,
            CASE WHEN g > $n THEN '["newsletter","churned"]'::jsonb ELSE '["newsletter"]'::jsonb END
       FROM generate_series(1, $total::int) g`,
    { bind: { u: user.id, n, total: Math.round(n * 1.1) } },
  );
  await engine.apiDb.query('VACUUM ANALYZE contacts');
  return { userId: user.id, templateId: tpl.id };
}

/** A generator on its own pools that writes no provider (`resolveProviders: false`), for the comparison. */
export async function plainGenerator(url: string): Promise<{ generator: Generator; close: () => Promise<void> }> {
  const core: EngineCore = await createEngineCore({ databaseUrl: url, logger: createLogger('silent') });
  const ctx = { ...core, clock: systemClock };
  return { generator: createGenerator(ctx, { resolveProviders: false }), close: () => core.close() };
}

/**
 * A generator on its own pools that always writes the queue by one path (services/queue-copy.ts):
 * by COPY when `byCopy` (GENERATION_COPY_MIN 0), else by INSERT ... SELECT (GENERATION_COPY_MIN
 * above any size). W2 runs it with the path the engine does not take at the measured size, for the
 * comparison of the two.
 */
export async function otherPathGenerator(url: string, byCopy: boolean): Promise<{ generator: Generator; close: () => Promise<void> }> {
  const core: EngineCore = await createEngineCore({
    databaseUrl: url,
    logger: createLogger('silent'),
    env: { GENERATION_COPY_MIN: byCopy ? '0' : String(Number.MAX_SAFE_INTEGER) },
  });
  const ctx = { ...core, clock: systemClock };
  return { generator: createGenerator(ctx), close: () => core.close() };
}

/**
 * Creates the run's campaign (outside the clock); `generate` is the measured part, through the
 * engine's generator or, when given, `via` (the one without provider resolution).
 */
export async function prepareGenerationRun(engine: Engine, data: GenerationData, n: number, run: number | string, via?: Generator) {
  await engine.campaigns.create({
    userId: data.userId,
    name: `bench ${run}`,
    from: 'bench@example.test',
    templates: [data.templateId],
    recipientRule: { type: 'tag_based', includeTags: ['newsletter'], excludeTags: ['churned'] },
  });
  return {
    generate: async () => {
      const [r] = via ? await via.processScheduledTasks(1) : await engine.scheduler.processScheduledTasks(1);
      if (r?.generated !== n) throw new Error(`expected ${n} subtasks, generated ${r?.generated}`);
    },
  };
}

/**
 * Queue pre-generation, shared by `bench/generation.ts` (npm run bench:generation) and W2: one
 * user with N tagged contacts (10 % more carry an excluded tag, so the rule really filters), then
 * one tag-rule campaign per run whose queue processScheduledTasks() generates.
 */
import type { Engine } from '../../src/engine.js';

export interface GenerationData {
  userId: number;
  templateId: number;
}

export async function loadGenerationData(engine: Engine, n: number, runs: number): Promise<GenerationData> {
  const user = await engine.users.create({ name: 'Bench', email: 'bench@example.test', quota: n * (runs + 1) });
  const tpl = await engine.templates.create(user.id, { name: 't', subject: 'Hello {{name}}', text: 'Hi {{name}}' });
  // N matching contacts, plus 10 % that match the include tag but carry the excluded one.
  await engine.apiDb.query(
    `INSERT INTO contacts (user_id, email, name, tags)
     SELECT $u, 'r' || g || '@example.test', 'Reader ' || g,
            CASE WHEN g > $n THEN '["newsletter","churned"]'::jsonb ELSE '["newsletter"]'::jsonb END
       FROM generate_series(1, $total::int) g`,
    { bind: { u: user.id, n, total: Math.round(n * 1.1) } },
  );
  await engine.apiDb.query('VACUUM ANALYZE contacts');
  return { userId: user.id, templateId: tpl.id };
}

/** Creates the run's campaign (outside the clock); `generate` is the measured part. */
export async function prepareGenerationRun(engine: Engine, data: GenerationData, n: number, run: number) {
  await engine.campaigns.create({
    userId: data.userId,
    name: `bench ${run}`,
    from: 'bench@example.test',
    templates: [data.templateId],
    recipientRule: { type: 'tag_based', includeTags: ['newsletter'], excludeTags: ['churned'] },
  });
  return {
    generate: async () => {
      const [r] = await engine.scheduler.processScheduledTasks(1);
      if (r?.generated !== n) throw new Error(`expected ${n} subtasks, generated ${r?.generated}`);
    },
  };
}

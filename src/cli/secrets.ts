/**
 * `fairsend secrets`: the key that encrypts stored secrets (SMTP passwords, DKIM and TLS keys,
 * webhook signing keys and passwords).
 *
 *   fairsend secrets generate-key   a new random key for FAIRSEND_SECRET_KEY
 *   fairsend secrets status         stored secrets by key id (plain, current, earlier keys)
 *   fairsend secrets rotate         re-encrypt every stored secret with FAIRSEND_SECRET_KEY
 *
 * Rotation: set FAIRSEND_SECRET_KEY to the new key and FAIRSEND_SECRET_KEY_PREVIOUS to the old one
 * on every engine (they then open both), run `fairsend secrets rotate` once, then drop
 * FAIRSEND_SECRET_KEY_PREVIOUS. The rotation is one transaction: a value no configured key opens
 * stops it and nothing is written.
 */
import { Command } from 'commander';
import type { EngineCore } from '../engine.js';
import { generateSecretKey } from '../../services/kernel/secrets.js';
import { resealStoredSecrets, scanStoredSecrets } from '../../services/service-secrets.js';

export interface SecretsCommandDeps {
  withCore: <T>(migrate: boolean, fn: (core: EngineCore) => Promise<T>) => Promise<T>;
  out: (s: string) => void;
}

export function secretsCommand({ withCore, out }: SecretsCommandDeps): Command {
  const secrets = new Command('secrets').description('the key that encrypts stored secrets: generate, status, rotate');
  secrets
    .command('generate-key')
    .description('print a new random key (base64 of 32 bytes) for FAIRSEND_SECRET_KEY')
    .action(() => out(`${generateSecretKey()}\n`));
  secrets
    .command('status')
    .description('stored secrets by key id: plain, the current key, earlier keys')
    .action(() =>
      withCore(false, async (core) => {
        const { plain, sealed } = await scanStoredSecrets(core.apiDb);
        const current = core.secrets.currentId;
        out(`current key: ${current ?? 'none (FAIRSEND_SECRET_KEY is not set)'}\n`);
        out(`plain: ${plain}\n`);
        for (const [kid, n] of [...sealed.entries()].sort()) {
          const which = kid === current ? 'current' : core.secrets.knows(kid) ? 'previous' : 'UNKNOWN';
          out(`key ${kid} (${which}): ${n}\n`);
        }
      }),
    );
  secrets
    .command('rotate')
    .description('re-encrypt every stored secret with FAIRSEND_SECRET_KEY (earlier keys from FAIRSEND_SECRET_KEY_PREVIOUS)')
    .action(() =>
      withCore(false, async (core) => {
        const r = await resealStoredSecrets(core.apiDb, core.secrets, 'all');
        out(
          `${r.values} secret(s) of ${r.services} service(s) and ${r.webhooks} webhook(s) re-encrypted with key ${core.secrets.currentId}\n`,
        );
      }),
    );
  return secrets;
}

/**
 * `npm run demo`: Istio's BookInfo sample on Sail (docs/demo.md).
 *
 *   node build/demo/bookinfo.js [--once] [--loopback] [--calls N] [--delay SECONDS]
 *
 * As root: the control plane and six VMs in network namespaces, each joined with `sail join` and
 * running `sail node-agent` (capture, DNS, its proxy) and one BookInfo workload (demo/namespaces.ts).
 * Without root (or with --loopback): everything on this host's loopback, proxies in explicit
 * mode, no capture (demo/loopback.ts); it says so.
 *
 * Then Istio's traffic-management tasks (demo/scenario.ts), printing what productpage's callers
 * see after each. Then it prints how to call productpage and where the metrics are, and keeps the
 * mesh running until Ctrl-C (SIGINT or SIGTERM), which tears everything down. With --once it tears
 * down at once and exits 0 when every step passed, 1 otherwise.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { APPS_JS, type BookinfoMesh, SAIL_JS } from './mesh';
import { LoopbackMesh } from './loopback';
import { NamespacesMesh } from './namespaces';
import { runScenario } from './scenario';

interface DemoArgs {
  readonly once: boolean;
  readonly loopback: boolean;
  readonly calls: number;
  readonly delaySeconds: number;
}

const USAGE =
  'usage: node build/demo/bookinfo.js [--once] [--loopback] [--calls N (default 20)] [--delay SECONDS (default 2)]';

function parseArgs(argv: readonly string[]): DemoArgs {
  let once = false;
  let loopback = false;
  let calls = 20;
  let delaySeconds = 2;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (name: string, min: number, max: number): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < min || v > max)
        throw new Error(`${name}: want an integer from ${min} to ${max}, got ${argv[i]}`);
      return v;
    };
    if (a === '--once') once = true;
    else if (a === '--loopback') loopback = true;
    else if (a === '--calls') calls = value('--calls', 4, 1000);
    else if (a === '--delay') delaySeconds = value('--delay', 1, 30);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  return { once, loopback, calls, delaySeconds };
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** Why the namespaces topology cannot run here, or undefined when it can. */
function whyNoNamespaces(): string | undefined {
  if (process.getuid?.() !== 0)
    return 'not running as root (network namespaces and iptables capture need root; run `sudo npm run demo`)';
  const missing = ['ip', 'iptables-restore', 'setpriv', 'curl'].filter(c => !has(c));
  if (missing.length > 0) return `missing commands: ${missing.join(', ')}`;
  return undefined;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  for (const f of [SAIL_JS, APPS_JS])
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run \`npm run build\` first`);

  const why = args.loopback ? 'asked for with --loopback' : whyNoNamespaces();
  say('Sail BookInfo demo: productpage → details, productpage → reviews v1/v2/v3 → ratings');
  if (why) {
    say('');
    say(`FALLBACK: one host on loopback, WITHOUT traffic capture (${why}).`);
    say('  Each workload still has its own identity, registration and proxy, and every hop is');
    say("  mutual TLS between two proxies, but applications dial their proxy's listener");
    say('  explicitly instead of being captured by iptables, and there are no separate VMs.');
  } else {
    say('Topology: the control plane and seven VMs (network namespaces on one bridge): one per');
    say('workload (productpage, details, reviews v1, v2, v3, ratings) and a client, each joined');
    say('with `sail join` + `sail node-agent` (iptables capture, mesh DNS, its proxy).');
  }
  say('');

  let mesh: BookinfoMesh | undefined;
  let stopping = false;
  const teardown = async (signal?: string) => {
    if (stopping) return;
    stopping = true;
    if (signal) say(`\n${signal}: tearing everything down...`);
    await mesh?.close();
    say(
      mesh?.kind === 'loopback'
        ? 'Torn down: processes stopped, files removed.'
        : 'Torn down: processes stopped, namespaces, rules and files removed.',
    );
  };
  const interrupted = new Promise<string>(resolve => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });

  try {
    const t0 = Date.now();
    const starting = why ? LoopbackMesh.create(say) : NamespacesMesh.create(say);
    const first = await Promise.race([starting, interrupted]);
    if (typeof first === 'string') {
      // Ctrl-C while starting: let create finish (or fail) and undo it.
      mesh = await starting.catch(() => undefined);
      await teardown(first);
      return 130;
    }
    mesh = first;
    say(`Mesh ready in ${((Date.now() - t0) / 1000).toFixed(1)} s.`);

    const results = await Promise.race([
      runScenario(mesh, say, { calls: args.calls, delaySeconds: args.delaySeconds }),
      interrupted,
    ]);
    if (typeof results === 'string') {
      await teardown(results);
      return 130;
    }
    const failed = results.filter(r => !r.ok);
    say('');
    say(
      failed.length === 0
        ? `BookInfo demo (${mesh.kind}): all ${results.length} steps passed`
        : `BookInfo demo (${mesh.kind}): ${failed.length} of ${results.length} steps FAILED: ${failed.map(r => r.name).join(', ')}`,
    );
    say('');
    for (const l of mesh.howTo()) say(l);
    say('');
    if (args.once) {
      await teardown();
      return failed.length === 0 ? 0 : 1;
    }
    say('The mesh keeps running (the last rules stay applied). Press Ctrl-C to tear it all down.');
    await teardown(await interrupted);
    return 0;
  } catch (err) {
    say(`\nThe demo failed: ${(err as Error).message}`);
    await teardown().catch((e: unknown) => say(`teardown: ${(e as Error).message}`));
    return 1;
  }
}

main().then(
  code => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    process.exit(2);
  },
);

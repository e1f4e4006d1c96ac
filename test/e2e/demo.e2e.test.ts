/**
 * `npm run demo` end to end (root only): runs the BookInfo demo non-interactively
 * (`node build/demo/bookinfo.js --once`), which builds the control plane and seven VMs in network
 * namespaces, joins each with `sail join` + `sail node-agent`, applies Istio's traffic-management
 * rules one after another and checks what productpage's callers see; then tears everything down.
 * This test reads the demo's printed results: every version before any rule, v1 only, v1 and v3
 * under the 50/50 split, v2 for jason (and v1 for others), jason's 2 s ratings delay, jason's
 * ratings abort, and nothing of the lab left afterwards.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const BUILD = path.join(__dirname, '..', '..', 'build');
const DEMO_JS = path.join(BUILD, 'demo', 'bookinfo.js');
const CALLS = 10;

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces, iptables)'
    : !has('ip') || !has('iptables-restore') || !has('setpriv') || !has('curl')
      ? 'needs ip (iproute2), iptables-restore, setpriv and curl'
      : !fs.existsSync(DEMO_JS) || !fs.existsSync(path.join(BUILD, 'cli', 'sail.js'))
        ? 'run `npm run build` first (npm test does)'
        : undefined;
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`demo e2e test skipped: ${skipReason}`);

/** Runs the demo to completion; its exit code and output (the tail on failure). */
function runDemo(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise(resolve => {
    const child = spawn(process.execPath, [DEMO_JS, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    // SIGINT is the demo's own teardown path (Ctrl-C); it still cleans up.
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.once('exit', code => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The block of output of the step whose title starts with `== N.` */
function stepBlock(out: string, n: number): string {
  const start = out.indexOf(`\n== ${n}. `);
  if (start < 0) return '';
  const end = out.indexOf('\n== ', start + 1);
  const rest = end < 0 ? out.slice(start) : out.slice(start, end);
  const summary = rest.indexOf('\nBookInfo demo');
  return summary < 0 ? rest : rest.slice(0, summary);
}

jest.setTimeout(150_000);

run('npm run demo: BookInfo on seven VMs in network namespaces', () => {
  let result: { code: number | null; out: string };
  let ms = 0;

  beforeAll(async () => {
    const t0 = Date.now();
    result = await runDemo(['--once', '--calls', String(CALLS)], 120_000);
    ms = Date.now() - t0;
  }, 150_000);

  const ctx = () => `demo output (exit ${result.code}, ${ms} ms):\n${result.out.slice(-6000)}`;

  it('runs every step and exits 0 in under 90 s', () => {
    if (result.code !== 0 || !result.out.includes('all 6 steps passed')) throw new Error(ctx());
    expect(result.out).toContain('Topology: the control plane and seven VMs');
    expect(result.out).not.toContain('FALLBACK');
    expect(
      result.out.match(/ready: spiffe:\/\/cluster\.local\/ns\/default\/sa\/\S+, capture on/g),
    ).toHaveLength(7);
    expect(ms).toBeLessThan(90_000);
  });

  it('without rules reviews round-robins over v1, v2 and v3; then all traffic goes to v1', () => {
    expect(stepBlock(result.out, 1)).toMatch(
      new RegExp(
        `${CALLS} calls: v1 ×\\d+ \\(\\d+%\\), v2 ×\\d+ \\(\\d+%\\), v3 ×\\d+ \\(\\d+%\\)   `,
      ),
    );
    expect(stepBlock(result.out, 2)).toContain(
      `${CALLS} calls: v1 ×${CALLS} (100%)   stars: none ×${CALLS}`,
    );
  });

  it('the 50/50 route splits reviews between v1 and v3 only', () => {
    const block = stepBlock(result.out, 3);
    const m = new RegExp(`${CALLS} calls: v1 ×(\\d+) \\(\\d+%\\), v3 ×(\\d+) \\(\\d+%\\)   `).exec(
      block,
    );
    if (!m) throw new Error(`no v1/v3 split in: ${block}`);
    expect(Number(m[1]) + Number(m[2])).toBe(CALLS);
    expect(block).not.toMatch(/v2 ×/);
  });

  it('jason sees v2 (black stars), everyone else v1', () => {
    const block = stepBlock(result.out, 4);
    expect(block).toContain(
      `${CALLS} calls as jason: v2 ×${CALLS} (100%)   stars: black ×${CALLS}`,
    );
    expect(block).toContain(
      `${CALLS} calls anonymous: v1 ×${CALLS} (100%)   stars: none ×${CALLS}`,
    );
  });

  it('fault injection: jason waits the 2 s ratings delay, then gets ratings unavailable', () => {
    const delay = stepBlock(result.out, 5);
    const m = /(\d+) calls as jason: v2 ×\d+ \(100%\), latency min (\d+) ms/.exec(delay);
    if (!m) throw new Error(`no delayed calls in: ${delay}`);
    expect(Number(m[2])).toBeGreaterThanOrEqual(1_900);
    const fast = /calls anonymous: v1 ×\d+ \(100%\), latency min \d+ ms, max (\d+) ms/.exec(delay);
    expect(Number(fast?.[1] ?? 99_999)).toBeLessThan(1_900);
    expect(stepBlock(result.out, 6)).toContain(
      `"Ratings service is currently unavailable" on ${CALLS} of ${CALLS} pages`,
    );
    for (let i = 1; i <= 6; i++) expect(stepBlock(result.out, i)).toContain('result: ok');
  });

  it('prints how to call productpage and where the metrics are, then leaves nothing behind', () => {
    expect(result.out).toMatch(
      /ip netns exec smlab-\w+-vmsleep curl -s http:\/\/productpage:9080\/productpage/,
    );
    expect(result.out).toContain('curl -s http://127.0.0.1:15090/stats/prometheus');
    expect(result.out).toContain('Torn down');
    const tag = /^Lab (\w+):/m.exec(result.out)?.[1];
    expect(tag).toBeDefined();
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(netns).not.toContain(`smlab-${tag}-`);
    const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout;
    expect(links).not.toContain(`sml${tag}`);
    expect(fs.existsSync(`/run/sail-mesh-lab/${tag}.json`)).toBe(false);
  });
});

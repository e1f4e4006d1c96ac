/**
 * Sail's own small BookInfo (Istio's classic sample, rewritten as plain Node processes that know
 * nothing of the mesh). One script, run once per workload:
 *
 *   node bookinfo-apps.js serve --service productpage|details|reviews|ratings [--version v1]
 *        [--node NAME] [--listen 0.0.0.0:9080] [--via IP]
 *   node bookinfo-apps.js call  --url http://productpage:9080/productpage [--count 10]
 *        [--header end-user:jason …] [--via IP] [--timeout-ms 10000]
 *
 * serve (every service on port 9080, as in Istio's BookInfo):
 *   productpage  GET /productpage      → calls details (GET /details/0) and reviews (GET /reviews/0)
 *                                         BY NAME (http://details:9080, http://reviews:9080) and
 *                                         renders a small HTML page; with `Accept: application/json`
 *                                         the same as JSON ({@link ProductPage})
 *   details      GET /details/0        → the book
 *   reviews      GET /reviews/0        → two reviews; v1 without ratings, v2 black stars, v3 red
 *                                         stars (v2 and v3 call http://ratings:9080/ratings/0)
 *   ratings      GET /ratings/0        → {ratings: {Reviewer1: 5, Reviewer2: 4}}
 *   every one    GET /health           → 200 {"status":"ok"}
 *   Each call forwards `end-user` and the tracing headers (x-request-id, B3, W3C traceparent) of
 *   the request it serves, as Istio's BookInfo does, so header routes apply further down.
 *   Prints {"event":"listening",…} once bound.
 *
 * --via IP (explicit mode, no capture): dial IP:9080 (the local proxy's outbound listener) with
 *   `Host: NAME:9080` instead of resolving NAME.
 *
 * call: `--count` GETs of the URL one after another (Accept: application/json), then prints one
 *   {@link CallSummary} JSON line and exits 0.
 */
import * as http from 'node:http';
import * as os from 'node:os';
import { type Args, one, parseArgs } from '../test/helpers/cli-args';

/** The port every BookInfo service listens on and is called on. */
export const BOOKINFO_PORT = 9080;

/** Headers a service copies from the request it serves onto the calls it makes (Istio's list). */
export const FORWARDED_HEADERS = [
  'end-user',
  'user-agent',
  'x-request-id',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'x-ot-span-context',
  'traceparent',
  'tracestate',
] as const;

/** What productpage renders (as JSON with `Accept: application/json`). */
export interface ProductPage {
  readonly product: { readonly title: string; readonly details?: Record<string, unknown> };
  readonly detailsError?: string;
  /** The reviews instance that answered. */
  readonly reviews?: {
    readonly version: string;
    readonly node: string;
    /** 'black' (v2), 'red' (v3), or null (v1: no ratings). */
    readonly stars: 'black' | 'red' | null;
    readonly ratings?: Record<string, number>;
    /** Set when reviews could not get the ratings (v2, v3). */
    readonly ratingsError?: string;
  };
  readonly reviewsError?: string;
  readonly user?: string;
}

/** What `call` prints. */
export interface CallSummary {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly count: number;
  ok: number;
  errors: number;
  /** Successful pages by the reviews version shown. */
  readonly byVersion: Record<string, number>;
  /** Successful pages by star colour ('none' for v1). */
  readonly byStars: Record<string, number>;
  /** Pages on which reviews reported the ratings service unavailable. */
  ratingsUnavailable: number;
  readonly errorsByMessage: Record<string, number>;
  /** Per-call latency in ms, in call order. */
  readonly latencyMs: number[];
}

const STARS = { v1: null, v2: 'black', v3: 'red' } as const;

const print = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
const errMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));

function headerArgs(args: Args): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const h of args.get('header') ?? []) {
    const c = h.indexOf(':');
    if (c <= 0) throw new Error(`--header ${h}: want NAME:VALUE`);
    headers[h.slice(0, c).trim().toLowerCase()] = h.slice(c + 1).trim();
  }
  return headers;
}

/**
 * GET `http://NAME:9080PATH` (or, with `via`, `http://VIA:9080PATH` with `Host: NAME:9080`);
 * resolves with the parsed JSON body of a 200, rejects with `NAME: HTTP <status>` or the error.
 */
function getJson(
  name: string,
  urlPath: string,
  headers: Record<string, string>,
  opts: { via?: string; timeoutMs: number; agent: http.Agent },
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: opts.via ?? name,
        port: BOOKINFO_PORT,
        path: urlPath,
        headers: { ...headers, host: `${name}:${BOOKINFO_PORT}`, accept: 'application/json' },
        agent: opts.agent,
        timeout: opts.timeoutMs,
      },
      res => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString();
          if (res.statusCode !== 200)
            return reject(new Error(`${name}: HTTP ${res.statusCode} ${body.slice(0, 60)}`.trim()));
          try {
            resolve(JSON.parse(body) as Record<string, unknown>);
          } catch {
            reject(new Error(`${name}: a body that is not JSON: ${body.slice(0, 60)}`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${name}: timeout after ${opts.timeoutMs} ms`)));
    req.on('error', err => reject(new Error(`${name}: ${err.message}`)));
  });
}

function forwarded(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of FORWARDED_HEADERS) {
    const v = req.headers[h];
    if (typeof v === 'string') out[h] = v;
  }
  return out;
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);

/** The page a browser (or curl) gets: plain HTML, one line per fact. */
function renderHtml(page: ProductPage): string {
  const r = page.reviews;
  const stars = (n: number) => '★'.repeat(n) + '☆'.repeat(5 - n);
  const lines = [
    '<!doctype html>',
    `<html><head><title>Simple Bookstore App</title></head><body>`,
    `<h1>${escapeHtml(page.product.title)}</h1>`,
    page.user ? `<p>Signed in as: ${escapeHtml(page.user)}</p>` : '<p>Not signed in</p>',
    page.detailsError
      ? `<p>Error fetching product details: ${escapeHtml(page.detailsError)}</p>`
      : `<p>Details: ${escapeHtml(
          ['author', 'year', 'type', 'pages', 'publisher', 'language', 'ISBN-10']
            .map(k => `${k}: ${String(page.product.details?.[k])}`)
            .join(', '),
        )} (details ${String(page.product.details?.version)} on ${String(page.product.details?.node)})</p>`,
  ];
  if (!r)
    lines.push(`<p>Error fetching product reviews: ${escapeHtml(page.reviewsError ?? '')}</p>`);
  else {
    lines.push(`<p>Reviews served by: reviews-${r.version} (${escapeHtml(r.node)})</p>`);
    if (r.stars === null) lines.push('<p>Ratings: none (reviews v1 does not call ratings)</p>');
    else if (r.ratingsError)
      lines.push(`<p>Ratings service is currently unavailable (${escapeHtml(r.ratingsError)})</p>`);
    else
      for (const [who, n] of Object.entries(r.ratings ?? {}))
        lines.push(
          `<p>${escapeHtml(who)}: <font color="${r.stars}">${stars(n)}</font> (${r.stars} stars)</p>`,
        );
  }
  lines.push('</body></html>', '');
  return lines.join('\n');
}

async function serve(args: Args): Promise<void> {
  const service = one(args, 'service');
  if (!service || !['productpage', 'details', 'reviews', 'ratings'].includes(service))
    throw new Error(`--service ${service}: want productpage, details, reviews or ratings`);
  const version = one(args, 'version', 'v1') as string;
  if (service === 'reviews' && !(version in STARS))
    throw new Error(`--version ${version}: reviews has v1, v2 and v3`);
  const node = one(args, 'node') ?? os.hostname();
  const listen = one(args, 'listen', `0.0.0.0:${BOOKINFO_PORT}`) as string;
  const colon = listen.lastIndexOf(':');
  const bindHost = listen.slice(0, colon);
  const bindPort = Number(listen.slice(colon + 1));
  const via = one(args, 'via');
  const agent = new http.Agent({ keepAlive: true });
  const call = (name: string, p: string, req: http.IncomingMessage, timeoutMs: number) =>
    getJson(name, p, forwarded(req), { ...(via ? { via } : {}), timeoutMs, agent });
  const who = { service, version, node };

  const handle = async (req: http.IncomingMessage): Promise<[number, unknown, string?]> => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/health') return [200, { status: 'ok' }];
    switch (service) {
      case 'details':
        return [
          200,
          {
            ...who,
            id: 0,
            author: 'William Shakespeare',
            year: 1595,
            type: 'paperback',
            pages: 200,
            publisher: 'PublisherA',
            language: 'English',
            'ISBN-10': '1234567890',
          },
        ];
      case 'ratings':
        return [200, { ...who, id: 0, ratings: { Reviewer1: 5, Reviewer2: 4 } }];
      case 'reviews': {
        const stars = STARS[version as keyof typeof STARS];
        const base = {
          ...who,
          id: 0,
          reviews: [
            { reviewer: 'Reviewer1', text: 'An extremely entertaining play by Shakespeare.' },
            { reviewer: 'Reviewer2', text: 'Absolutely fun and entertaining.' },
          ],
          stars,
        };
        if (stars === null) return [200, base];
        try {
          const r = await call('ratings', '/ratings/0', req, 10_000);
          return [200, { ...base, ratings: r.ratings }];
        } catch (err) {
          return [200, { ...base, ratingsError: errMessage(err) }];
        }
      }
      default: {
        if (url.pathname !== '/productpage' && url.pathname !== '/')
          return [404, { error: `no page ${url.pathname}` }];
        const [details, reviews] = await Promise.allSettled([
          call('details', '/details/0', req, 5_000),
          call('reviews', '/reviews/0', req, 10_000),
        ]);
        const user = req.headers['end-user'];
        const page: ProductPage = {
          product: {
            title: 'The Comedy of Errors',
            ...(details.status === 'fulfilled' ? { details: details.value } : {}),
          },
          ...(details.status === 'rejected' ? { detailsError: errMessage(details.reason) } : {}),
          ...(reviews.status === 'fulfilled'
            ? {
                reviews: {
                  version: String(reviews.value.version),
                  node: String(reviews.value.node),
                  stars: (reviews.value.stars ?? null) as 'black' | 'red' | null,
                  ...(reviews.value.ratings
                    ? { ratings: reviews.value.ratings as Record<string, number> }
                    : {}),
                  ...(typeof reviews.value.ratingsError === 'string'
                    ? { ratingsError: reviews.value.ratingsError }
                    : {}),
                },
              }
            : { reviewsError: errMessage(reviews.reason) }),
          ...(typeof user === 'string' ? { user } : {}),
        };
        const json = /application\/json/.test(req.headers.accept ?? '');
        return json ? [200, page] : [200, page, renderHtml(page)];
      }
    }
  };

  const server = http.createServer((req, res) => {
    req.resume();
    handle(req).then(
      ([status, body, html]) => {
        res.writeHead(status, {
          'content-type': html !== undefined ? 'text/html; charset=utf-8' : 'application/json',
        });
        res.end(html ?? JSON.stringify(body));
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: errMessage(err) }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(bindPort, bindHost, () => resolve());
  });
  print({ event: 'listening', ...who, listen, ...(via ? { via } : {}) });
  const stop = () => {
    server.close();
    agent.destroy();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function callMode(args: Args): Promise<void> {
  const urlText = one(args, 'url', `http://productpage:${BOOKINFO_PORT}/productpage`) as string;
  const url = new URL(urlText);
  const count = Number(one(args, 'count', '10'));
  const timeoutMs = Number(one(args, 'timeout-ms', '10000'));
  const via = one(args, 'via');
  const headers = headerArgs(args);
  const agent = new http.Agent({ keepAlive: true });
  const s: CallSummary = {
    url: urlText,
    headers,
    count,
    ok: 0,
    errors: 0,
    byVersion: {},
    byStars: {},
    ratingsUnavailable: 0,
    errorsByMessage: {},
    latencyMs: [],
  };
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    try {
      const page = (await getJson(url.hostname, url.pathname, headers, {
        ...(via ? { via } : {}),
        timeoutMs,
        agent,
      })) as unknown as ProductPage;
      const r = page.reviews;
      if (!r) throw new Error(page.reviewsError ?? 'no reviews on the page');
      s.ok++;
      s.byVersion[r.version] = (s.byVersion[r.version] ?? 0) + 1;
      const stars = r.stars ?? 'none';
      s.byStars[stars] = (s.byStars[stars] ?? 0) + 1;
      if (r.ratingsError) s.ratingsUnavailable++;
    } catch (err) {
      s.errors++;
      const m = errMessage(err);
      s.errorsByMessage[m] = (s.errorsByMessage[m] ?? 0) + 1;
    }
    s.latencyMs.push(Math.round(performance.now() - t0));
  }
  agent.destroy();
  print(s);
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  const args = parseArgs(rest);
  if (mode === 'serve') return serve(args);
  if (mode === 'call') return callMode(args);
  throw new Error(`mode ${JSON.stringify(mode)}: want serve or call`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`bookinfo-apps: ${errMessage(err)}\n`);
    process.exit(1);
  });
}

/**
 * The Istio documents the BookInfo demo applies with `sail apply`: Istio's samples/bookinfo
 * `networking/` files (destination-rule-all, virtual-service-all-v1, -reviews-50-v3,
 * -reviews-test-v2, -ratings-test-delay, -ratings-test-abort), plus what a VM mesh needs in
 * place of Kubernetes Services: one ServiceEntry per service (workloadSelector on `app`), and
 * mutual TLS required everywhere (PeerAuthentication STRICT).
 */

/** The namespace every BookInfo workload is in. */
export const NAMESPACE = 'default';
/** The port every service listens on and is called on. */
export const SERVICE_PORT = 9080;
/** The four services, in call order. */
export const SERVICES = ['productpage', 'details', 'reviews', 'ratings'] as const;
export type Service = (typeof SERVICES)[number];

/** A config document as `sail apply` takes it. */
export type Doc = Record<string, unknown>;

/** `reviews.default.svc.cluster.local` */
export const fqdn = (svc: string) => `${svc}.${NAMESPACE}.svc.cluster.local`;

const meta = (name: string) => ({ name, namespace: NAMESPACE });

/** One ServiceEntry per service: host, a VIP (`vips[svc]`), port 9080 http, its workloads by label. */
export function serviceEntries(vips: Readonly<Record<Service, string>>): Doc[] {
  return SERVICES.map(svc => ({
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: meta(svc),
    spec: {
      hosts: [fqdn(svc)],
      addresses: [vips[svc]],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: SERVICE_PORT, name: 'http', protocol: 'HTTP' }],
      workloadSelector: { labels: { app: svc } },
    },
  }));
}

/** Mutual TLS required for every workload in the namespace. */
export const strictMtls: Doc = {
  apiVersion: 'security.istio.io/v1beta1',
  kind: 'PeerAuthentication',
  metadata: meta('default'),
  spec: { mtls: { mode: 'STRICT' } },
};

/** Istio's destination-rule-all.yaml: subsets by the `version` label. */
export function destinationRules(): Doc[] {
  const subsets: Record<Service, string[]> = {
    productpage: ['v1'],
    details: ['v1'],
    reviews: ['v1', 'v2', 'v3'],
    ratings: ['v1'],
  };
  return SERVICES.map(svc => ({
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'DestinationRule',
    metadata: meta(svc),
    spec: {
      host: fqdn(svc),
      subsets: subsets[svc].map(v => ({ name: v, labels: { version: v } })),
    },
  }));
}

const to = (svc: Service, subset: string, weight?: number) => ({
  destination: { host: fqdn(svc), subset },
  ...(weight !== undefined ? { weight } : {}),
});

const virtualService = (svc: Service, http: unknown[]): Doc => ({
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'VirtualService',
  metadata: meta(svc),
  spec: { hosts: [fqdn(svc)], http },
});

const jason = [{ headers: { 'end-user': { exact: 'jason' } } }];

/** virtual-service-all-v1.yaml: every service to its v1. */
export function allV1(): Doc[] {
  return SERVICES.map(svc => virtualService(svc, [{ route: [to(svc, 'v1')] }]));
}

/** virtual-service-reviews-50-v3.yaml: reviews split 50/50 between v1 and v3. */
export function reviews50v3(): Doc {
  return virtualService('reviews', [{ route: [to('reviews', 'v1', 50), to('reviews', 'v3', 50)] }]);
}

/** virtual-service-reviews-test-v2.yaml: end-user jason → reviews v2, everyone else → v1. */
export function reviewsJasonV2(): Doc {
  return virtualService('reviews', [
    { match: jason, route: [to('reviews', 'v2')] },
    { route: [to('reviews', 'v1')] },
  ]);
}

/** virtual-service-ratings-test-delay.yaml, with a 2 s delay (Istio's is 7 s) for jason. */
export function ratingsDelayForJason(delaySeconds: number): Doc {
  return virtualService('ratings', [
    {
      match: jason,
      fault: { delay: { percentage: { value: 100 }, fixedDelay: `${delaySeconds}s` } },
      route: [to('ratings', 'v1')],
    },
    { route: [to('ratings', 'v1')] },
  ]);
}

/** virtual-service-ratings-test-abort.yaml: ratings answers HTTP 500 to jason's requests. */
export function ratingsAbortForJason(): Doc {
  return virtualService('ratings', [
    {
      match: jason,
      fault: { abort: { percentage: { value: 100 }, httpStatus: 500 } },
      route: [to('ratings', 'v1')],
    },
    { route: [to('ratings', 'v1')] },
  ]);
}

/** A promise-based CertificateAuthority client for tests. */
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadCaProto, type CreateCertificateResponse__Output } from '../../api';
import { clientCredentials } from '../../common/grpc';
import {
  createCsr,
  generateKey,
  type KeyAlgorithm,
  privateKeyToPem,
  toPem,
} from '../../common/pki';

export interface TestCaClientOptions {
  address: string;
  rootsPem: string;
  trustDomain?: string;
  identity?: { certChainPem: string; keyPem: string };
}

export class TestCaClient {
  private readonly client: InstanceType<
    ReturnType<typeof loadCaProto>['sail']['ca']['v1']['CertificateAuthority']
  >;

  constructor(opts: TestCaClientOptions) {
    const Ctor = loadCaProto().sail.ca.v1.CertificateAuthority;
    const td = opts.trustDomain ?? 'cluster.local';
    this.client = new Ctor(
      opts.address,
      clientCredentials(
        opts.rootsPem,
        `spiffe://${td}/ns/sail-system/sa/sail-control-plane`,
        opts.identity,
      ),
    );
  }

  create(
    req: { csr: string; validitySeconds?: number; spiffeId?: string; node?: string },
    token?: string,
  ): Promise<CreateCertificateResponse__Output> {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve, reject) => {
      this.client.CreateCertificate(
        {
          csr: req.csr,
          validitySeconds: req.validitySeconds ?? 0,
          spiffeId: req.spiffeId ?? '',
          node: req.node ?? '',
        },
        md,
        { deadline: Date.now() + 10_000 },
        (err, res) => (err ? reject(err) : resolve(res as CreateCertificateResponse__Output)),
      );
    });
  }

  trustBundle(): Promise<{ rootCerts: string[]; trustDomain: string }> {
    return new Promise((resolve, reject) => {
      this.client.GetTrustBundle({}, { deadline: Date.now() + 10_000 }, (err, res) =>
        err ? reject(err) : resolve(res as { rootCerts: string[]; trustDomain: string }),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** A fresh key and a CSR asking for `uri` (or no SAN). */
export async function makeCsr(
  uri?: string,
  alg: KeyAlgorithm = 'ec-p256',
): Promise<{ key: crypto.KeyObject; keyPem: string; csrPem: string }> {
  const key = await generateKey(alg);
  const csr = createCsr(key, [['2.5.4.10', 'test']], uri ? { uris: [uri] } : {});
  return { key, keyPem: privateKeyToPem(key), csrPem: toPem('CERTIFICATE REQUEST', csr) };
}

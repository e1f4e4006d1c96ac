import { InvalidInputError, SailError } from '../common/errors';
import * as errors from './errors';

describe('node agent errors', () => {
  it('has unique AGENT_ codes', () => {
    expect(new Set(errors.AGENT_ERROR_CODES).size).toBe(errors.AGENT_ERROR_CODES.length);
    for (const code of errors.AGENT_ERROR_CODES) expect(code).toMatch(/^AGENT_[A-Z_]+$/);
  });

  it.each([
    new errors.CertStoreError('AGENT_CERT_EXPIRED', 'x'),
    new errors.RootCertError('x'),
    new errors.NoCredentialsError('x'),
    new errors.CaRequestError('CreateCertificate', 14, undefined, 'x'),
    new errors.CaResponseInvalidError('x'),
    new errors.FingerprintMismatchError('x'),
    new errors.StartAbortedError(),
    new errors.JoinConfigExistsError('/etc/sail/node-agent.yaml'),
  ])('$name carries a registered code', err => {
    expect(err).toBeInstanceOf(SailError);
    expect(err.name).toBe(err.constructor.name);
    expect(errors.AGENT_ERROR_CODES).toContain(err.code);
  });

  it('tells refusals from transient CA failures', () => {
    expect(new errors.CaRequestError('m', 7, 'CA_TOKEN_USED', 'x').refused).toBe(true); // PERMISSION_DENIED
    expect(new errors.CaRequestError('m', 16, undefined, 'x').refused).toBe(true); // UNAUTHENTICATED
    expect(new errors.CaRequestError('m', 14, undefined, 'x').refused).toBe(false); // UNAVAILABLE
    expect(new errors.CaRequestError('m', 8, undefined, 'x').refused).toBe(false); // RESOURCE_EXHAUSTED
  });

  it('makes an existing config a usage error (exit 2)', () => {
    expect(new errors.JoinConfigExistsError('f')).toBeInstanceOf(InvalidInputError);
  });
});

import { newRequestId } from './request-id';

describe('newRequestId', () => {
  it('makes version 4 UUIDs, distinct across refills of its random bytes', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newRequestId();
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      seen.add(id);
    }
    expect(seen.size).toBe(1000);
  });

  it('uses every hex digit in every free position', () => {
    // 4,000 ids: a digit missing from a position by chance has probability below 1e-100.
    const digits = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 4000; i++) {
      const id = newRequestId();
      for (let p = 0; p < 36; p++) digits[p]?.add(id[p] as string);
    }
    for (let p = 0; p < 36; p++) {
      const n = digits[p]?.size;
      if ([8, 13, 18, 23].includes(p)) expect(n).toBe(1);
      else if (p === 14) expect(n).toBe(1);
      else if (p === 19) expect(n).toBe(4);
      else expect(n).toBe(16);
    }
  });
});

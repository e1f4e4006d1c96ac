/** How the CLI turns errors into messages and exit codes: 2 for bad input, 1 for failures. */
import { ConfigError, InvalidInputError, getErrorMessage } from '../common/errors';

/** Exit codes (DESIGN §3.1). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** True for errors that mean "the input was wrong" (exit 2). */
export function isUsageError(err: unknown): boolean {
  return err instanceof InvalidInputError || err instanceof ConfigError;
}

/** Prints `sail: message` to stderr and sets the exit code. */
export function reportCliError(err: unknown): void {
  process.stderr.write(`sail: ${getErrorMessage(err)}\n`);
  process.exitCode = isUsageError(err) ? EXIT_USAGE : EXIT_FAILURE;
}

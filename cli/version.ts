/** The version printed by `sail version`, from package.json. */
import pkg from '../package.json';

export const SAIL_VERSION: string = pkg.version;

// Default locations on a Linux host; every one can be overridden on the command line.
export const DEFAULT_STATE_DIR = '/var/lib/weft';
export const DEFAULT_SOCKET = '/run/weft/weftd.sock';
export const DEFAULT_HELPER_SOCKET = '/run/weft-helper/helper.sock';

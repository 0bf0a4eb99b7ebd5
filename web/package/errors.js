// The errors the package throws: each an Error subclass whose message is the one the CLI gives
// for the same failure (the library's own words, from the same Rust code).

/** Any failure of webqlora; `operation` names what failed ('open', 'train', 'export', ...). */
export class WebQloraError extends Error {
  constructor(message, operation, options) {
    super(message, options);
    this.name = 'WebQloraError';
    this.operation = operation;
  }
}

/** The GPU device was lost (a driver reset, another tab, `GPUDevice.destroy()`). */
export class DeviceLostError extends WebQloraError {
  constructor(message, operation, options) {
    super(message, operation, options);
    this.name = 'DeviceLostError';
  }
}

/** Settings that are not what the library takes: an unknown key, a wrong type. */
export class SettingsError extends WebQloraError {
  constructor(message, key) {
    super(message, 'settings');
    this.name = 'SettingsError';
    this.key = key;
  }
}

/** A download that failed: the URL, and the HTTP status when the server answered. */
export class DownloadError extends WebQloraError {
  constructor(message, url, status) {
    super(message, 'download');
    this.name = 'DownloadError';
    this.url = url;
    this.status = status;
  }
}

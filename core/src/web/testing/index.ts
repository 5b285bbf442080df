// The web shell's bridge over a stand-in engine (`@weft/core/web/testing`), for the UI tests and
// the renderer's dev mode. Free of Node APIs: it also runs in a page.
export { DemoApp, type DemoAppOptions } from './demo-app.js';

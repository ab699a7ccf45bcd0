// Hydrogen, unmodified, as a client of the Hearth server running in this tab.
//
// This is hydrogen-view-sdk's full application (RootViewModel/RootView: login, session picker,
// room list, timeline, composer) started the way the SDK documents it. Its homeserver is this
// page's origin: Hearth's service worker answers /_matrix/... here. The SDK's service-worker
// asset path names Hearth's own /sw.js, which speaks the message protocol Hydrogen's page
// expects from its own worker (see docs/media-auth.md), so authenticated media (avatars,
// images, downloads) carries the session's access token.
//
// cargo xtask bundles this file with esbuild into www/hydrogen/main.js and copies the SDK's
// assets beside it.

import { FeatureSet, Platform, RootViewModel, createNavigation, createRouter } from 'hydrogen-view-sdk';

const assetPaths = {
  downloadSandbox: '/hydrogen/assets/download-sandbox.html',
  worker: '/hydrogen/assets/main.js',
  olm: {
    wasm: '/hydrogen/olm/olm.wasm',
    legacyBundle: '/hydrogen/olm/olm_legacy.js',
    wasmBundle: '/hydrogen/olm/olm.js',
  },
  // Hearth's service worker, registered with the same script URL, type and scope as
  // hearth.js registers it, so Hydrogen's register() finds the registration and changes
  // nothing.
  serviceWorker: '/sw.js',
};

async function main() {
  // The server must be up and the service worker in control before Hydrogen's first request.
  await window.hearth.ready;
  const container = document.getElementById('app');
  const config = { defaultHomeServer: location.origin };
  const platform = new Platform({ container, assetPaths, config, options: { development: false } });
  const navigation = createNavigation();
  platform.setNavigation(navigation);
  await platform.init();
  const urlRouter = createRouter({ navigation, history: platform.history });
  urlRouter.attach();
  const features = await FeatureSet.load(platform.settingsStorage);
  const vm = new RootViewModel({ platform, navigation, urlRouter, features });
  await vm.load();
  platform.createAndMountRootView(vm);
}

main().catch((e) => {
  console.error('Hydrogen failed to start', e);
  document.getElementById('app').textContent = `Hydrogen failed to start: ${e?.message ?? e}`;
});

import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { connectBridge } from './bridge/connect.js';
import { boot, createWeftStore, setAppStore } from './store/store.js';
import { App } from './ui/App.js';
import './styles.css';

let linkUp: (up: boolean) => void = () => {};
const bridge = await connectBridge((up) => linkUp(up));
const store = createWeftStore(bridge);
setAppStore(store);
linkUp = (up) => store.getState().dispatch({ type: 'link', link: up ? 'live' : 'lost' });
void boot(store, bridge);

const root = document.getElementById('root');
if (!root) throw new Error('no #root');
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);

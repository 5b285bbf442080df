import type { MenuItemConstructorOptions } from 'electron';
import type { TrayAction, TrayItem } from './tray-menu.js';

/** Turns the pure menu description into Electron's template, wiring clicks to `dispatch`. */
export function toMenuTemplate(
  items: readonly TrayItem[],
  dispatch: (a: TrayAction) => void,
): MenuItemConstructorOptions[] {
  return items.map((it): MenuItemConstructorOptions => {
    if (it.kind === 'separator') return { type: 'separator' };
    const out: MenuItemConstructorOptions = { id: it.id, label: it.label, enabled: it.enabled };
    if (it.type && it.type !== 'normal') {
      out.type = it.type;
      out.checked = it.checked ?? false;
    }
    if (it.accelerator) out.accelerator = it.accelerator;
    if (it.submenu) out.submenu = toMenuTemplate(it.submenu, dispatch);
    const action = it.action;
    if (action) out.click = () => dispatch(action);
    return out;
  });
}

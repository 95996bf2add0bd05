// The two views of the page (annotate pairs, data set) as tabs. The URL's
// hash names the open view (#dataset), so a link or a reload opens it again.
const tabs = [...document.querySelectorAll('[role="tab"]')];

function open(tab, focus = false) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
  }
  if (focus) tab.focus();
  const hash = tab.id === 'tab-dataset' ? '#dataset' : '';
  if (location.hash !== hash) history.replaceState(null, '', hash || location.pathname + location.search);
  document.dispatchEvent(new CustomEvent('main-view', { detail: tab.getAttribute('aria-controls') }));
}

for (const t of tabs) t.addEventListener('click', () => open(t));
// Arrow keys move between tabs (the WAI-ARIA tabs pattern).
document.querySelector('[role="tablist"]').addEventListener('keydown', (e) => {
  const i = tabs.indexOf(e.target);
  if (i < 0 || (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft')) return;
  e.preventDefault();
  open(tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length], true);
});
if (location.hash === '#dataset') open(document.getElementById('tab-dataset'));

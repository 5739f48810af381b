// Sign-in: POST /v1/auth/login sets the HttpOnly session cookie.

import { el } from '../dom.js';
import { api } from '../api.js';
import { busy } from '../ui.js';

export function render({ message, onLoggedIn }) {
  const email = el('input', { type: 'email', name: 'email', id: 'login-email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = el('input', { type: 'password', name: 'password', id: 'login-password', autocomplete: 'current-password', required: true });
  const error = el('p', { class: 'form-error', 'data-testid': 'login-error', role: 'alert', hidden: !message }, message || '');
  const submit = el('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');

  const form = el('form', { class: 'login-form stack', 'data-testid': 'login-form', novalidate: true },
    el('label', { class: 'field', for: 'login-email' }, el('span', { class: 'field-label' }, 'Email'), email),
    el('label', { class: 'field', for: 'login-password' }, el('span', { class: 'field-label' }, 'Password'), password),
    error,
    submit);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    error.textContent = '';
    if (!email.value.trim() || !password.value) {
      error.textContent = 'Enter your email and password.';
      error.hidden = false;
      return;
    }
    try {
      const data = await busy(submit, () => api('/v1/auth/login', {
        method: 'POST', allow401: true, body: { email: email.value.trim(), password: password.value },
      }));
      const user = data && data.user ? data.user : null;
      if (!user) throw new Error('The server answered without a user.');
      // /me adds the organisation's name; the login answer is enough to go on.
      let me = user;
      try {
        me = await api('/v1/auth/me', { allow401: true });
      } catch {
        // keep the login answer
      }
      password.value = '';
      await onLoggedIn(me);
    } catch (err) {
      let text = err.message || 'Sign-in failed.';
      if (err.status === 401) text = 'Invalid email or password.';
      else if (err.status === 429) text = `Too many failed sign-ins. ${err.message}`;
      error.textContent = text;
      error.hidden = false;
      password.focus();
      password.select();
    }
  });

  const page = el('div', { class: 'login-page' },
    el('div', { class: 'login-card' },
      el('div', { class: 'login-brand' },
        el('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'T'),
        el('span', { class: 'brand-name' }, 'TruLayer')),
      el('h1', { class: 'login-title' }, 'Sign in'),
      el('p', { class: 'muted' }, 'LLM observability, on your own infrastructure.'),
      form));
  setTimeout(() => email.focus(), 0);
  return page;
}

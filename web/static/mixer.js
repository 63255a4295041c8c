// The stem mixer (a Telegram Mini App): plays every delivered track of one song in sync, with
// mute, solo and a level per track, previews the tempo, and asks the server to render the mix
// and send it to the chat. Plain browser JavaScript, no build step, nothing from other hosts
// (the server's Content-Security-Policy allows only 'self').
//
// Playback: one <audio> element per track (streamed with HTTP Range requests, never decoded
// whole into memory), each routed through a Web Audio GainNode so a level can go above 0 dB
// (element.volume is the fallback where Web Audio is missing). The first playable track is the
// clock: seeking pauses every element, sets every currentTime, waits for every 'seeked' (and
// enough data), then starts them together; while playing, a corrector run on every animation
// frame re-seeks any element more than DRIFT_S away from the clock, and a track that runs out
// of data ('waiting') makes all of them wait and start again together.
'use strict';

(() => {
  const DRIFT_S = 0.02;
  const FIX_INTERVAL_MS = 300;
  const SEEK_TIMEOUT_MS = 8000;
  const SLOW_LOAD_MS = 30000;

  const TEXTS = {
    en: {
      title: 'Mixer',
      loading: 'Loading the tracks…',
      ready: 'Mute, solo, set levels, then send the mix to the chat.',
      tracks: 'Tracks',
      play: 'Play',
      pause: 'Pause',
      send: 'Send the mix',
      sending: 'Sending…',
      sent: 'Sent: the mix will arrive in the chat in a moment.',
      tempo: 'Tempo',
      pitch: 'Pitch',
      pitchNote: 'The pitch is heard in the mix you send, not here; the tempo plays here too.',
      mute: 'Mute',
      solo: 'Solo',
      level: 'Level',
      seek: 'Position',
      noInitData: 'Open the mixer with the 🎚 Mix button under your tracks in the chat.',
      noMix: 'This address is not a mix. Open it with the 🎚 Mix button in the chat.',
      unauthorized: 'This link has expired. Open the mixer again from the chat.',
      forbidden: 'This mix belongs to another user.',
      notFound: 'This mix does not exist (any more).',
      busy: 'A mix is already being made. It will arrive in the chat; try again after it.',
      badRequest: 'The server refused the settings',
      tooLarge: 'The request is too large.',
      network: 'The server cannot be reached. Check the connection and try again.',
      server: 'Something went wrong on the server',
      noTracks: 'None of the tracks can be played here.',
      trackFailed: 'This track could not be loaded.',
      someFailed: 'Some tracks could not be loaded; the others play.',
      slow: 'The tracks are taking long to load…',
      playFailed: 'The browser did not start playback. Press Play again.',
      semitones: (n) => (Math.abs(n) === 1 ? 'semitone' : 'semitones'),
    },
    ru: {
      title: 'Микшер',
      loading: 'Загружаю дорожки…',
      ready: 'Выключайте, оставляйте соло, меняйте громкость — и отправьте микс в чат.',
      tracks: 'Дорожки',
      play: 'Играть',
      pause: 'Пауза',
      send: 'Отправить микс',
      sending: 'Отправляю…',
      sent: 'Отправлено: микс скоро придёт в чат.',
      tempo: 'Темп',
      pitch: 'Высота тона',
      pitchNote: 'Высота тона будет слышна в отправленном миксе, не здесь; темп слышен и здесь.',
      mute: 'Выключить',
      solo: 'Соло',
      level: 'Громкость',
      seek: 'Позиция',
      noInitData: 'Откройте микшер кнопкой 🎚 Mix под дорожками в чате.',
      noMix: 'По этому адресу нет микса. Откройте его кнопкой 🎚 Mix в чате.',
      unauthorized: 'Ссылка устарела. Откройте микшер из чата ещё раз.',
      forbidden: 'Этот микс принадлежит другому пользователю.',
      notFound: 'Такого микса нет (или уже нет).',
      busy: 'Микс уже готовится и придёт в чат; попробуйте снова после него.',
      badRequest: 'Сервер не принял настройки',
      tooLarge: 'Слишком большой запрос.',
      network: 'Сервер недоступен. Проверьте соединение и попробуйте ещё раз.',
      server: 'Ошибка на сервере',
      noTracks: 'Ни одну дорожку здесь нельзя воспроизвести.',
      trackFailed: 'Эту дорожку не удалось загрузить.',
      someFailed: 'Некоторые дорожки не загрузились; остальные играют.',
      slow: 'Дорожки загружаются долго…',
      playFailed: 'Браузер не начал воспроизведение. Нажмите «Играть» ещё раз.',
      semitones: (n) => ruPlural(Math.abs(n), 'полутон', 'полутона', 'полутонов'),
    },
  };

  const SOURCE_LABELS = {
    en: {
      drums: 'Drums',
      bass: 'Bass',
      vocals: 'Vocals',
      guitar: 'Guitar',
      piano: 'Piano',
      other: 'Other',
      rest: 'Everything else',
      instrumental: 'Instrumental',
      accompaniment: 'Accompaniment',
    },
    ru: {
      drums: 'Ударные',
      bass: 'Бас',
      vocals: 'Вокал',
      guitar: 'Гитара',
      piano: 'Клавишные',
      other: 'Остальное',
      rest: 'Всё остальное',
      instrumental: 'Инструментал',
      accompaniment: 'Аккомпанемент',
    },
  };
  // "no_<source>": the mix without one source (the karaoke-style residual).
  const WITHOUT = {
    en: { prefix: 'No ', forms: {} },
    ru: {
      prefix: 'Без ',
      forms: {
        drums: 'ударных',
        bass: 'баса',
        vocals: 'вокала',
        guitar: 'гитары',
        piano: 'клавишных',
        other: 'остального',
      },
    },
  };

  function ruPlural(n, one, few, many) {
    const mod10 = n % 10;
    const mod100 = n % 100;
    if (mod10 === 1 && mod100 !== 11) return one;
    if (mod10 >= 2 && mod10 <= 4 && (mod100 < 12 || mod100 > 14)) return few;
    return many;
  }

  let lang = 'en';

  function t(key) {
    const value = TEXTS[lang][key];
    return value === undefined ? TEXTS.en[key] : value;
  }

  function trackLabel(name) {
    const key = String(name).toLowerCase().replace(/[\s-]+/g, '_');
    const labels = SOURCE_LABELS[lang];
    if (Object.prototype.hasOwnProperty.call(labels, key)) return labels[key];
    const without = key.match(/^(?:no|without)_(.+)$/);
    if (without && Object.prototype.hasOwnProperty.call(SOURCE_LABELS.en, without[1])) {
      const rule = WITHOUT[lang];
      const word = rule.forms[without[1]] || labels[without[1]].toLowerCase();
      return rule.prefix + word;
    }
    return String(name);
  }

  // ---- Telegram: init data, theme, the ready/expand events --------------------------------

  const webApp = window.Telegram && window.Telegram.WebApp ? window.Telegram.WebApp : null;

  function fragmentParams() {
    // URLSearchParams decodes each value once, as Telegram's own script does.
    return new URLSearchParams(window.location.hash.replace(/^#/, ''));
  }

  function readInitData() {
    if (webApp && typeof webApp.initData === 'string' && webApp.initData) return webApp.initData;
    return fragmentParams().get('tgWebAppData') || '';
  }

  function initDataLanguage(initData) {
    try {
      const user = JSON.parse(new URLSearchParams(initData).get('user') || '{}');
      return typeof user.language_code === 'string' ? user.language_code : '';
    } catch (_err) {
      return '';
    }
  }

  function readThemeParams() {
    if (webApp && webApp.themeParams && Object.keys(webApp.themeParams).length) {
      return webApp.themeParams;
    }
    const raw = fragmentParams().get('tgWebAppThemeParams');
    if (!raw) return null;
    try {
      const parsed = JSON.parse(raw);
      return parsed && typeof parsed === 'object' ? parsed : null;
    } catch (_err) {
      return null;
    }
  }

  const THEME_KEYS = [
    'bg_color',
    'text_color',
    'hint_color',
    'link_color',
    'button_color',
    'button_text_color',
    'secondary_bg_color',
    'destructive_text_color',
  ];

  function luminance(hex) {
    let h = hex.replace('#', '');
    if (h.length === 3) h = h.replace(/(.)/g, '$1$1');
    const [r, g, b] = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16) / 255);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  function applyTheme(params) {
    if (!params) return;
    const root = document.documentElement;
    let applied = 0;
    for (const key of THEME_KEYS) {
      const value = params[key];
      if (typeof value !== 'string' || !/^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i.test(value)) continue;
      root.style.setProperty(`--tg-theme-${key.replace(/_/g, '-')}`, value);
      applied += 1;
    }
    if (applied && typeof params.bg_color === 'string' && params.bg_color[0] === '#') {
      const dark = luminance(params.bg_color) < 0.5;
      root.style.colorScheme = dark ? 'dark' : 'light';
      root.dataset.theme = dark ? 'dark' : 'light';
    }
  }

  function telegramEvent(type, data) {
    // Telegram's own script is not loaded (no other hosts): speak its small event protocol.
    try {
      if (window.TelegramWebviewProxy && window.TelegramWebviewProxy.postEvent) {
        window.TelegramWebviewProxy.postEvent(type, JSON.stringify(data || {}));
      } else if (window.parent && window.parent !== window) {
        window.parent.postMessage(JSON.stringify({ eventType: type, eventData: data || {} }), '*');
      }
    } catch (_err) {
      // Outside Telegram there is nobody to tell.
    }
  }

  function telegramReady() {
    if (webApp) {
      try {
        webApp.ready();
        webApp.expand();
      } catch (_err) {
        // An old client: the page works without.
      }
    } else {
      telegramEvent('web_app_ready');
      telegramEvent('web_app_expand');
    }
  }

  function onTelegramEvent(type, data) {
    if (type === 'theme_changed' && data && data.theme_params) {
      applyTheme(data.theme_params);
      redrawAll();
    }
  }

  function listenToTelegram() {
    // Telegram's apps call window.Telegram.WebView.receiveEvent(type, data); Telegram Web
    // posts {eventType, eventData} from the parent frame. Only the theme matters here.
    if (webApp) {
      if (webApp.onEvent) webApp.onEvent('themeChanged', () => onThemeChangedFromWebApp());
      return;
    }
    window.Telegram = window.Telegram || {};
    if (!window.Telegram.WebView) {
      window.Telegram.WebView = { receiveEvent: onTelegramEvent };
    }
    window.addEventListener('message', (event) => {
      if (event.source !== window.parent || window.parent === window) return;
      try {
        const message = JSON.parse(event.data);
        if (message && typeof message.eventType === 'string') {
          onTelegramEvent(message.eventType, message.eventData);
        }
      } catch (_err) {
        // Not Telegram's.
      }
    });
  }

  function onThemeChangedFromWebApp() {
    applyTheme(webApp.themeParams);
    redrawAll();
  }

  // ---- page state and texts ---------------------------------------------------------------

  const byId = (id) => document.getElementById(id);
  const ui = {
    song: byId('song'),
    status: byId('status'),
    banner: byId('banner'),
    tracks: byId('tracks'),
    template: byId('track-template'),
    tempo: byId('tempo'),
    tempoValue: byId('tempo-value'),
    pitch: byId('pitch'),
    pitchValue: byId('pitch-value'),
    seek: byId('seek'),
    time: byId('time'),
    duration: byId('duration'),
    play: byId('play'),
    playText: byId('play-text'),
    send: byId('send'),
    sendStatus: byId('send-status'),
  };

  function setState(state) {
    document.body.dataset.state = state;
  }

  function setStatus(key) {
    ui.status.dataset.text = key;
    ui.status.textContent = key ? t(key) : '';
  }

  function showBanner(message) {
    ui.banner.textContent = message;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
    ui.banner.textContent = '';
  }

  function fail(message) {
    showBanner(message);
    setState('error');
  }

  function applyTexts() {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll('[data-text]')) {
      if (node.dataset.text) node.textContent = t(node.dataset.text);
    }
    ui.tracks.setAttribute('aria-label', t('tracks'));
    ui.seek.setAttribute('aria-label', t('seek'));
    document.title = song ? `${song} · ${t('title')}` : t('title');
    showTempo();
    showPitch();
    updatePlayButton();
  }

  // ---- the API ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  let initData = '';

  async function api(method, path, body) {
    const headers = { Authorization: `tma ${initData}`, Accept: 'application/json' };
    const options = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (_err) {
      throw new ApiError(0, null);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_err) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.error === 'string' ? data.error : null;
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  function errorText(err) {
    if (!(err instanceof ApiError)) return `${t('server')}: ${err && err.message}`;
    switch (err.status) {
      case 0:
        return t('network');
      case 401:
        return t('unauthorized');
      case 403:
        return t('forbidden');
      case 404:
        return t('notFound');
      case 409:
        return t('busy');
      case 413:
        return t('tooLarge');
      case 400:
        return err.detail ? `${t('badRequest')}: ${err.detail}` : `${t('badRequest')}.`;
      default:
        return `${t('server')} (${err.status}).`;
    }
  }

  // ---- tracks and the audio graph -----------------------------------------------------------

  let mixId = '';
  let song = '';
  let duration = 0;
  const tracks = []; // every track of the mix, in delivery order
  let playable = []; // those with audio, the first one the clock
  let audioContext = null;
  let graphFailed = false;

  function anySolo() {
    return tracks.some((track) => track.solo && track.audio);
  }

  function gainOf(track) {
    if (track.muted) return 0;
    if (anySolo() && !track.solo) return 0;
    return 10 ** (track.db / 20);
  }

  function applyGains() {
    // data-gain on each row (the linear gain heard now) and body[data-audio] (how levels are
    // applied: 'webaudio' gain nodes, 'volume' without Web Audio, 'pending' before Play) say
    // what the preview does, for tests and for debugging on a phone.
    document.body.dataset.audio = audioContext ? 'webaudio' : graphFailed ? 'volume' : 'pending';
    for (const track of tracks) {
      const gain = track.audio ? gainOf(track) : 0;
      track.row.classList.toggle('silent', gain === 0);
      track.row.dataset.gain = gain.toFixed(4);
      if (!track.audio) continue;
      if (track.gainNode) {
        track.audio.volume = 1;
        track.gainNode.gain.setTargetAtTime(gain, audioContext.currentTime, 0.01);
      } else {
        track.audio.volume = Math.min(1, gain);
      }
    }
  }

  function ensureGraph() {
    // Made on the first Play (a user gesture, so the context may start) and kept.
    if (audioContext || graphFailed) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) {
      graphFailed = true;
      return;
    }
    try {
      audioContext = new Context({ latencyHint: 'playback' });
      for (const track of playable) {
        track.gainNode = audioContext.createGain();
        audioContext.createMediaElementSource(track.audio).connect(track.gainNode);
        track.gainNode.connect(audioContext.destination);
      }
    } catch (_err) {
      // Levels then go through element.volume (no boost above 0 dB).
      graphFailed = true;
      for (const track of playable) track.gainNode = null;
      audioContext = null;
    }
    applyGains();
  }

  function buildTrack(info) {
    const row = ui.template.content.firstElementChild.cloneNode(true);
    const label = trackLabel(info.name);
    const track = {
      name: String(info.name),
      label,
      row,
      peaks: Array.isArray(info.peaks) ? info.peaks.map(Number) : null,
      audio: null,
      gainNode: null,
      db: 0,
      muted: false,
      solo: false,
      meta: false,
      ready: false,
      lastFix: 0,
      drawnAt: -1,
      mute: row.querySelector('[data-action=mute]'),
      soloButton: row.querySelector('[data-action=solo]'),
      level: row.querySelector('[data-action=level]'),
      levelValue: row.querySelector('.level-value'),
      canvas: row.querySelector('canvas'),
      error: row.querySelector('.track-error'),
    };
    row.dataset.track = track.name;
    row.setAttribute('aria-label', label);
    row.querySelector('.name').textContent = label;
    track.mute.setAttribute('aria-label', `${t('mute')}: ${label}`);
    track.mute.title = t('mute');
    track.soloButton.setAttribute('aria-label', `${t('solo')}: ${label}`);
    track.soloButton.title = t('solo');
    track.level.setAttribute('aria-label', `${t('level')}: ${label}`);
    showLevel(track);

    if (typeof info.url === 'string' && info.url) {
      const audio = document.createElement('audio');
      audio.preload = 'auto';
      audio.dataset.audio = track.name;
      audio.preservesPitch = true;
      audio.addEventListener('canplay', () => trackCanPlay(track));
      audio.addEventListener('error', () => trackFailed(track));
      audio.addEventListener('waiting', () => trackWaiting());
      audio.addEventListener('loadedmetadata', () => {
        learnDuration(audio.duration);
        track.meta = true;
        maybeEnableControls();
      });
      audio.src = info.url;
      row.appendChild(audio);
      track.audio = audio;
    } else {
      row.classList.add('unavailable');
      track.error.textContent = info.error ? String(info.error) : t('trackFailed');
      track.error.hidden = false;
      for (const control of [track.mute, track.soloButton, track.level]) control.disabled = true;
    }

    track.mute.addEventListener('click', () => {
      track.muted = !track.muted;
      track.mute.setAttribute('aria-pressed', String(track.muted));
      applyGains();
    });
    track.soloButton.addEventListener('click', () => {
      track.solo = !track.solo;
      track.soloButton.setAttribute('aria-pressed', String(track.solo));
      applyGains();
    });
    track.level.addEventListener('input', () => {
      track.db = Number(track.level.value);
      showLevel(track);
      applyGains();
    });
    track.canvas.addEventListener('click', (event) => {
      if (!playable.length || !duration) return;
      const box = track.canvas.getBoundingClientRect();
      const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      seekTo(fraction * duration);
    });
    ui.tracks.appendChild(row);
    return track;
  }

  function showFill(input) {
    // How far the slider's track is filled (CSS reads --fill; a CSSOM write, allowed by the CSP).
    const min = Number(input.min);
    const max = Number(input.max);
    const fraction = max > min ? (Number(input.value) - min) / (max - min) : 0;
    input.style.setProperty('--fill', `${(Math.min(1, Math.max(0, fraction)) * 100).toFixed(2)}%`);
  }

  function showLevel(track) {
    showFill(track.level);
    const db = track.db;
    const sign = db > 0 ? '+' : db < 0 ? '−' : '';
    track.levelValue.textContent = `${sign}${Math.abs(db).toFixed(1)} dB`;
  }

  function learnDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds <= 0) return;
    if (!duration || Math.abs(duration - seconds) > 0.5) duration = seconds;
    ui.seek.max = String(duration);
    showFill(ui.seek);
    ui.duration.textContent = formatTime(duration);
  }

  function trackCanPlay(track) {
    if (track.ready) return;
    track.ready = true;
    maybeReady();
  }

  let slowTimer = 0;

  function enableControls() {
    window.clearTimeout(slowTimer);
    ui.play.disabled = false;
    ui.seek.disabled = false;
    ui.send.disabled = false;
  }

  function maybeEnableControls() {
    // Every track's length is known: the controls work. Browsers that load media only after
    // a gesture (iOS) never reach 'canplay' before Play is pressed, so Play must not wait
    // for 'ready'; seeking and sending need no buffered audio either.
    if (playable.length && playable.every((track) => track.meta || track.ready)) enableControls();
  }

  function maybeReady() {
    if (document.body.dataset.state !== 'loading') return;
    if (!playable.length || !playable.every((track) => track.ready)) return;
    enableControls();
    setStatus('ready');
    hideBanner();
    setState('ready');
  }

  function trackFailed(track) {
    if (!track.audio) return;
    track.audio.pause();
    track.row.classList.add('unavailable');
    track.error.textContent = t('trackFailed');
    track.error.hidden = false;
    playable = playable.filter((other) => other !== track);
    if (!playable.length) {
      ui.play.disabled = true;
      fail(t('noTracks'));
      return;
    }
    // The others stay usable, but the page says that not every track can play.
    ui.play.disabled = false;
    ui.seek.disabled = false;
    ui.send.disabled = false;
    fail(t('someFailed'));
  }

  // ---- transport: play, pause, seek, keep in sync --------------------------------------------

  let playing = false;
  let busy = 0; // a seek or start under way: no drift correction, no 'waiting' handling
  let seekGeneration = 0;
  let frameRequested = false;
  let dragging = false;

  const clock = () => playable[0].audio;

  function formatTime(seconds) {
    const whole = Math.max(0, Math.floor(seconds || 0));
    return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
  }

  function updatePlayButton() {
    ui.play.setAttribute('aria-pressed', String(playing));
    ui.play.classList.toggle('playing', playing);
    ui.playText.textContent = playing ? t('pause') : t('play');
    ui.playText.dataset.text = playing ? 'pause' : 'play';
  }

  function whenReadyAt(audio, seconds) {
    // Resolves once the element has seeked to `seconds` and has data to play from there.
    return new Promise((resolve) => {
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        window.clearTimeout(timer);
        audio.removeEventListener('seeked', onSeeked);
        audio.removeEventListener('canplay', onCanPlay);
        audio.removeEventListener('error', finish);
        resolve();
      };
      const onCanPlay = () => {
        if (!audio.seeking) finish();
      };
      const onSeeked = () => {
        if (audio.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA) finish();
      };
      const timer = window.setTimeout(finish, SEEK_TIMEOUT_MS);
      audio.addEventListener('seeked', onSeeked);
      audio.addEventListener('canplay', onCanPlay);
      audio.addEventListener('error', finish);
      audio.currentTime = seconds;
    });
  }

  function aligned(seconds) {
    return playable.every(
      (track) =>
        !track.audio.seeking &&
        track.audio.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA &&
        Math.abs(track.audio.currentTime - seconds) < 0.002,
    );
  }

  function startAll() {
    const starts = playable.map((track) => track.audio.play());
    requestFrame();
    return Promise.all(starts).catch((err) => {
      if (err && err.name === 'AbortError') return; // a pause or seek came first
      pauseAll();
      showBanner(t('playFailed'));
    });
  }

  async function play() {
    if (!playable.length) return;
    ensureGraph();
    if (audioContext && audioContext.state === 'suspended') {
      audioContext.resume().catch(() => showBanner(t('playFailed')));
    }
    playing = true;
    updatePlayButton();
    let from = clock().currentTime;
    if (duration && from >= duration - 0.05) from = 0;
    if (aligned(from)) {
      // The usual case (every seek and pause leaves them aligned): start within the gesture.
      await startAll();
      return;
    }
    if (playable.some((track) => track.audio.readyState < HTMLMediaElement.HAVE_FUTURE_DATA)) {
      // A browser that loads media only on a gesture (iOS) needs play() inside this one;
      // seekTo pauses them again at once and starts them together when all have data.
      for (const track of playable) track.audio.play().catch(() => undefined);
    }
    await seekTo(from);
  }

  function pauseAll() {
    playing = false;
    seekGeneration += 1;
    for (const track of playable) track.audio.pause();
    updatePlayButton();
    // Leave every element where the clock stopped, so the next Play starts them together.
    const at = clock().currentTime;
    for (const track of playable.slice(1)) {
      if (Math.abs(track.audio.currentTime - at) > 0.001) track.audio.currentTime = at;
    }
    showPosition(at);
  }

  async function seekTo(seconds) {
    if (!playable.length) return;
    const generation = ++seekGeneration;
    const target = Math.max(0, duration ? Math.min(seconds, duration) : seconds);
    busy += 1;
    try {
      for (const track of playable) track.audio.pause();
      showPosition(target);
      await Promise.all(playable.map((track) => whenReadyAt(track.audio, target)));
    } finally {
      busy -= 1;
    }
    if (generation !== seekGeneration || !playing) return;
    await startAll();
  }

  function trackWaiting() {
    // One track ran out of data: stop them all where the clock is and start again together.
    if (!playing || busy || !playable.length) return;
    seekTo(clock().currentTime);
  }

  function correctDrift(now) {
    if (busy) return;
    const reference = clock();
    if (reference.paused || reference.seeking) return;
    const at = reference.currentTime;
    for (const track of playable.slice(1)) {
      const audio = track.audio;
      if (audio.paused || audio.seeking || audio.ended) continue;
      if (Math.abs(audio.currentTime - at) > DRIFT_S && now - track.lastFix > FIX_INTERVAL_MS) {
        track.lastFix = now;
        audio.currentTime = reference.currentTime;
      }
    }
  }

  function showPosition(seconds) {
    if (!dragging) {
      ui.seek.value = String(seconds);
      showFill(ui.seek);
    }
    ui.time.textContent = formatTime(seconds);
    for (const track of tracks) drawWave(track, seconds);
  }

  function requestFrame() {
    if (frameRequested) return;
    frameRequested = true;
    window.requestAnimationFrame(onFrame);
  }

  function onFrame(now) {
    frameRequested = false;
    if (!playable.length) return;
    const reference = clock();
    if (playing && reference.ended) {
      pauseAll();
      return;
    }
    correctDrift(now);
    if (!busy) showPosition(reference.currentTime);
    if (playing) requestFrame();
  }

  // ---- waveforms ------------------------------------------------------------------------------

  function resolveColour(variable, fallback) {
    // A custom property holds the declared text (maybe color-mix(...)); a probe element's
    // computed colour is what a canvas understands.
    const probe = document.createElement('span');
    probe.hidden = true;
    probe.style.color = `var(${variable}, ${fallback})`;
    document.body.appendChild(probe);
    const colour = window.getComputedStyle(probe).color;
    probe.remove();
    return colour || fallback;
  }

  function colours() {
    return { played: resolveColour('--accent', '#2481cc'), rest: resolveColour('--wave', '#9aa4ae') };
  }

  let palette = null;

  function drawWave(track, seconds, force) {
    const canvas = track.canvas;
    const width = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1));
    const height = Math.round(canvas.clientHeight * (window.devicePixelRatio || 1));
    if (!width || !height) return;
    const playedX = duration ? Math.round((seconds / duration) * width) : 0;
    if (!force && canvas.width === width && canvas.height === height && track.drawnAt === playedX) {
      return;
    }
    track.drawnAt = playedX;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    if (!palette) palette = colours();
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, width, height);
    const peaks = track.peaks;
    const middle = height / 2;
    const bar = Math.max(1, Math.round(window.devicePixelRatio || 1));
    for (let x = 0; x < width; x += bar * 2) {
      let peak = 0;
      if (peaks && peaks.length) {
        const from = Math.floor((x / width) * peaks.length);
        const to = Math.max(from + 1, Math.floor(((x + bar * 2) / width) * peaks.length));
        for (let i = from; i < to && i < peaks.length; i += 1) {
          const value = Math.abs(peaks[i]);
          if (value > peak) peak = value;
        }
      }
      // Square root: quiet passages stay visible, loud ones do not flatten the rest.
      const half = Math.max(bar / 2, Math.sqrt(Math.min(1, peak)) * (middle - 1));
      g.fillStyle = x < playedX ? palette.played : palette.rest;
      g.fillRect(x, middle - half, bar, half * 2);
    }
  }

  function redrawAll() {
    palette = null;
    const at = playable.length ? clock().currentTime : 0;
    for (const track of tracks) drawWave(track, at, true);
  }

  // ---- tempo, pitch, send ---------------------------------------------------------------------

  function showTempo() {
    showFill(ui.tempo);
    ui.tempoValue.textContent = `${ui.tempo.value} %`;
  }

  function showPitch() {
    showFill(ui.pitch);
    const n = Number(ui.pitch.value);
    const sign = n > 0 ? '+' : n < 0 ? '−' : '';
    ui.pitchValue.textContent = `${sign}${Math.abs(n)} ${TEXTS[lang].semitones(n)}`;
  }

  function applyTempo() {
    const rate = Number(ui.tempo.value) / 100;
    for (const track of playable) {
      const audio = track.audio;
      audio.preservesPitch = true;
      if ('webkitPreservesPitch' in audio) audio.webkitPreservesPitch = true;
      if ('mozPreservesPitch' in audio) audio.mozPreservesPitch = true;
      audio.defaultPlaybackRate = rate;
      audio.playbackRate = rate;
    }
    showTempo();
  }

  function renderRequest() {
    const request = {
      levels_db: {},
      muted: [],
      solo: [],
      tempo: Number(ui.tempo.value) / 100,
      pitch_semitones: Number(ui.pitch.value),
    };
    for (const track of playable) {
      request.levels_db[track.name] = track.db;
      if (track.muted) request.muted.push(track.name);
      if (track.solo) request.solo.push(track.name);
    }
    return request;
  }

  function showSendStatus(message, failed) {
    // Beside the Send button, where the user is looking (the banner is at the top).
    ui.sendStatus.textContent = message;
    ui.sendStatus.classList.toggle('failed', Boolean(failed));
    ui.sendStatus.hidden = !message;
  }

  async function send() {
    ui.send.disabled = true;
    setStatus('sending');
    showSendStatus(t('sending'));
    try {
      await api('POST', `/api/mixes/${encodeURIComponent(mixId)}/render`, renderRequest());
      hideBanner();
      setStatus('sent');
      showSendStatus(t('sent'));
      setState('sent');
    } catch (err) {
      setStatus('');
      showSendStatus(errorText(err), true);
      fail(errorText(err));
    } finally {
      ui.send.disabled = false;
    }
  }

  // ---- start ----------------------------------------------------------------------------------

  function wireControls() {
    ui.play.addEventListener('click', () => {
      if (playing) pauseAll();
      else play();
    });
    ui.tempo.addEventListener('input', applyTempo);
    ui.pitch.addEventListener('input', showPitch);
    ui.seek.addEventListener('input', () => {
      dragging = true;
      showFill(ui.seek);
      ui.time.textContent = formatTime(Number(ui.seek.value));
    });
    ui.seek.addEventListener('change', () => {
      dragging = false;
      seekTo(Number(ui.seek.value));
    });
    ui.send.addEventListener('click', send);
    window.addEventListener('resize', redrawAll);
    if (window.matchMedia) {
      const scheme = window.matchMedia('(prefers-color-scheme: dark)');
      if (scheme.addEventListener) scheme.addEventListener('change', redrawAll);
    }
  }

  async function start() {
    setState('loading');
    applyTheme(readThemeParams());
    listenToTelegram();
    telegramReady();
    wireControls();
    initData = readInitData();
    if (/^ru\b/i.test(initDataLanguage(initData))) lang = 'ru';
    applyTexts();
    const match = window.location.pathname.match(/\/mix\/([^/]+)\/?$/);
    if (!match) {
      fail(t('noMix'));
      return;
    }
    mixId = decodeURIComponent(match[1]);
    if (!initData) {
      fail(t('noInitData'));
      return;
    }
    let mix;
    try {
      mix = await api('GET', `/api/mixes/${encodeURIComponent(mixId)}`);
    } catch (err) {
      setStatus('');
      fail(errorText(err));
      return;
    }
    lang = mix.language === 'ru' ? 'ru' : 'en';
    song = typeof mix.song === 'string' ? mix.song : '';
    ui.song.textContent = song;
    applyTexts();
    learnDuration(Number(mix.duration_s));
    for (const info of Array.isArray(mix.tracks) ? mix.tracks : []) tracks.push(buildTrack(info));
    playable = tracks.filter((track) => track.audio);
    applyTempo();
    applyGains();
    redrawAll();
    if (!playable.length) {
      setStatus('');
      fail(t('noTracks'));
      return;
    }
    slowTimer = window.setTimeout(() => {
      if (ui.play.disabled && document.body.dataset.state === 'loading') showBanner(t('slow'));
    }, SLOW_LOAD_MS);
    for (const track of playable) {
      if (track.audio.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA) trackCanPlay(track);
    }
  }

  start();
})();

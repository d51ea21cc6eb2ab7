// The cliplens explorer: an overview of one model and a page per unit (index.html#L3H1). Data comes in data-*.js files
// that call back into `explorer`: browsers refuse fetch() on file:// pages, but load <script> tags. Plain JS, no build.
"use strict";

const explorer = (() => {
  const page = document.getElementById("page");
  const input = document.getElementById("search");
  const hits = document.getElementById("hits");
  const units = {};  // label -> unit, filled as data files arrive
  const loading = {};  // data file key -> Promise
  const chosen = {};  // the score each overview section is coloured by
  let overview = null;
  const words = {};  // the search index: two-letter prefix -> word -> labels

  function load(key) {  // adds data-<key>.js once; resolves after its callback ran
    if (!loading[key]) {
      loading[key] = new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = `data-${key}.js`;
        tag.onload = resolve;
        tag.onerror = () => reject(new Error(`data-${key}.js is missing from the report folder`));
        document.head.append(tag);
      });
    }
    return loading[key];
  }

  function chunkKey(label) {  // the same rule as cliplens.explorer.site.chunk_key
    const block = (n) => Math.floor(Number(n) / overview.chunk);
    let m;
    if ((m = /^L(\d+)H\d+$/.exec(label))) return `L${m[1]}H`;
    if ((m = /^L(\d+)N(\d+)$/.exec(label))) return `L${m[1]}N${block(m[2])}`;
    if ((m = /^H(\d+)N(\d+)$/.exec(label))) return `H${m[1]}N${block(m[2])}`;
    if ((m = /^N(\d+)$/.exec(label))) return `N${block(m[1])}`;
    return "other";
  }

  // small helpers ------------------------------------------------------------------------------------------------
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((child) => child != null));
    return node;
  }
  const format = (v) => (v == null ? "–" : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)
    ? v.toExponential(2) : String(Number(v.toPrecision(4))));
  const link = (label) => el("a", { href: `#${label}`, "data-label": label, text: label });

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return [lo, hi > lo ? hi : lo + 1];
  }
  function rgb(t) {  // light grey-blue (low) to dark blue (high); missing values light grey
    if (t == null || Number.isNaN(t)) return [232, 232, 232];
    const low = [244, 247, 251], high = [31, 78, 153];
    return low.map((c, i) => Math.round(c + (high[i] - c) * t));
  }
  const css = (t) => `rgb(${rgb(t).join(",")})`;

  function table(columns, rows) {
    return el("table", {}, el("tr", {}, ...columns.map((c) => el("th", { text: c }))),
      ...rows.map((row) => el("tr", {}, ...row.map((cell) =>
        el("td", {}, cell instanceof Node ? cell : typeof cell === "number" ? format(cell) : String(cell ?? "–"))))));
  }

  function chooser(section, names, draw) {  // a <select> of score names that redraws its section
    if (!names.includes(chosen[section])) chosen[section] = names[0];
    const select = el("select", { "data-section": section });
    for (const name of names) select.append(el("option", { value: name, text: name }));
    select.value = chosen[section];
    const holder = el("div");
    const redraw = () => { chosen[section] = select.value; holder.replaceChildren(draw(select.value)); };
    select.addEventListener("change", redraw);
    redraw();
    return [el("p", {}, "colour by ", select), holder];
  }

  // the overview -------------------------------------------------------------------------------------------------
  function headGrid(name) {
    const values = overview.grid[name];
    const [lo, hi] = extent(values.flat());
    const heads = values[0].length;
    const header = el("tr", {}, el("th"), ...Array.from({ length: heads }, (_, h) => el("th", { text: `H${h}` })));
    const rows = values.map((row, layer) => el("tr", {}, el("th", { text: `L${layer}` }), ...row.map((v, h) => {
      const label = `L${layer}H${h}`;
      const cell = el("td", { style: `background:${css(v == null ? null : (v - lo) / (hi - lo))}` });
      cell.append(el("a", { href: `#${label}`, "data-label": label, title: `${label}: ${name} ${format(v)}`,
        class: v != null && (v - lo) / (hi - lo) > 0.55 ? "dark" : "", text: format(v) }));
      return cell;
    })));
    return el("div", { class: "scroll" }, el("table", { class: "grid" }, header, ...rows),
      el("p", { class: "note", text: `${name}: ${format(lo)} (light) to ${format(hi)} (dark); click a head` }));
  }

  function strips(kind, strip) {  // one canvas row per layer (neurons) or pool head (pairs), a pixel per unit
    return chooser(kind, Object.keys(strip.scale), (name) => {
      const [lo, hi] = strip.scale[name];
      const lines = Object.entries(strip.rows).map(([key, scores]) => {
        const levels = scores[name] || [];  // 0-99 on the scale [lo, hi]; -1: no value
        const canvas = el("canvas", { width: Math.max(levels.length, 1), height: 1, class: "strip",
          title: `${key}: click a unit (${levels.length})` });
        const context = canvas.getContext("2d");
        const image = context.createImageData(canvas.width, 1);
        levels.forEach((v, i) => image.data.set([...rgb(v < 0 ? null : v / 99), 255], 4 * i));
        context.putImageData(image, 0, 0);
        canvas.addEventListener("click", (event) => {
          const index = Math.floor((event.offsetX / canvas.clientWidth) * levels.length);
          location.hash = `${key}N${Math.min(index, levels.length - 1)}`;
        });
        return el("tr", {}, el("th", { text: key }), el("td", { class: "wide" }, canvas));
      });
      return el("div", {}, el("table", { class: "strips" }, ...lines),
        el("p", { class: "note", text: `${name}: ${format(lo)} (light) to ${format(hi)} (dark); click a unit` }));
    });
  }

  function showOverview() {
    const shape = overview.shape;
    const parts = [el("h1", { text: "Model overview" })];
    const sizes = Object.entries(shape).map(([key, value]) => `${value} ${key}`).join(", ");
    parts.push(el("p", { text: sizes || "no statistics among the outputs" }));
    if (Object.keys(overview.grid).length) {
      parts.push(el("h2", { text: "Heads (layer × head)" }),
        ...chooser("heads", Object.keys(overview.grid), headGrid));
    }
    for (const [kind, strip] of Object.entries(overview.strips)) {
      const title = kind === "neurons" ? "Neurons (a row per MLP layer)" : "Pairs (a row per pool head)";
      parts.push(el("h2", { text: title }), ...strips(kind, strip));
    }
    if (overview.others.length) {
      const names = [...new Set(overview.others.flatMap(([, scores]) => Object.keys(scores)))];
      parts.push(el("h2", { text: "Other pieces" }), table(["piece", ...names],
        overview.others.map(([label, scores]) => [link(label), ...names.map((n) => scores[n])])));
    }
    for (const [kind, scores] of Object.entries(overview.top)) {
      const lists = Object.entries(scores).map(([name, entries]) => el("div", { class: "top" },
        el("h3", { text: `by ${name}` }), table(["unit", name], entries.map(([label, v]) => [link(label), v]))));
      if (lists.length) parts.push(el("h2", { text: `Strongest ${kind}` }), el("div", { class: "tops" }, ...lists));
    }
    if (overview.ablations.length) {
      parts.push(el("h2", { text: "Mean-ablation (zero-shot accuracy)" }), table(["variant", "pieces removed",
        "accuracy", "full model"], overview.ablations.map((a) => [a.variant, a.pieces.join(", ") || "none",
        a.accuracy, a.full])));
    }
    for (const [name, rows] of Object.entries(overview.tables)) {
      const columns = Object.keys(rows[0]);
      parts.push(el("h2", { text: name }), table(columns, rows.map((row) => columns.map((c) => row[c]))));
    }
    parts.push(el("h2", { text: "Outputs read" }), table(["folder", "command"],
      overview.runs.map((run) => [run.folder, run.command])));
    page.replaceChildren(...parts);
    performance.mark("overview-shown");
  }

  // a unit's page ------------------------------------------------------------------------------------------------
  function tokenMap(tokens) {
    const canvas = el("canvas", { width: tokens.side, height: tokens.side, class: "tokens" });
    const context = canvas.getContext("2d");
    const image = context.createImageData(tokens.side, tokens.side);
    const [lo, hi] = extent(tokens.values);
    tokens.values.forEach((v, i) => image.data.set([...rgb((v - lo) / (hi - lo)), 255], 4 * i));
    context.putImageData(image, 0, 0);
    return el("figure", {}, canvas, el("figcaption", { text: `size of the mean piece read from each of the ` +
      `${tokens.side}×${tokens.side} image patches over the statistics' images: ${format(lo)} (light) to ` +
      `${format(hi)} (dark)` }));
  }

  function diverging(t) {  // -1 blue, 0 white, +1 red: a map's signed shares
    const end = t < 0 ? [33, 102, 172] : [178, 24, 43], a = Math.min(Math.abs(t), 1);
    return end.map((c) => Math.round(255 + (c - 255) * a));
  }

  function imageMaps(maps) {  // retrieve's maps over each top image: the overlay grid, then each image's signed map
    const side = maps.side;
    const reach = maps.images.reduce((most, image) => image.values.reduce((m, v) => Math.max(m, Math.abs(v)), most), 0)
      || 1;
    const rows = maps.images.map((image, rank) => {
      const canvas = el("canvas", { width: side, height: side, class: "image-map",
        title: `#${image.index}: red positive, blue negative, ±${format(reach)} full colour` });
      const context = canvas.getContext("2d");
      const pixels = context.createImageData(side, side);
      let peak = 0;
      image.values.forEach((v, i) => {
        pixels.data.set([...diverging(v / reach), 255], 4 * i);
        if (v > image.values[peak]) peak = i;
      });
      context.putImageData(pixels, 0, 0);
      const patches = image.values.reduce((sum, v) => sum + v, 0);
      return [rank, `#${image.index}`, image.score, canvas, `${Math.floor(peak / side)}, ${peak % side}`,
        image.values[peak], patches, image.other];
    });
    return [
      maps.src ? el("figure", {},
        el("img", { src: maps.src, alt: "top images with their maps", class: "overlay-grid" }),
        el("figcaption", { text: maps.caption })) : null,
      el("p", { class: "note", text: `per patch: ${maps.measure}. The patches and the class, register or mean ` +
        "tokens (not places) sum to what the method page says; the grid draws the positive shares." }),
      el("div", { class: "scroll" }, table(["rank", "image", "score", "map (signed)", "peak patch (row, col)",
        "peak share", "patches' sum", "other tokens"], rows)),
    ].filter((part) => part != null);
  }

  function principalImages(principal) {  // an analysis's head images: per component, each end with its pole's texts
    const parts = [el("h2", { text: "Principal components: the images at both ends" }),
      el("p", { class: "note", text: `score ${principal.score}, u oriented towards the dominant text pole; ` +
        `the extremes of ${principal.count} images` })];
    for (const component of principal.components) {
      parts.push(el("h3", { text: `pc${component.component}` }));
      for (const end of component.ends) {
        const images = end.images.map(([index, score]) => principal.thumbs
          ? el("img", { src: `${principal.thumbs}${index}.png`, class: "thumb", title: `#${index}: ${format(score)}`,
            alt: `image ${index}` })
          : el("span", { class: "thumb-text", text: `#${index} (${format(score)})` }));
        parts.push(el("div", { class: "end" }, el("p", { class: "note", text: `towards the ${end.pole} pole: ` +
          end.texts.join(" | ") }), el("div", { class: "thumbs" }, ...images)));
      }
    }
    return parts;
  }

  function showUnit(label, unit) {
    const parts = [el("p", {}, el("a", { href: "#", text: "← overview" })), el("h1", { text: label })];
    const scores = Object.entries(unit.scores);
    if (scores.length) parts.push(el("h2", { text: "Scores" }), table(["score", "value"], scores));
    for (const [method, texts] of Object.entries(unit.texts)) {
      parts.push(el("h2", { text: `Texts: ${method}` }),
        el("div", { class: "texts" }, table(["text", "value"], texts)));
    }
    for (const [component, poles] of Object.entries(unit.poles || {})) {
      parts.push(el("h2", { text: `SVD component ${component}: its two poles` }), el("div", { class: "tops" },
        el("div", {}, el("h3", { text: "+ pole" }), table(["text", "coordinate"], poles["+"])),
        el("div", {}, el("h3", { text: "− pole" }), table(["text", "coordinate"], poles["-"]))));
    }
    if (unit.images) {
      parts.push(el("h2", { text: "Top images" }), ...unit.images.map((image) =>
        el("figure", {}, el("img", { src: image.src, alt: `top images of ${label}`, class: "grid-image" }),
          el("figcaption", { text: image.caption }))));
    }
    if (unit.principal) parts.push(...principalImages(unit.principal));
    for (const maps of unit.maps || []) {
      parts.push(el("h2", { text: "Where it acts in each top image" }), ...imageMaps(maps));
    }
    if (unit.tokens) parts.push(el("h2", { text: "Where in the image it reads, on average" }), tokenMap(unit.tokens));
    if (unit.ablations) {
      parts.push(el("h2", { text: "Mean-ablation" }), table(["variant", "pieces removed with it", "accuracy",
        "full model"], unit.ablations.map((a) => [a.variant, a.pieces.length, a.accuracy, a.full])));
    }
    if (unit.links) {
      const heading = /H\d+$/.test(label) ? "Neurons that write through this head" : "Heads this neuron writes through";
      parts.push(el("h2", { text: heading }), table(["unit", "|coordinate| in the principal direction"],
        [...unit.links].sort((a, b) => b[1] - a[1]).map(([other, weight]) => [link(other), weight])));
    }
    page.replaceChildren(...parts);
  }

  async function route() {
    hits.replaceChildren();
    const label = decodeURIComponent(location.hash.slice(1));
    if (!label) return showOverview();
    page.replaceChildren(el("p", { text: `Loading ${label}…` }));
    const key = chunkKey(label);
    if (overview.chunks.includes(key)) await load(key);
    if (decodeURIComponent(location.hash.slice(1)) !== label) return;  // another page was asked for meanwhile
    if (units[label]) showUnit(label, units[label]);
    else page.replaceChildren(el("p", {}, el("a", { href: "#", text: "← overview" })), el("h1", { text: label }),
      el("p", { text: "None of the outputs in this report says anything about this unit." }));
  }

  // search -------------------------------------------------------------------------------------------------------
  async function search() {  // words live in data-search-<first two letters>.js, loaded on the first such query
    const query = input.value.trim().toLowerCase();
    if (!query) return hits.replaceChildren();
    const found = new Map();
    if (/^(l\d+)?(h\d+)?(n\d+)?$/.test(query)) found.set(query.toUpperCase(), "label");
    const prefix = query.slice(0, 2);
    if (prefix.length === 2 && overview.searchable.includes(prefix)) {
      await load(`search-${prefix}`);
      if (input.value.trim().toLowerCase() !== query) return;  // typing went on meanwhile
      for (const [word, labels] of Object.entries(words[prefix] || {})) {
        if (word.startsWith(query)) for (const label of labels) if (!found.has(label)) found.set(label, word);
        if (found.size >= 40) break;
      }
    }
    hits.replaceChildren(...[...found].map(([label, word]) => el("li", {}, link(label), ` ${word}`)));
    if (!found.size) hits.append(el("li", { text: query.length < 2 ? "type two letters or more"
      : `no unit's texts hold a word starting “${query}”` }));
  }
  input.addEventListener("input", search);
  hits.addEventListener("click", () => { input.value = ""; });
  window.addEventListener("hashchange", route);

  return {
    overview(data) {
      overview = data;
      document.getElementById("model").textContent = `${data.model.model} (fingerprint ${data.model.fingerprint})`;
      route();
    },
    units(data) { Object.assign(units, data); },
    search(data) {  // one prefix's words: every key starts with it
      const first = Object.keys(data)[0];
      if (first) words[first.slice(0, 2)] = data;
    },
  };
})();

// Reads /api/state every two seconds and redraws. Read-only: nothing here changes the run.
"use strict";

const plots = {};

function text(id, value) { document.getElementById(id).textContent = value; }

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return seconds.toFixed(0) + " s ago";
  return (seconds / 60).toFixed(1) + " min ago";
}

function drawSites(sites) {
  const body = document.querySelector("#sites tbody");
  body.replaceChildren();
  for (const s of sites) {
    const row = document.createElement("tr");
    row.dataset.site = s.name;
    const cells = [s.name, s.connected ? "yes" : "no", age(s.last_seen_age_seconds), s.images,
      fixed(s.train_loss, 4), fixed(s.validation_dice, 4), fixed(s.reliability, 3),
      fixed(s.aggregation_weight, 4), s.rounds_included, s.failures_total,
      bytes(s.bytes_received_total), bytes(s.bytes_sent_total)];
    cells.forEach((value, i) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      if (i === 1 && !s.connected) cell.className = "no";
      row.appendChild(cell);
    });
    body.appendChild(row);
  }
}

function drawPlot(id, label, xs, ys, color) {
  const data = [xs, ys];
  if (plots[id]) { plots[id].setData(data); return; }
  plots[id] = new uPlot({
    width: 420, height: 240,
    scales: { x: { time: false } },
    axes: [{ label: "round" }, {}],
    series: [{ label: "round" }, { label: label, stroke: color, width: 2,
      points: { show: true } }],
  }, data, document.getElementById(id));
}

async function refresh() {
  try {
    const reply = await fetch("/api/state", { cache: "no-store" });
    if (!reply.ok) throw new Error("the coordinator answered " + reply.status);
    const s = await reply.json();
    text("run", s.run_id + " (" + s.run_name + ", " + s.method + ", " + s.mode + ")");
    text("state", s.state);
    text("round", s.current_round > 0 ? s.current_round + " / " + s.rounds_planned
                                      : "– / " + s.rounds_planned);
    text("completed", s.rounds_completed);
    text("resumes", s.resumes > 0 ? "resumed " + s.resumes + "×" : "");
    text("updated", new Date().toLocaleTimeString());
    text("error", "");
    drawSites(s.sites);
    const rounds = s.history.map(r => r.round);
    drawPlot("dice-plot", "mean val Dice", rounds, s.history.map(r => r.mean_validation_dice),
             "#1f77b4");
    drawPlot("loss-plot", "mean loss", rounds, s.history.map(r => r.mean_train_loss), "#d62728");
    drawPlot("traffic-plot", "MB", rounds, s.history.map(r => r.bytes / 1e6), "#2ca02c");
  } catch (e) {
    text("error", "cannot read the coordinator's state: " + e.message);
  }
}

refresh();
setInterval(refresh, 2000);

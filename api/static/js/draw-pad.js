// The drawing pad: a canvas drawn on with a mouse, a finger or a pen, or with the keyboard (it is
// in the tab order: the arrow keys move the pen, Space puts it down and lifts it, Delete clears).
// Each stroke's end (the pen lifted, or the pad left with the pen down) hands the drawing, a PNG,
// to onStroke.
const $ = (id) => document.getElementById(id);
// How far an arrow key moves the pen: a twentieth of the pad, a fifth of that with Shift.
const STEP = 1 / 20;
const FINE_STEP = STEP / 5;
const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

export function initPad(onStroke) {
  const pad = $("pad");
  const cursor = $("pad-cursor");
  const said = $("pad-status");
  const ctx = pad.getContext("2d");
  let drawing = false;
  let dirty = false;
  let last = null;
  let pen = [pad.width / 2, pad.height / 2]; // the keyboard's pen
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    dirty = false;
    $("pad-hint").hidden = false;
  };
  const point = (event) => {
    const box = pad.getBoundingClientRect();
    return [
      ((event.clientX - box.left) / box.width) * pad.width,
      ((event.clientY - box.top) / box.height) * pad.height,
    ];
  };
  const line = (from, to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 20;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  };
  const down = (at) => {
    drawing = true;
    last = at;
    line(last, last);
    dirty = true;
    $("pad-hint").hidden = true;
  };
  const lift = () => {
    if (!drawing) return;
    drawing = false;
    if (dirty) pad.toBlob((blob) => onStroke(blob), "image/png");
  };

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    down(point(event));
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    line(last, next);
    last = next;
  });
  pad.addEventListener("pointerup", lift);
  pad.addEventListener("pointercancel", lift);

  // The keyboard's pen: a ring over the pad (filled while down), shown while the pad has keyboard
  // focus (css: #pad:focus-visible), not while a pointer draws.
  const showPen = () => {
    cursor.style.left = `${(pen[0] / pad.width) * 100}%`;
    cursor.style.top = `${(pen[1] / pad.height) * 100}%`;
    cursor.classList.toggle("down", drawing);
  };
  const say = (text) => (said.textContent = text);
  pad.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const move = MOVES[event.key];
    if (move) {
      const step = (event.shiftKey ? FINE_STEP : STEP) * pad.width;
      const margin = 10; // half the stroke: the ink stays on the pad
      const clamp = (value, size) => Math.min(size - margin, Math.max(margin, value));
      pen = [clamp(pen[0] + move[0] * step, pad.width), clamp(pen[1] + move[1] * step, pad.height)];
      if (drawing) {
        line(last, pen);
        last = pen;
      }
    } else if (event.key === " " || event.key === "Enter") {
      if (drawing) {
        lift();
        say("Pen up: classifying.");
      } else {
        down(pen);
        say("Pen down: the arrow keys draw.");
      }
    } else if (event.key === "Delete" || event.key === "Backspace") {
      drawing = false;
      clear();
      say("Pad cleared.");
    } else {
      return;
    }
    event.preventDefault(); // no scrolling with Space or the arrows
    showPen();
  });
  pad.addEventListener("focus", showPen);
  // Leaving with the keyboard's pen down ends the stroke, as a cancelled pointer does.
  pad.addEventListener("blur", lift);
  $("pad-clear").addEventListener("click", clear);
  clear();
}

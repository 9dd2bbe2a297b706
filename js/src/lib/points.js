// A WebGL layer that draws N square points in one call: positions (data coordinates) and RGBA
// colours live in GPU buffers, uploaded when they change; pan and zoom change two uniforms.
// Screen position in CSS pixels: (x * s + tx, -y * s + ty), as the scatter's 2-D overlay uses.
// The layer draws into its own canvas (not in the page); the view copies it into its visible
// canvas with drawImage and draws the overlay on top, so one canvas holds the whole picture.
// Returns null where WebGL is not available (the caller keeps its Canvas 2D path).

const VERTEX = `
attribute vec2 a_pos;
attribute vec4 a_color;
uniform vec3 u_view;   // s, tx, ty (CSS pixels)
uniform vec2 u_size;   // canvas W, H (CSS pixels)
uniform float u_point; // side in device pixels
varying vec4 v_color;
void main() {
  vec2 p = vec2(a_pos.x * u_view.x + u_view.y, -a_pos.y * u_view.x + u_view.z);
  gl_Position = vec4(p.x / u_size.x * 2.0 - 1.0, 1.0 - p.y / u_size.y * 2.0, 0.0, 1.0);
  gl_PointSize = u_point;
  v_color = a_color;
}`;

const FRAGMENT = `
precision mediump float;
varying vec4 v_color;
void main() {
  if (v_color.a < 0.5) discard;
  gl_FragColor = vec4(v_color.rgb, 1.0);
}`;

function compile(gl, type, src) {
  const sh = gl.createShader(type);
  gl.shaderSource(sh, src);
  gl.compileShader(sh);
  if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(sh) || "shader");
  return sh;
}

/** A point layer, or null without WebGL. */
export function pointLayer() {
  const canvas = document.createElement("canvas");
  const opts = { preserveDrawingBuffer: true, antialias: false, alpha: false, premultipliedAlpha: false };
  let gl = null;
  try {
    gl = canvas.getContext("webgl", opts) || canvas.getContext("experimental-webgl", opts);
  } catch (e) {
    gl = null;
  }
  if (!gl) return null;
  let prog;
  try {
    prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
  } catch (e) {
    return null;
  }
  const loc = {
    pos: gl.getAttribLocation(prog, "a_pos"), color: gl.getAttribLocation(prog, "a_color"),
    view: gl.getUniformLocation(prog, "u_view"), size: gl.getUniformLocation(prog, "u_size"),
    point: gl.getUniformLocation(prog, "u_point"),
  };
  const posBuf = gl.createBuffer(), colorBuf = gl.createBuffer();
  let n = 0, lost = false;
  const maxPoint = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE)[1] || 64;
  canvas.addEventListener("webglcontextlost", (e) => { e.preventDefault(); lost = true; });

  return {
    canvas,
    get lost() { return lost || gl.isContextLost(); },
    /** Float32Array of 2N data coordinates. */
    setPositions(pos) {
      n = Math.floor(pos.length / 2);
      gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
      gl.bufferData(gl.ARRAY_BUFFER, pos, gl.STATIC_DRAW);
    },
    /** Uint8Array of 4N RGBA values (alpha 0: not drawn). */
    setColors(rgba) {
      gl.bindBuffer(gl.ARRAY_BUFFER, colorBuf);
      gl.bufferData(gl.ARRAY_BUFFER, rgba, gl.STATIC_DRAW);
    },
    /** Draw every point: canvas W x H CSS pixels at `dpr`, view {s, tx, ty}, side `point`
     *  CSS pixels, background [r, g, b] 0..255. */
    draw(W, H, dpr, view, point, bg) {
      const w = Math.round(W * dpr), h = Math.round(H * dpr);
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      gl.viewport(0, 0, w, h);
      gl.clearColor(bg[0] / 255, bg[1] / 255, bg[2] / 255, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      if (!n) return;
      gl.useProgram(prog);
      gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
      gl.enableVertexAttribArray(loc.pos);
      gl.vertexAttribPointer(loc.pos, 2, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, colorBuf);
      gl.enableVertexAttribArray(loc.color);
      gl.vertexAttribPointer(loc.color, 4, gl.UNSIGNED_BYTE, true, 0, 0);
      gl.uniform3f(loc.view, view.s, view.tx, view.ty);
      gl.uniform2f(loc.size, W, H);
      gl.uniform1f(loc.point, Math.min(maxPoint, Math.max(1, point * dpr)));
      gl.drawArrays(gl.POINTS, 0, n);
    },
    dispose() {
      gl.deleteBuffer(posBuf);
      gl.deleteBuffer(colorBuf);
      gl.deleteProgram(prog);
      const ext = gl.getExtension("WEBGL_lose_context");
      if (ext) ext.loseContext();
    },
  };
}

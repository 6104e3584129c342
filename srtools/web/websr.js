"use strict";
/* SR in this browser: the comparison player's fourth view (sr-hls(1), SR IN THE BROWSER). The stream's own
   F-EDSR model, as sr-hls publishes it (model.json, polled), runs in WebGL2 on every frame of the low-res
   rendition, and the result is drawn on a canvas at the output size: a layer of the player
   (srPlayer.addLayer), so that it sits in the views and in the wipe.

   Per frame, as sr-serve computes it (srtools/upscale.py): the frame's luma Y, the decoder's own Y plane
   (copied out of a WebCodecs VideoFrame; where the browser has none, recovered from its RGB, inexactly)
   goes through the network, whose output is added to a bicubic upscale of Y (PyTorch's: a = -0.75,
   half-pixel centres, edge pixels repeated) and rounded to 8 bits; the chroma is the browser's picture
   scaled bilinearly (in limited range a change of luma moves R, G and B alike). Feature maps live in float texture arrays (RGBA32F, or RGBA16F with ?websr-precision=fp16),
   four channels per texel, a layer per four channels; each convolution is one draw per four output
   channels, its weights a float texture. A model file is parsed here (safetensors: an 8-byte
   little-endian header length, a JSON header, raw little-endian F32/F16/BF16 tensors) and checked as
   sr-serve checks it (srtools/modelfile.py): format, architecture, hyperparameters and their limits,
   scale, every tensor's name, type, shape and extent, finite weights. Nothing in it is executed. A
   model the page cannot run is refused, with the reason in the statistics panel: the previous model
   runs on, or, with none, the browser's scaling is shown. A new model is swapped in between two frames.

   The view measures itself (frames per second, milliseconds per frame from the copy of the frame's Y
   plane to its network output read back) and, when the network cannot keep up with the video (the median of the
   last frames over one frame interval, or ?websr-budget-ms=MS), shows the browser's scaling instead
   and says so; ?websr=always keeps the network running however slow. For tests and benchmarks,
   srWebSR.runY(base64 Y plane, width, height) runs the same shaders on a given luma plane and returns
   the output luma (base64), and srWebSR.captureNext() has the next frame drawn read back. */

const MODEL_DOC = "model.json";
const MODEL_EVERY_MS = 2000;
const MODEL_FORMAT = "srtools-model/1";
const MAX_HEADER_BYTES = 1 << 24;
const FEDSR_DEFAULTS = { scale: 2, channels: 16, blocks: 4, in_channels: 1, res_scale: 1.0, bicubic_skip: true };
const FEDSR_LIMITS = { scale: 4, channels: 256, blocks: 64 };  // srtools/archs/fedsr_arch.py LIMITS
const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2 };
const TIMED_FRAMES = 30;  // the window of the speed figures and of the keep-up test

const websr = {
  model: null,       // the network on air here: {version, scale, hparams, convs}
  refused: null,     // the version last refused, not fetched again
  message: "",       // why the last model was refused, or why the network is not running
  fallback: "",      // non-empty: the browser's scaling is shown, for this reason
  frames: 0,         // frames drawn through the network
  times: [],         // [performance.now() at the end, ms] of the last frames through the network
  captured: null,    // captureNext(): the next frame drawn: {width, height, rgba, y (base64), version, plane}
  planeless: "",     // why the luma comes from the browser's RGB, not from the decoder's Y plane
  engine: null,
};
window.srWebSR = websr;

/* ---- model files ------------------------------------------------------------------------------ */

class Refused extends Error {}

function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** The tensors of F-EDSR with ``h`` as hyperparameters, name -> shape (its PyTorch state dict). */
function fedsrShapes(h) {
  const c = h.channels, shapes = {};
  const conv = (name, out, inp, k) => { shapes[`${name}.weight`] = [out, inp, k, k]; shapes[`${name}.bias`] = [out]; };
  conv("head", c, h.in_channels, 5);
  for (let b = 0; b < h.blocks; b++) {
    conv(`body.${b}.conv1`, c, c, 3);
    conv(`body.${b}.conv2`, c, c, 3);
  }
  conv(`body.${h.blocks}`, c, c, 3);
  if (h.scale === 3) conv("upsample.0", 9 * c, c, 3);
  else for (let i = 0; 2 ** i < h.scale; i++) conv(`upsample.${2 * i}`, 4 * c, c, 3);
  conv("tail", h.in_channels, c, 3);
  return shapes;
}

/** F-EDSR's hyperparameters from a model file's metadata, checked as its constructor and LIMITS check them. */
function fedsrHparams(meta) {
  let given;
  try {
    given = JSON.parse(meta.hparams);
  } catch (error) {
    throw new Refused("bad model metadata (hparams)");
  }
  if (!given || typeof given !== "object" || Array.isArray(given)) throw new Refused("bad model metadata (hparams)");
  const unknown = Object.keys(given).filter((key) => !(key in FEDSR_DEFAULTS));
  if (unknown.length) throw new Refused(`hyperparameters rejected by fedsr: ${unknown.join(", ")}`);
  const h = { ...FEDSR_DEFAULTS, ...given };
  for (const key of ["scale", "channels", "blocks", "in_channels"]) {
    if (!Number.isInteger(h[key])) throw new Refused(`hyperparameters rejected by fedsr: ${key}=${JSON.stringify(h[key])}`);
  }
  for (const [key, limit] of Object.entries(FEDSR_LIMITS)) {
    if (h[key] > limit) throw new Refused(`${key}=${h[key]} is over fedsr's limit of ${limit}`);
  }
  if (h.channels < 1 || h.blocks < 0 || ![1, 3].includes(h.in_channels) || ![2, 3, 4].includes(h.scale)
      || typeof h.res_scale !== "number" || typeof h.bicubic_skip !== "boolean") {
    throw new Refused(`hyperparameters rejected by fedsr: ${meta.hparams}`);
  }
  return h;
}

/**
 * Parse and check a model file (an ArrayBuffer) as sr-serve would load it for a stream upscaled ``scale`` times.
 * Returns {scale, hparams, convs: name -> {weight, bias (Float32Array), out, inp, k}}; throws Refused.
 */
function parseModel(buffer, scale) {
  const bytes = buffer.byteLength, view = new DataView(buffer);
  if (bytes < 8) throw new Refused("not a safetensors file (too short)");
  const headerBytes = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (headerBytes > Math.min(MAX_HEADER_BYTES, bytes - 8)) throw new Refused("not a safetensors file (header length)");
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 8, headerBytes)));
  } catch (error) {
    throw new Refused("not a safetensors file (header)");
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw new Refused("not a safetensors file (header)");
  const meta = header.__metadata__ || {};
  if (meta.format !== MODEL_FORMAT) throw new Refused(`not an srtools model file (format ${JSON.stringify(meta.format)})`);
  if (meta.arch !== "fedsr") throw new Refused(`architecture ${JSON.stringify(meta.arch)}: this page runs fedsr`);
  const h = fedsrHparams(meta);
  const fileScale = Number(meta.scale);
  if (!Number.isInteger(fileScale)) throw new Refused("bad model metadata (scale)");
  if (fileScale !== scale) throw new Refused(`model upscales x${fileScale}, expected x${scale}`);
  if (h.scale !== fileScale) throw new Refused(`metadata scale x${fileScale} disagrees with hparams`);
  const color = meta.color === undefined ? "y" : meta.color;
  if (color !== "y" || h.in_channels !== 1) {
    throw new Refused(`a colour model (color ${color}, in_channels ${h.in_channels}): this page runs luma models`);
  }
  const expected = fedsrShapes(h), names = Object.keys(header).filter((name) => name !== "__metadata__");
  const missing = Object.keys(expected).filter((name) => !(name in header));
  const extra = names.filter((name) => !(name in expected));
  const wrong = names.filter((name) => name in expected && JSON.stringify(header[name].shape) !== JSON.stringify(expected[name]));
  if (missing.length || extra.length || wrong.length) {
    throw new Refused(`weights do not fit fedsr ${meta.hparams} (missing ${missing.slice(0, 3)}, unexpected `
                      + `${extra.slice(0, 3)}, wrong shape ${wrong.slice(0, 3)})`);
  }
  const start = 8 + headerBytes, tensors = {};
  for (const name of names) {
    const { dtype, data_offsets: offsets } = header[name];
    const size = DTYPE_BYTES[dtype], count = expected[name].reduce((a, b) => a * b, 1);
    if (!size) throw new Refused(`${name}: tensor type ${JSON.stringify(dtype)} (F32, F16 or BF16 expected)`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(Number.isInteger)
        || offsets[1] - offsets[0] !== count * size || offsets[0] < 0 || start + offsets[1] > bytes) {
      throw new Refused(`${name}: its data lies outside the file (damaged or truncated)`);
    }
    const values = new Float32Array(count), at = start + offsets[0];
    for (let i = 0; i < count; i++) {
      const v = dtype === "F32" ? view.getFloat32(at + 4 * i, true)
        : dtype === "F16" ? halfToFloat(view.getUint16(at + 2 * i, true))
          : new Float32Array(new Uint32Array([view.getUint16(at + 2 * i, true) << 16]).buffer)[0];
      if (!Number.isFinite(v)) throw new Refused("weights contain NaN or infinity");
      values[i] = v;
    }
    tensors[name] = values;
  }
  const convs = {};
  for (const name of Object.keys(expected)) {
    if (!name.endsWith(".weight")) continue;
    const base = name.slice(0, -".weight".length), [out, inp, k] = expected[name];
    convs[base] = { weight: tensors[name], bias: tensors[`${base}.bias`], out, inp, k };
  }
  return { scale, hparams: h, convs };
}

/* ---- the network in WebGL2 -------------------------------------------------------------------- */

const VERTEX = `#version 300 es
void main() {  // one triangle over the whole target
  gl_Position = vec4(float((gl_VertexID << 1) & 2) * 2.0 - 1.0, float(gl_VertexID & 2) * 2.0 - 1.0, 0.0, 1.0);
}`;

const HEAD = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
precision highp sampler2DArray;
out vec4 result;
`;

/* A convolution's four output channels u_group*4 .. +3 at this pixel, zero padding; weights: texel
   ((tap * inGroups + g) * 4 + j, u_group) holds input channels 4g .. 4g+3 to output channel 4*u_group + j,
   the last column the four biases. Then ReLU, or the skip: skip + u_skipScale * conv. */
const CONV = `${HEAD}
uniform sampler2DArray u_in, u_skip;
uniform sampler2D u_weights;
uniform int u_inGroups, u_k, u_group;
uniform bool u_relu, u_hasSkip;
uniform float u_skipScale;
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy), size = textureSize(u_in, 0).xy;
  int r = u_k / 2;
  vec4 acc = texelFetch(u_weights, ivec2(u_k * u_k * u_inGroups * 4, u_group), 0);
  for (int dy = 0; dy < u_k; dy++) {
    for (int dx = 0; dx < u_k; dx++) {
      ivec2 q = p + ivec2(dx - r, dy - r);
      if (q.x < 0 || q.y < 0 || q.x >= size.x || q.y >= size.y) continue;
      int column = (dy * u_k + dx) * u_inGroups * 4;
      for (int g = 0; g < u_inGroups; g++, column += 4) {
        vec4 v = texelFetch(u_in, ivec3(q, g), 0);
        acc += vec4(dot(texelFetch(u_weights, ivec2(column, u_group), 0), v),
                    dot(texelFetch(u_weights, ivec2(column + 1, u_group), 0), v),
                    dot(texelFetch(u_weights, ivec2(column + 2, u_group), 0), v),
                    dot(texelFetch(u_weights, ivec2(column + 3, u_group), 0), v));
      }
    }
  }
  if (u_relu) acc = max(acc, 0.0);
  if (u_hasSkip) acc = texelFetch(u_skip, ivec3(p, u_group), 0) + u_skipScale * acc;
  result = acc;
}`;

/* PyTorch's PixelShuffle: output channel c at (x*r + i, y*r + j) is input channel c*r*r + j*r + i at (x, y). */
const SHUFFLE = `${HEAD}
uniform sampler2DArray u_in;
uniform int u_r, u_channels, u_group;
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy), q = p / u_r, d = p - q * u_r;
  vec4 out4 = vec4(0.0);
  for (int j = 0; j < 4; j++) {
    int c = u_group * 4 + j, index = (c * u_r + d.y) * u_r + d.x;
    if (c < u_channels) out4[j] = texelFetch(u_in, ivec3(q, index / 4), 0)[index % 4];
  }
  result = out4;
}`;

/* The frame's luma into layer 0: the decoder's Y plane itself (u_fromPlane), or where the browser gives
   no planes, recovered from its RGB (BT.709 limited range, as Chromium converts untagged streams; inexact
   where the RGB was clipped), rounded to 8 bits as sr-serve reads it. */
const LUMA = `${HEAD}
uniform sampler2D u_picture, u_plane;
uniform bool u_fromPlane;
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy);
  float y = u_fromPlane ? texelFetch(u_plane, p, 0).r
    : (16.0 + dot(texelFetch(u_picture, p, 0).rgb, vec3(46.559, 156.629, 15.812))) / 255.0;
  result = vec4(roundEven(clamp(y, 0.0, 1.0) * 255.0) / 255.0, 0.0, 0.0, 0.0);
}`;

/* The output: network + bicubic of Y, rounded to 8 bits (u_mode 0: that luma alone), or the picture
   (u_mode 1, rows flipped for the canvas) scaled bilinearly, its luma moved to that one (in limited range
   a change of Y moves R, G and B by 255/219 of it, whichever matrix the browser used): the chroma is
   the browser's, scaled bilinearly. u_network false: the picture scaled bilinearly, as the browser scales it. */
const COMPOSE = `${HEAD}
uniform sampler2DArray u_residual, u_y;
uniform sampler2D u_picture;
uniform int u_scale, u_mode;
uniform bool u_network, u_bicubicSkip;
uniform ivec2 u_size;
vec4 cubicWeights(float t) {  // PyTorch's upsample_bicubic2d, A = -0.75
  const float A = -0.75;
  float s = 1.0 - t;
  return vec4(((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A,
              ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0,
              ((A + 2.0) * s - (A + 3.0)) * s * s + 1.0,
              ((A * (s + 1.0) - 5.0 * A) * (s + 1.0) + 8.0 * A) * (s + 1.0) - 4.0 * A);
}
float bilinear(ivec2 p) {  // Y as the picture's LINEAR sampling sees it
  ivec2 size = textureSize(u_y, 0).xy;
  vec2 source = (vec2(p) + 0.5) / float(u_scale) - 0.5, base = floor(source), t = source - base;
  ivec2 a = clamp(ivec2(base), ivec2(0), size - 1), b = clamp(ivec2(base) + 1, ivec2(0), size - 1);
  return mix(mix(texelFetch(u_y, ivec3(a.x, a.y, 0), 0).r, texelFetch(u_y, ivec3(b.x, a.y, 0), 0).r, t.x),
             mix(texelFetch(u_y, ivec3(a.x, b.y, 0), 0).r, texelFetch(u_y, ivec3(b.x, b.y, 0), 0).r, t.x), t.y);
}
float bicubic(ivec2 p) {  // align_corners=False: source = (p + 0.5) / scale - 0.5, edge pixels repeated
  ivec2 size = textureSize(u_y, 0).xy;
  vec2 source = (vec2(p) + 0.5) / float(u_scale) - 0.5, base = floor(source);
  vec4 wx = cubicWeights(source.x - base.x), wy = cubicWeights(source.y - base.y);
  float sum = 0.0;
  for (int j = 0; j < 4; j++) {
    int y = clamp(int(base.y) - 1 + j, 0, size.y - 1);
    float row = 0.0;
    for (int i = 0; i < 4; i++) row += wx[i] * texelFetch(u_y, ivec3(clamp(int(base.x) - 1 + i, 0, size.x - 1), y, 0), 0).r;
    sum += wy[j] * row;
  }
  return sum;
}
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy);
  if (u_mode == 1) p.y = u_size.y - 1 - p.y;
  vec3 rgb = u_mode == 1 ? texture(u_picture, (vec2(p) + 0.5) / vec2(u_size)).rgb : vec3(0.0);
  if (!u_network) {
    result = vec4(rgb, 1.0);
    return;
  }
  float y = texelFetch(u_residual, ivec3(p, 0), 0).r + (u_bicubicSkip ? bicubic(p) : 0.0);
  y = clamp(roundEven(y * 255.0), 0.0, 255.0) / 255.0;
  result = u_mode == 0 ? vec4(y, 0.0, 0.0, 1.0) : vec4(clamp(rgb + (y - bilinear(p)) * (255.0 / 219.0), 0.0, 1.0), 1.0);
}`;

class Engine {
  /** WebGL2 on ``canvas``, float render targets of ``precision`` ("fp32" or "fp16"); throws where unavailable. */
  constructor(canvas, precision) {
    const gl = canvas.getContext("webgl2", { alpha: false, antialias: false, depth: false, stencil: false });
    if (!gl) throw new Error("this browser has no WebGL2");
    if (!gl.getExtension("EXT_color_buffer_float")) throw new Error("no float render targets (EXT_color_buffer_float)");
    this.gl = gl;
    this.format = precision === "fp16" ? gl.RGBA16F : gl.RGBA32F;
    this.programs = { conv: this.program(CONV), shuffle: this.program(SHUFFLE), luma: this.program(LUMA),
                      compose: this.program(COMPOSE) };
    this.vao = gl.createVertexArray();
    this.framebuffer = gl.createFramebuffer();
    this.picture = this.texture2d(gl.RGBA8, 1, 1, gl.LINEAR);
    this.pictureSize = [1, 1];
    this.plane = this.texture2d(gl.R8, 1, 1, gl.NEAREST);  // the decoder's Y plane
    this.planeSize = [1, 1];
    this.arrays = null;  // the feature maps of one frame size and model shape
    this.arraysKey = "";
    this.output = null;  // runY's 8-bit target
  }

  program(source) {
    const gl = this.gl, program = gl.createProgram();
    for (const [type, text] of [[gl.VERTEX_SHADER, VERTEX], [gl.FRAGMENT_SHADER, source]]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, text);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(`shader: ${gl.getShaderInfoLog(shader)}`);
      gl.attachShader(program, shader);
    }
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`shader: ${gl.getProgramInfoLog(program)}`);
    const uniforms = {};
    for (let i = 0; i < gl.getProgramParameter(program, gl.ACTIVE_UNIFORMS); i++) {
      const name = gl.getActiveUniform(program, i).name;
      uniforms[name] = gl.getUniformLocation(program, name);
    }
    return { program, uniforms };
  }

  texture2d(format, width, height, filter) {
    const gl = this.gl, texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    gl.texStorage2D(gl.TEXTURE_2D, 1, format, width, height);
    for (const [name, value] of [[gl.TEXTURE_MIN_FILTER, filter], [gl.TEXTURE_MAG_FILTER, filter],
                                 [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) {
      gl.texParameteri(gl.TEXTURE_2D, name, value);
    }
    return texture;
  }

  /** Feature maps: ``channels`` channels at width x height, a layer per four. */
  featureArray(width, height, channels) {
    const gl = this.gl, texture = gl.createTexture(), layers = Math.ceil(channels / 4);
    gl.bindTexture(gl.TEXTURE_2D_ARRAY, texture);
    gl.texStorage3D(gl.TEXTURE_2D_ARRAY, 1, this.format, width, height, layers);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    return { texture, width, height, layers };
  }

  /** A model's weights as textures (see CONV); the model's parsed tensors can then be dropped. */
  upload(model) {
    const gl = this.gl, weights = {};
    for (const [name, conv] of Object.entries(model.convs)) {
      const inGroups = Math.ceil(conv.inp / 4), outGroups = Math.ceil(conv.out / 4), taps = conv.k * conv.k;
      const width = taps * inGroups * 4 + 1, data = new Float32Array(width * outGroups * 4);
      for (let o = 0; o < conv.out; o++) {
        const row = (o >> 2) * width, j = o & 3;
        for (let c = 0; c < conv.inp; c++) {
          for (let tap = 0; tap < taps; tap++) {
            data[(row + (tap * inGroups + (c >> 2)) * 4 + j) * 4 + (c & 3)] = conv.weight[(o * conv.inp + c) * taps + tap];
          }
        }
        data[(row + width - 1) * 4 + j] = conv.bias[o];
      }
      const texture = this.texture2d(gl.RGBA32F, width, outGroups, gl.NEAREST);
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, width, outGroups, gl.RGBA, gl.FLOAT, data);
      weights[name] = { texture, inGroups, outGroups, k: conv.k };
    }
    return { version: model.version, scale: model.scale, hparams: model.hparams, weights };
  }

  release(network) {
    for (const { texture } of Object.values(network.weights)) this.gl.deleteTexture(texture);
  }

  /** The feature maps for frames of width x height through ``network`` (kept while these stay the same). */
  buffers(network, width, height) {
    const { channels, scale } = network.hparams, key = `${width}x${height}:${channels}:${scale}`;
    if (key !== this.arraysKey) {
      for (const array of Object.values(this.arrays || {})) this.gl.deleteTexture(array.texture);
      const first = scale === 3 ? 3 : 2;
      this.arrays = { y: this.featureArray(width, height, 1), head: this.featureArray(width, height, channels),
                      a: this.featureArray(width, height, channels), b: this.featureArray(width, height, channels),
                      t: this.featureArray(width, height, channels),
                      wide: this.featureArray(width, height, channels * first * first),
                      up: this.featureArray(width * first, height * first, channels),
                      residual: this.featureArray(width * scale, height * scale, 1) };
      if (scale === 4) {
        this.arrays.wide2 = this.featureArray(width * 2, height * 2, channels * 4);
        this.arrays.up2 = this.featureArray(width * 4, height * 4, channels);
      }
      this.arraysKey = key;
    }
    return this.arrays;
  }

  target(array, layer) {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.framebuffer);
    gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, array.texture, 0, layer);
    gl.viewport(0, 0, array.width, array.height);
  }

  bind(unit, target, texture) {
    const gl = this.gl;
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(target, texture);
  }

  conv(weights, input, output, { relu = false, skip = null, skipScale = 1.0 } = {}) {
    const gl = this.gl, { program, uniforms } = this.programs.conv;
    gl.useProgram(program);
    this.bind(0, gl.TEXTURE_2D_ARRAY, input.texture);
    this.bind(1, gl.TEXTURE_2D, weights.texture);
    this.bind(2, gl.TEXTURE_2D_ARRAY, (skip || input).texture);
    gl.uniform1i(uniforms.u_in, 0);
    gl.uniform1i(uniforms.u_weights, 1);
    gl.uniform1i(uniforms.u_skip, 2);
    gl.uniform1i(uniforms.u_inGroups, weights.inGroups);
    gl.uniform1i(uniforms.u_k, weights.k);
    gl.uniform1i(uniforms.u_relu, relu ? 1 : 0);
    gl.uniform1i(uniforms.u_hasSkip, skip ? 1 : 0);
    gl.uniform1f(uniforms.u_skipScale, skipScale);
    for (let group = 0; group < weights.outGroups; group++) {
      this.target(output, group);
      gl.uniform1i(uniforms.u_group, group);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }
  }

  shuffle(input, output, r, channels) {
    const gl = this.gl, { program, uniforms } = this.programs.shuffle;
    gl.useProgram(program);
    this.bind(0, gl.TEXTURE_2D_ARRAY, input.texture);
    gl.uniform1i(uniforms.u_in, 0);
    gl.uniform1i(uniforms.u_r, r);
    gl.uniform1i(uniforms.u_channels, channels);
    for (let group = 0; group < output.layers; group++) {
      this.target(output, group);
      gl.uniform1i(uniforms.u_group, group);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }
  }

  /** F-EDSR on the luma in ``arrays.y``: its output, before the bicubic skip, in ``arrays.residual``. */
  network(network, arrays) {
    const { weights: w, hparams: h } = network;
    this.gl.bindVertexArray(this.vao);
    this.conv(w.head, arrays.y, arrays.head);
    let x = arrays.head, spare = arrays.a;
    for (let b = 0; b < h.blocks; b++) {
      this.conv(w[`body.${b}.conv1`], x, arrays.t, { relu: true });
      this.conv(w[`body.${b}.conv2`], arrays.t, spare, { skip: x, skipScale: h.res_scale });
      [x, spare] = [spare, x === arrays.head ? arrays.b : x];
    }
    this.conv(w[`body.${h.blocks}`], x, spare, { skip: arrays.head });
    const first = h.scale === 3 ? 3 : 2;
    this.conv(w["upsample.0"], spare, arrays.wide);
    this.shuffle(arrays.wide, arrays.up, first, h.channels);
    let features = arrays.up;
    if (h.scale === 4) {
      this.conv(w["upsample.2"], arrays.up, arrays.wide2);
      this.shuffle(arrays.wide2, arrays.up2, 2, h.channels);
      features = arrays.up2;
    }
    this.conv(w.tail, features, arrays.residual);
  }

  compose(network, arrays, mode, width, height) {
    const gl = this.gl, { program, uniforms } = this.programs.compose;
    gl.useProgram(program);
    gl.bindVertexArray(this.vao);
    if (arrays) {
      this.bind(0, gl.TEXTURE_2D_ARRAY, arrays.residual.texture);
      this.bind(1, gl.TEXTURE_2D_ARRAY, arrays.y.texture);
    }
    this.bind(2, gl.TEXTURE_2D, this.picture);
    gl.uniform1i(uniforms.u_residual, 0);
    gl.uniform1i(uniforms.u_y, 1);
    gl.uniform1i(uniforms.u_picture, 2);
    gl.uniform1i(uniforms.u_scale, network ? network.scale : 1);
    gl.uniform1i(uniforms.u_mode, mode);
    gl.uniform1i(uniforms.u_network, network ? 1 : 0);
    gl.uniform1i(uniforms.u_bicubicSkip, network && network.hparams.bicubic_skip ? 1 : 0);
    gl.uniform2i(uniforms.u_size, width, height);
    gl.viewport(0, 0, width, height);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  /** A frame (a VideoFrame, or the video element) into the picture texture, ``plane`` (its Y plane:
   *  {data, offset, stride}, or null) into the plane texture; its size. */
  uploadPicture(frame, width, height, plane) {
    const gl = this.gl;
    if (width !== this.pictureSize[0] || height !== this.pictureSize[1]) {
      gl.deleteTexture(this.picture);
      gl.deleteTexture(this.plane);
      this.picture = this.texture2d(gl.RGBA8, width, height, gl.LINEAR);
      this.plane = this.texture2d(gl.R8, width, height, gl.NEAREST);
      this.pictureSize = [width, height];
    }
    gl.bindTexture(gl.TEXTURE_2D, this.picture);
    gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, frame);
    if (plane) {
      gl.bindTexture(gl.TEXTURE_2D, this.plane);
      gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
      gl.pixelStorei(gl.UNPACK_ROW_LENGTH, plane.stride);
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, width, height, gl.RED, gl.UNSIGNED_BYTE, plane.data, plane.offset);
      gl.pixelStorei(gl.UNPACK_ROW_LENGTH, 0);
    }
  }

  /** A frame onto the canvas, through ``network`` (luma from ``plane`` where given, else from the
   *  picture), or (null) scaled ``scale`` times bilinearly; with ``capture``, the output luma
   *  (u_mode 0) is read back too. */
  drawFrame(frame, width, height, plane, network, scale, capture = false) {
    this.uploadPicture(frame, width, height, plane);
    const gl = this.gl, canvas = gl.canvas;
    const out = [width * scale, height * scale];
    if (canvas.width !== out[0] || canvas.height !== out[1]) [canvas.width, canvas.height] = out;
    let arrays = null;
    if (network) {
      arrays = this.buffers(network, width, height);
      const { program, uniforms } = this.programs.luma;
      gl.useProgram(program);
      gl.bindVertexArray(this.vao);
      this.bind(2, gl.TEXTURE_2D, this.picture);
      this.bind(3, gl.TEXTURE_2D, this.plane);
      gl.uniform1i(uniforms.u_picture, 2);
      gl.uniform1i(uniforms.u_plane, 3);
      gl.uniform1i(uniforms.u_fromPlane, plane ? 1 : 0);
      this.target(arrays.y, 0);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
      this.network(network, arrays);
      this.sync(arrays.residual);
    }
    const luma = capture && network ? this.readLuma(network, arrays, out) : null;
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.compose(network, arrays, 1, out[0], out[1]);
    return { out, luma };
  }

  /** The output luma (u_mode 0) of the network's last run, read back: 8 bits, row 0 at the top. */
  readLuma(network, arrays, out) {
    const gl = this.gl;
    if (this.output) gl.deleteTexture(this.output);
    this.output = this.texture2d(gl.RGBA8, out[0], out[1], gl.NEAREST);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, this.output, 0);
    this.compose(network, arrays, 0, out[0], out[1]);
    const rgba = new Uint8Array(4 * out[0] * out[1]);
    gl.readPixels(0, 0, out[0], out[1], gl.RGBA, gl.UNSIGNED_BYTE, rgba);
    return rgba.filter((_, i) => i % 4 === 0);
  }

  /** Wait for the GPU to finish the network: read one texel of its output back. */
  sync(array) {
    const gl = this.gl;
    this.target(array, 0);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.FLOAT, new Float32Array(4));
  }

  /** ``y`` (8-bit luma, width x height, row 0 at the top) through ``network``: the output luma, 8 bits. */
  runY(network, y, width, height) {
    const gl = this.gl, arrays = this.buffers(network, width, height), planar = new Float32Array(4 * width * height);
    for (let i = 0; i < y.length; i++) planar[4 * i] = y[i] / 255;
    gl.bindTexture(gl.TEXTURE_2D_ARRAY, arrays.y.texture);
    gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, 0, 0, 0, 0, width, height, 1, gl.RGBA, gl.FLOAT, planar);
    this.network(network, arrays);
    const out = [width * network.scale, height * network.scale];
    return { width: out[0], height: out[1], y: this.readLuma(network, arrays, out) };
  }
}

/* ---- the view ---------------------------------------------------------------------------------- */

const params = new URLSearchParams(location.search);

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function setStat(text) {
  const cell = document.querySelector('[data-stat="websr"]');
  if (cell) cell.textContent = text;
}

function describe() {
  const m = websr.model;
  const parts = [m ? `v${m.version} (fedsr ${m.hparams.channels} ch, ${m.hparams.blocks} block${m.hparams.blocks === 1 ? "" : "s"}, x${m.scale})`
    : "no model: the browser's scaling"];
  if (m && websr.times.length > 1) {
    const spanS = (websr.times[websr.times.length - 1][0] - websr.times[0][0]) / 1000;
    const sorted = websr.times.map(([, ms]) => ms).sort((a, b) => a - b);
    parts.push(`${((websr.times.length - 1) / Math.max(spanS, 1e-3)).toFixed(1)} fps, `
               + `${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms/frame`);
  }
  if (websr.fallback) parts.push(websr.fallback);
  if (websr.planeless) parts.push(websr.planeless);
  if (websr.message) parts.push(websr.message);
  setStat(parts.join("; "));
}

/** Whether the network keeps up with the video: the median of the last frames' times within the budget. */
function keepsUp() {
  if (params.get("websr") === "always" || websr.times.length < TIMED_FRAMES) return true;
  const budget = Number(params.get("websr-budget-ms")) || 1000 * window.srPlayer.frameS;
  const sorted = websr.times.map(([, ms]) => ms).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] <= budget;
}

const PLANAR = ["I420", "I420A", "I422", "I444", "NV12"];  // VideoFrame formats whose first plane is Y

/** The video's current frame as a VideoFrame (WebCodecs) and its Y plane copied out ({data, offset,
 *  stride}), or the video element and null where the browser has no VideoFrame or gives no planes. */
async function currentFrame(video) {
  let frame = null;
  if (window.VideoFrame && !websr.planeless) {
    try {
      frame = new VideoFrame(video);
    } catch (error) {
      frame = null;
    }
  }
  if (!frame) return { frame: video, width: video.videoWidth, height: video.videoHeight, plane: null };
  const width = frame.displayWidth, height = frame.displayHeight;
  if (!PLANAR.includes(frame.format) || width !== frame.visibleRect.width || height !== frame.visibleRect.height) {
    websr.planeless = `frames in ${frame.format}: luma from the browser's RGB, approximate`;
    return { frame, width, height, plane: null };
  }
  const data = new Uint8Array(frame.allocationSize());
  const [layout] = await frame.copyTo(data);
  return { frame, width, height, plane: { data, offset: layout.offset, stride: layout.stride } };
}

async function drawFrame(video) {
  const network = websr.fallback ? null : websr.model;
  const started = performance.now();
  const { frame, width, height, plane } = await currentFrame(video);
  const capture = websr.captured === false;
  let drawn;
  try {
    drawn = websr.engine.drawFrame(frame, width, height, plane, network,
                                   websr.model ? websr.model.scale : websr.scale || 2, capture);
  } finally {
    if (frame !== video) frame.close();
  }
  if (capture) {
    const gl = websr.engine.gl, [w, h] = drawn.out, rgba = new Uint8Array(4 * w * h);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, rgba);
    websr.captured = { width: w, height: h, rgba: base64(rgba), y: drawn.luma && base64(drawn.luma),
                       version: network ? network.version : null, plane: !!plane };
  }
  if (!network) return;
  const now = performance.now();
  websr.frames += 1;
  websr.times.push([now, now - started]);
  if (websr.times.length > TIMED_FRAMES) websr.times.shift();
  if (!keepsUp()) {
    websr.fallback = `too slow for this video (over ${(1000 * window.srPlayer.frameS).toFixed(0)} ms a frame): `
                     + "showing the browser's scaling";
    describe();
  }
}

async function fetchModel(doc) {
  const version = doc.model.version;
  try {
    const response = await fetch(doc.model.url);  // a versioned file: the HTTP cache may keep it
    if (!response.ok) throw new Refused(`HTTP ${response.status}`);
    const parsed = parseModel(await response.arrayBuffer(), doc.scale);
    const network = websr.engine.upload({ ...parsed, version });
    const previous = websr.model;
    websr.model = network;  // the next frame runs it
    websr.times = [];
    websr.fallback = "";
    websr.message = "";
    if (previous) websr.engine.release(previous);
  } catch (error) {
    if (!(error instanceof Refused)) throw error;
    websr.refused = version;
    websr.message = `model v${version} refused: ${error.message}`
                    + (websr.model ? `; v${websr.model.version} runs on` : "");
  }
  describe();
}

async function pollModel() {
  try {
    const response = await fetch(MODEL_DOC, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const doc = await response.json();
    websr.scale = doc.scale;
    const version = doc.model && doc.model.version;
    if (version && version !== websr.refused && (!websr.model || websr.model.version !== version)) {
      await fetchModel(doc);
    } else if (!doc.model && !websr.model) {
      websr.message = `no model yet (${doc.reason || "none published"})`;
      describe();
    }
  } catch (error) {
    websr.message = `${MODEL_DOC} unavailable: ${error.message}`;
    describe();
  }
  setTimeout(pollModel, MODEL_EVERY_MS);
}

/** Test and benchmark entry: a luma plane (base64, width x height) through the model on air, by the view's
 *  shaders; {width, height, y (base64)} of the output luma. */
websr.runY = (y64, width, height) => {
  if (!websr.model) throw new Error("no model on air");
  const y = Uint8Array.from(atob(y64), (c) => c.charCodeAt(0));
  const out = websr.engine.runY(websr.model, y, width, height);
  return { width: out.width, height: out.height, y: base64(out.y), version: websr.model.version };
};

/** Have the next frame drawn read back into srWebSR.captured: the canvas (rgba, rows bottom-up), the
 *  output luma (y, null without a network), the model version, and whether the luma came from the
 *  decoder's Y plane. */
websr.captureNext = () => { websr.captured = false; };

function start() {
  const player = window.srPlayer, lr = player.layers.get("lr");
  if (!lr) {
    setStat("not available: the stream has no low-res rendition");
    return;
  }
  const canvas = document.createElement("canvas");
  try {
    websr.engine = new Engine(canvas, params.get("websr-precision") === "fp16" ? "fp16" : "fp32");
  } catch (error) {
    setStat(`not available: ${error.message}`);
    return;
  }
  player.addLayer("websr", "SR in this browser", canvas);
  if (params.get("view") === "websr") document.querySelector('#views [data-view="websr"]').click();
  const video = lr.element;
  let busy = false;  // a frame's Y plane is being copied out: a frame that comes meanwhile is skipped
  const step = () => {
    video.requestVideoFrameCallback(step);
    if (busy || video.readyState < 2 || !video.videoWidth) return;
    busy = true;
    drawFrame(video).catch((error) => setStat(`stopped: ${error.message}`)).finally(() => { busy = false; });
  };
  video.requestVideoFrameCallback(step);
  setInterval(describe, 1000);
  pollModel();
}

if (window.srPlayer && window.srPlayer.addLayer) start();
else window.addEventListener("srplayer-ready", start, { once: true });

// The separable layer's forward (inference, and a training step's forward) in one pass: depthwise (depth
// multiplier 1) into a cache-resident tile, then the pointwise GEMM on
// pre-packed weights with bias and activation applied in its store, float32,
// NHWC. Threads come from PyTorch's own pool (at::parallel_for), so
// torch.set_num_threads governs this kernel as it does every torch op.
//
// Compiled on first use by native/__init__.py; every function needing AVX2/FMA is
// compiled for those only (target attribute) and called only after
// sepconv_native_supported() said the CPU has them.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t MR = 6;   // rows per micro-kernel call
constexpr int64_t NR = 16;  // columns per packed weight panel (two AVX registers)
constexpr int64_t KC = 1024; // GEMM depth per pass (a 1024 x NR block is 64 KiB, in L2): one pass up to K = 1024

// Parameters, in the order native/__init__.py packs them into one int64 array.
struct Layer {
  int64_t n, h, w, c, kh, kw, sh, sw, rh, rw, pad_top, pad_left, oh, ow, nout, act, stream;
};
enum Activation : int64_t { kNone = 0, kRelu = 1, kRelu6 = 2 };

struct Operands {
  const float* x;      // [n, h, w, c]
  const float* dw;     // [kh, kw, c]
  const float* packed; // [ceil(nout / NR), c, NR], zero-padded columns
  const float* bias;   // [nout] or null
  float* y;            // [n * oh * ow, nout]
  const float* zeros;  // c zeros: the padded pixel, so 0 * w still enters the sum as in TF
};

constexpr int64_t kMaxTaps = 64;  // ops sends larger kernels down the PyTorch path

// One output pixel, all channels, from its taps' input pixels xs[t]; taps in
// order, each a fused multiply-add onto the running sum from zero.
__attribute__((target("avx2,fma"))) void depthwise_pixel(const Layer& L, const float* const* xs,
                                                         const float* dw, float* dst) {
  const int64_t taps = L.kh * L.kw;
  int64_t ch = 0;
  for (; ch + 32 <= L.c; ch += 32) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t t = 0; t < taps; ++t) {
      const float* xp = xs[t] + ch;
      const float* wp = dw + t * L.c + ch;
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(xp), _mm256_loadu_ps(wp), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 8), _mm256_loadu_ps(wp + 8), s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 16), _mm256_loadu_ps(wp + 16), s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 24), _mm256_loadu_ps(wp + 24), s3);
    }
    _mm256_storeu_ps(dst + ch, s0);
    _mm256_storeu_ps(dst + ch + 8, s1);
    _mm256_storeu_ps(dst + ch + 16, s2);
    _mm256_storeu_ps(dst + ch + 24, s3);
  }
  for (; ch + 8 <= L.c; ch += 8) {
    __m256 s = _mm256_setzero_ps();
    for (int64_t t = 0; t < taps; ++t)
      s = _mm256_fmadd_ps(_mm256_loadu_ps(xs[t] + ch), _mm256_loadu_ps(dw + t * L.c + ch), s);
    _mm256_storeu_ps(dst + ch, s);
  }
  for (; ch < L.c; ++ch) {
    float s = 0.0f;
    for (int64_t t = 0; t < taps; ++t) s = std::fma(xs[t][ch], dw[t * L.c + ch], s);
    dst[ch] = s;
  }
}

// Output pixels [ox0, ox1) of output row (img, oy), any kernel and padding.
__attribute__((target("avx2,fma"))) void depthwise_span(const Layer& L, const Operands& op,
                                                        int64_t img, int64_t oy, int64_t ox0,
                                                        int64_t ox1, float* dst) {
  const float* rows_in[kMaxTaps];  // per ky: the input row, or null where it is padding
  const float* xs[kMaxTaps];       // per tap: the input pixel, or the zero pixel
  for (int64_t ky = 0; ky < L.kh; ++ky) {
    const int64_t iy = oy * L.sh - L.pad_top + ky * L.rh;
    rows_in[ky] = iy >= 0 && iy < L.h ? op.x + (img * L.h + iy) * L.w * L.c : nullptr;
  }
  for (int64_t ox = ox0; ox < ox1; ++ox, dst += L.c) {
    for (int64_t kx = 0; kx < L.kw; ++kx) {
      const int64_t ix = ox * L.sw - L.pad_left + kx * L.rw;
      const bool inside = ix >= 0 && ix < L.w;
      for (int64_t ky = 0; ky < L.kh; ++ky)
        xs[ky * L.kw + kx] = inside && rows_in[ky] != nullptr ? rows_in[ky] + ix * L.c : op.zeros;
    }
    depthwise_pixel(L, xs, op.dw, dst);
  }
}

// As depthwise_span for a 3x3 kernel whose every tap is inside the input:
// channel block by channel block, the nine weight vectors stay in registers
// while the block runs along the row. Same order of operations, same bits.
// Used for up to 32 channels: with more, the three input rows no longer stay
// in L1 across the blocks and depthwise_pixel is faster (measured).
__attribute__((target("avx2,fma"))) void depthwise_3x3_inside(const Layer& L, const Operands& op,
                                                              int64_t img, int64_t oy,
                                                              int64_t ox0, int64_t ox1,
                                                              float* dst) {
  if (ox0 >= ox1) return;
  const float* origin =
      op.x + ((img * L.h + oy * L.sh - L.pad_top) * L.w + ox0 * L.sw - L.pad_left) * L.c;
  int64_t off[9];
  for (int64_t t = 0; t < 9; ++t) off[t] = ((t / 3) * L.rh * L.w + (t % 3) * L.rw) * L.c;
  const int64_t step = L.sw * L.c, count = ox1 - ox0;
  int64_t ch = 0;
  for (; ch + 8 <= L.c; ch += 8) {
    const float* w = op.dw + ch;
    const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + L.c),
                 w2 = _mm256_loadu_ps(w + 2 * L.c), w3 = _mm256_loadu_ps(w + 3 * L.c),
                 w4 = _mm256_loadu_ps(w + 4 * L.c), w5 = _mm256_loadu_ps(w + 5 * L.c),
                 w6 = _mm256_loadu_ps(w + 6 * L.c), w7 = _mm256_loadu_ps(w + 7 * L.c),
                 w8 = _mm256_loadu_ps(w + 8 * L.c);
    const float* p = origin + ch;
    float* d = dst + ch;
    for (int64_t i = 0; i < count; ++i, p += step, d += L.c) {
      __m256 s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[0]), w0, _mm256_setzero_ps());
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[1]), w1, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[2]), w2, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[3]), w3, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[4]), w4, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[5]), w5, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[6]), w6, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[7]), w7, s);
      s = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[8]), w8, s);
      _mm256_storeu_ps(d, s);
    }
  }
  for (; ch < L.c; ++ch) {
    const float* p = origin + ch;
    for (int64_t i = 0; i < count; ++i, p += step) {
      float s = 0.0f;
      for (int64_t t = 0; t < 9; ++t) s = std::fma(p[off[t]], op.dw[t * L.c + ch], s);
      dst[i * L.c + ch] = s;
    }
  }
}

// Depthwise output of output pixels [r0, r1) into a[(r - r0) * c + ch],
// output row by output row; a 3x3 kernel's pixels away from the padding
// take depthwise_3x3_inside.
__attribute__((target("avx2,fma"))) void depthwise_rows(const Layer& L, const Operands& op,
                                                        int64_t r0, int64_t r1, float* a) {
  for (int64_t r = r0; r < r1;) {
    const int64_t img = r / (L.oh * L.ow), oy = (r / L.ow) % L.oh, ox = r % L.ow;
    const int64_t ox_end = std::min(L.ow, ox + (r1 - r));
    float* dst = a + (r - r0) * L.c;
    int64_t lo = ox_end, hi = ox_end;  // the pixels whose taps are all inside: [lo, hi)
    const int64_t iy = oy * L.sh - L.pad_top;
    if (L.kh == 3 && L.kw == 3 && L.c <= 32 && iy >= 0 && iy + 2 * L.rh < L.h) {
      const int64_t first = (L.pad_left + L.sw - 1) / L.sw;
      const int64_t last_ix = L.w - 1 - 2 * L.rw + L.pad_left;  // of the leftmost tap
      const int64_t end = last_ix < 0 ? 0 : last_ix / L.sw + 1;
      lo = std::clamp(first, ox, ox_end);
      hi = std::clamp(end, lo, ox_end);
    }
    depthwise_span(L, op, img, oy, ox, lo, dst);
    depthwise_3x3_inside(L, op, img, oy, lo, hi, dst + (lo - ox) * L.c);
    depthwise_span(L, op, img, oy, hi, ox_end, dst + (hi - ox) * L.c);
    r += ox_end - ox;
  }
}

__attribute__((target("avx2,fma"))) inline __m256 activate(__m256 v, int64_t act) {
  // max(0, v) / min(6, v) return v when v is NaN, as torch.relu and clamp do.
  if (act == kNone) return v;
  v = _mm256_max_ps(_mm256_setzero_ps(), v);
  return act == kRelu6 ? _mm256_min_ps(_mm256_set1_ps(6.0f), v) : v;
}

// C[rows < MR, cols <= NR] (+)= A[rows, kc] @ B[kc, NR]; on the last pass add
// the bias and activate. Rows past `rows` recompute row 0 and are not stored.
__attribute__((target("avx2,fma"))) inline void store_row(float* c, __m256 v0, __m256 v1,
                                                           __m256 bias0, __m256 bias1,
                                                           int64_t act, bool stream) {
  v0 = activate(_mm256_add_ps(v0, bias0), act);
  v1 = activate(_mm256_add_ps(v1, bias1), act);
  if (stream) {  // an output larger than the cache: no read-for-ownership of its lines
    _mm256_stream_ps(c, v0);
    _mm256_stream_ps(c + 8, v1);
  } else {
    _mm256_storeu_ps(c, v0);
    _mm256_storeu_ps(c + 8, v1);
  }
}

// What one micro-kernel call computes besides the product.
struct Tile {
  bool first, last;    // the first / last pass over K: start from zero / add bias and activate
  const float* bias;   // NR biases of this panel, or null
  int64_t cols, act;   // valid columns (<= NR); the activation
  bool stream;         // non-temporal stores (last pass only: earlier ones are read back)
};

// C[R, cols] (+)= A[R, kc] @ B[kc, NR] (B one packed panel), with the tile's
// epilogue. R is a template argument so that every accumulator index is a
// constant and the 2R accumulators live in registers.
template <int R>
__attribute__((target("avx2,fma"))) void micro_kernel(int64_t kc, const float* a, int64_t lda,
                                                      const float* b, const Tile& t, float* c,
                                                      int64_t ldc) {
  __m256 lo[R], hi[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * NR), b1 = _mm256_loadu_ps(b + k * NR + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i * lda + k);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
  }
  __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
  if (t.last && t.bias != nullptr && t.cols == NR) {
    bias0 = _mm256_loadu_ps(t.bias);
    bias1 = _mm256_loadu_ps(t.bias + 8);
  } else if (t.last && t.bias != nullptr) {  // a last, narrower panel: no read past the bias
    alignas(32) float tile[NR] = {};
    std::memcpy(tile, t.bias, t.cols * sizeof(float));
    bias0 = _mm256_load_ps(tile);
    bias1 = _mm256_load_ps(tile + 8);
  }
  const int64_t act = t.last ? t.act : kNone;
  if (t.first && t.cols == NR) {  // the common case: straight from registers to C
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) store_row(c + i * ldc, lo[i], hi[i], bias0, bias1, act, t.stream);
    return;
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
    alignas(32) float row[NR] = {};
    if (!t.first) std::memcpy(row, ci, t.cols * sizeof(float));  // partial sums of earlier passes
    _mm256_store_ps(row, activate(_mm256_add_ps(_mm256_add_ps(_mm256_load_ps(row), lo[i]), bias0), act));
    _mm256_store_ps(row + 8, activate(_mm256_add_ps(_mm256_add_ps(_mm256_load_ps(row + 8), hi[i]), bias1), act));
    std::memcpy(ci, row, t.cols * sizeof(float));
  }
}

void micro_kernel_rows(int64_t rows, int64_t kc, const float* a, int64_t lda, const float* b,
                       const Tile& t, float* c, int64_t ldc) {
  switch (rows) {
    case 6: return micro_kernel<6>(kc, a, lda, b, t, c, ldc);
    case 5: return micro_kernel<5>(kc, a, lda, b, t, c, ldc);
    case 4: return micro_kernel<4>(kc, a, lda, b, t, c, ldc);
    case 3: return micro_kernel<3>(kc, a, lda, b, t, c, ldc);
    case 2: return micro_kernel<2>(kc, a, lda, b, t, c, ldc);
    default: return micro_kernel<1>(kc, a, lda, b, t, c, ldc);
  }
}

// Output rows [row0, row0 + rows) and weight panels [p0, p1), from A = their
// depthwise output (lda = c).
__attribute__((target("avx2,fma"))) void gemm_rows(const Layer& L, const Operands& op,
                                                   const float* a, int64_t row0, int64_t rows,
                                                   int64_t p0, int64_t p1) {
  for (int64_t k0 = 0; k0 < L.c; k0 += KC) {
    const int64_t kc = std::min(KC, L.c - k0);
    for (int64_t p = p0; p < p1; ++p) {
      const float* b = op.packed + (p * L.c + k0) * NR;
      const bool last = k0 + kc == L.c;
      const Tile tile{k0 == 0, last, op.bias == nullptr ? nullptr : op.bias + p * NR,
                      std::min(NR, L.nout - p * NR), L.act, last && L.stream != 0};
      for (int64_t i = 0; i < rows; i += MR) {
        micro_kernel_rows(std::min(MR, rows - i), kc, a + i * L.c + k0, L.c, b, tile,
                          op.y + (row0 + i) * L.nout + p * NR, L.nout);
      }
    }
  }
}

// Rows per fused tile: the tile's depthwise output stays within ~128 KiB (L2).
int64_t tile_rows(const Layer& L) {
  const int64_t rows = (int64_t{32} << 10) / std::max<int64_t>(L.c, 1);
  return std::clamp<int64_t>(rows / MR * MR, MR, 32 * MR);
}

void forward(const Layer& L, const Operands& op) {
  const int64_t m = L.n * L.oh * L.ow, panels = (L.nout + NR - 1) / NR;
  const int64_t threads = at::get_num_threads();
  int64_t tile = tile_rows(L), tiles = (m + tile - 1) / tile;
  if (tiles >= 8 * threads) {
    // Enough tiles for every thread: each depthwise tile goes straight into its
    // GEMM. Each thread gets as many tiles: 1x56x56x128 at 2 threads took
    // 0.72 ms as 17 tiles and 0.67 ms as 18 smaller ones.
    tiles = (tiles + threads - 1) / threads * threads;
    tile = ((m + tiles - 1) / tiles + MR - 1) / MR * MR;
    tiles = (m + tile - 1) / tile;
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> a(tile * L.c);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t row0 = t * tile, rows = std::min(tile, m - row0);
        depthwise_rows(L, op, row0, row0 + rows, a.data());
        gemm_rows(L, op, a.data(), row0, rows, 0, panels);
      }
      if (L.stream) _mm_sfence();  // streamed stores visible before the region ends
    });
    return;
  }
  // Few rows (small images at batch 1): the depthwise output of every row,
  // then the GEMM split over both rows and weight panels.
  std::vector<float> a(m * L.c);
  at::parallel_for(0, m, 1, [&](int64_t begin, int64_t end) {
    depthwise_rows(L, op, begin, end, a.data() + begin * L.c);
  });
  // Row tiles as tall as the few rows allow: each weight panel is read from
  // memory once per tile, and the weights are the larger operand here.
  const int64_t gemm_tiles = (m + 16 * MR - 1) / (16 * MR);
  const int64_t gemm_tile = ((m + gemm_tiles - 1) / gemm_tiles + MR - 1) / MR * MR;
  const int64_t group = std::max<int64_t>(1, panels / (4 * at::get_num_threads()));
  const int64_t groups = (panels + group - 1) / group;
  at::parallel_for(0, gemm_tiles * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / groups, g = item % groups;
      const int64_t row0 = t * gemm_tile, rows = std::min(gemm_tile, m - row0);
      gemm_rows(L, op, a.data() + row0 * L.c, row0, rows, g * group,
                std::min(panels, (g + 1) * group));
    }
    if (L.stream) _mm_sfence();
  });
}

}  // namespace

extern "C" {

int sepconv_native_supported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// 0 on success, 1 if a work buffer could not be allocated: no C++ exception
// may cross into Python (it would end the process).
int sepconv_separable_forward(const float* x, const float* dw, const float* packed,
                              const float* bias, float* y, const int64_t* params) {
  Layer L;
  std::memcpy(&L, params, sizeof(Layer));
  try {
    const std::vector<float> zeros(L.c, 0.0f);
    forward(L, Operands{x, dw, packed, bias, y, zeros.data()});
  } catch (const std::exception&) {  // std::bad_alloc, also rethrown from a worker thread
    return 1;
  }
  return 0;
}

}  // extern "C"

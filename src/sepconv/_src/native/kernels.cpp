// The separable layer's forward (inference, and a training step's forward) in one pass: depthwise (depth
// multiplier 1) into a cache-resident tile, then the pointwise GEMM on
// pre-packed weights with bias and activation applied in its store, float32,
// NHWC; and a training step's backward, image by image (see backward()).
// Threads come from PyTorch's own pool (at::parallel_for), so
// torch.set_num_threads governs this kernel as it does every torch op.
//
// Compiled on first use by native/__init__.py; every function needing AVX2/FMA is
// compiled for those only (target attribute) and called only after
// sepconv_native_supported() said the CPU has them.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
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
  // A gradient's gather (backward), where a padded tap stands for an output
  // that does not exist: it adds nothing, not 0 * w (NaN for a non-finite w).
  bool padding_adds_nothing = false;
};

constexpr int64_t kMaxTaps = 64;  // ops sends larger kernels down the PyTorch path

// dst[ch] = sum over taps t of xs[t][ch] * ws[t][ch] for c channels: taps in
// order, each a fused multiply-add onto the running sum from zero. Four
// channel blocks at once, so that four sums are in flight, not one chain.
__attribute__((target("avx2,fma"))) void sum_of_products(int64_t taps, int64_t c,
                                                         const float* const* xs,
                                                         const float* const* ws, float* dst) {
  int64_t ch = 0;
  for (; ch + 32 <= c; ch += 32) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t t = 0; t < taps; ++t) {
      const float* xp = xs[t] + ch;
      const float* wp = ws[t] + ch;
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
  for (; ch + 8 <= c; ch += 8) {
    __m256 s = _mm256_setzero_ps();
    for (int64_t t = 0; t < taps; ++t)
      s = _mm256_fmadd_ps(_mm256_loadu_ps(xs[t] + ch), _mm256_loadu_ps(ws[t] + ch), s);
    _mm256_storeu_ps(dst + ch, s);
  }
  for (; ch < c; ++ch) {
    float s = 0.0f;
    for (int64_t t = 0; t < taps; ++t) s = std::fma(xs[t][ch], ws[t][ch], s);
    dst[ch] = s;
  }
}

// Output pixels [ox0, ox1) of output row (img, oy), any kernel and padding;
// kPaddingAddsNothing is op.padding_adds_nothing, a constant in each copy.
template <bool kPaddingAddsNothing>
__attribute__((target("avx2,fma"))) void depthwise_span(const Layer& L, const Operands& op,
                                                        int64_t img, int64_t oy, int64_t ox0,
                                                        int64_t ox1, float* dst) {
  const float* rows_in[kMaxTaps];  // per ky: the input row, or null where it is padding
  const float* xs[kMaxTaps];       // per tap: the input pixel, or the zero pixel
  const float* ws[kMaxTaps];       // per tap: its weights
  for (int64_t t = 0; t < L.kh * L.kw; ++t) ws[t] = op.dw + t * L.c;
  for (int64_t ky = 0; ky < L.kh; ++ky) {
    const int64_t iy = oy * L.sh - L.pad_top + ky * L.rh;
    rows_in[ky] = iy >= 0 && iy < L.h ? op.x + (img * L.h + iy) * L.w * L.c : nullptr;
  }
  for (int64_t ox = ox0; ox < ox1; ++ox, dst += L.c) {
    for (int64_t kx = 0; kx < L.kw; ++kx) {
      const int64_t ix = ox * L.sw - L.pad_left + kx * L.rw;
      const bool inside = ix >= 0 && ix < L.w;
      for (int64_t ky = 0; ky < L.kh; ++ky) {
        const int64_t t = ky * L.kw + kx;
        const bool reads = inside && rows_in[ky] != nullptr;
        xs[t] = reads ? rows_in[ky] + ix * L.c : op.zeros;
        if (kPaddingAddsNothing) ws[t] = reads ? op.dw + t * L.c : op.zeros;
      }
    }
    sum_of_products(L.kh * L.kw, L.c, xs, ws, dst);
  }
}

// The nine taps of P output pixels, p + j * step, onto P sums in tap order
// (each a fused multiply-add, from zero), stored to d + j * ldd.
template <int P>
__attribute__((target("avx2,fma"), always_inline)) inline void taps_3x3(const float* p,
                                                                       int64_t step,
                                                                       const int64_t* off,
                                                                       const __m256* w, float* d,
                                                                       int64_t ldd) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) {
    const float* q = p + off[t];
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q), w[t], s0);
    if (P > 1) s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + step), w[t], s1);
    if (P > 2) s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 2 * step), w[t], s2);
    if (P > 3) s3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 3 * step), w[t], s3);
  }
  _mm256_storeu_ps(d, s0);
  if (P > 1) _mm256_storeu_ps(d + ldd, s1);
  if (P > 2) _mm256_storeu_ps(d + 2 * ldd, s2);
  if (P > 3) _mm256_storeu_ps(d + 3 * ldd, s3);
}

// As depthwise_span for a 3x3 kernel whose every tap is inside the input, any
// stride and rate: channel block by channel block, the nine weight vectors
// stay in registers while the block runs along the row, four pixels at a time
// (independent sums, each pixel's address one register apart). Same order of
// operations, same bits. Used for up to 32 channels: with more, the three
// input rows no longer stay in L1 across the blocks and sum_of_products is
// faster (measured). Takes every pixel of [ox0, ox1): returns ox1.
__attribute__((target("avx2,fma"))) int64_t depthwise_3x3_by_block(const Layer& L,
                                                                   const Operands& op, int64_t img,
                                                                   int64_t oy, int64_t ox0,
                                                                   int64_t ox1, float* dst) {
  const float* origin =
      op.x + ((img * L.h + oy * L.sh - L.pad_top) * L.w + ox0 * L.sw - L.pad_left) * L.c;
  int64_t off[9];
  for (int64_t t = 0; t < 9; ++t) off[t] = ((t / 3) * L.rh * L.w + (t % 3) * L.rw) * L.c;
  const int64_t step = L.sw * L.c, count = ox1 - ox0;
  int64_t ch = 0;
  for (; ch + 8 <= L.c; ch += 8) {
    __m256 w[9];
#pragma GCC unroll 9
    for (int t = 0; t < 9; ++t) w[t] = _mm256_loadu_ps(op.dw + t * L.c + ch);
    const float* p = origin + ch;
    float* d = dst + ch;
    int64_t i = 0;
    for (; i + 4 <= count; i += 4, p += 4 * step, d += 4 * L.c) taps_3x3<4>(p, step, off, w, d, L.c);
    for (; i < count; ++i, p += step, d += L.c) taps_3x3<1>(p, step, off, w, d, L.c);
  }
  for (; ch < L.c; ++ch) {
    const float* p = origin + ch;
    for (int64_t i = 0; i < count; ++i, p += step) {
      float s = 0.0f;
      for (int64_t t = 0; t < 9; ++t) s = std::fma(p[off[t]], op.dw[t * L.c + ch], s);
      dst[i * L.c + ch] = s;
    }
  }
  return ox1;
}

// As depthwise_span for a 3x3 kernel whose every tap is inside the input, any
// stride and rate, two output pixels at a time: each weight vector is loaded
// once for both, and eight sums are in flight (sum_of_products: one load of
// a weight per multiply-add, four sums). Same order of operations, same bits.
// Returns the first pixel it left (at most one is left).
__attribute__((target("avx2,fma"))) int64_t depthwise_3x3_by_pairs(const Layer& L,
                                                                   const Operands& op, int64_t img,
                                                                   int64_t oy, int64_t ox0,
                                                                   int64_t ox1, float* dst) {
  const int64_t step = L.sw * L.c;
  const float* p =
      op.x + ((img * L.h + oy * L.sh - L.pad_top) * L.w + ox0 * L.sw - L.pad_left) * L.c;
  int64_t off[9];
  for (int64_t t = 0; t < 9; ++t) off[t] = ((t / 3) * L.rh * L.w + (t % 3) * L.rw) * L.c;
  int64_t ox = ox0;
  for (; ox + 2 <= ox1; ox += 2, p += 2 * step, dst += 2 * L.c) {
    int64_t ch = 0;
    for (; ch + 32 <= L.c; ch += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
             b3 = a0;
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) {
        const float* q = p + off[t] + ch;
        const float* w = op.dw + t * L.c + ch;
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8),
                     w2 = _mm256_loadu_ps(w + 16), w3 = _mm256_loadu_ps(w + 24);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q), w0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8), w1, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16), w2, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 24), w3, a3);
        b0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + step), w0, b0);
        b1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + step + 8), w1, b1);
        b2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + step + 16), w2, b2);
        b3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + step + 24), w3, b3);
      }
      float* d = dst + ch;
      _mm256_storeu_ps(d, a0);
      _mm256_storeu_ps(d + 8, a1);
      _mm256_storeu_ps(d + 16, a2);
      _mm256_storeu_ps(d + 24, a3);
      _mm256_storeu_ps(d + L.c, b0);
      _mm256_storeu_ps(d + L.c + 8, b1);
      _mm256_storeu_ps(d + L.c + 16, b2);
      _mm256_storeu_ps(d + L.c + 24, b3);
    }
    for (; ch + 8 <= L.c; ch += 8) {
      __m256 a = _mm256_setzero_ps(), b = a;
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) {
        const __m256 w = _mm256_loadu_ps(op.dw + t * L.c + ch);
        a = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[t] + ch), w, a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(p + off[t] + step + ch), w, b);
      }
      _mm256_storeu_ps(dst + ch, a);
      _mm256_storeu_ps(dst + L.c + ch, b);
    }
    for (; ch < L.c; ++ch) {
      float a = 0.0f, b = 0.0f;
      for (int t = 0; t < 9; ++t) {
        a = std::fma(p[off[t] + ch], op.dw[t * L.c + ch], a);
        b = std::fma(p[off[t] + step + ch], op.dw[t * L.c + ch], b);
      }
      dst[ch] = a;
      dst[L.c + ch] = b;
    }
  }
  return ox;
}

// Input column J feeds output pixel J - KX * RW through tap KX, if that is
// one of the P pixels.
template <int P, int RW, int J, int KX>
__attribute__((target("avx2,fma"), always_inline)) inline void column_tap(__m256 v,
                                                                         const __m256* w,
                                                                         __m256* s) {
  constexpr int pixel = J - KX * RW;
  if constexpr (pixel >= 0 && pixel < P) s[pixel] = _mm256_fmadd_ps(v, w[KX], s[pixel]);
}

// One kernel row's three taps onto the sums of P output pixels, the input
// columns (x + j * c) in order: each is loaded once for every tap that reads
// it, and every pixel's taps still arrive in tap order.
template <int P, int RW, int J = 0>
__attribute__((target("avx2,fma"), always_inline)) inline void kernel_row_3(const float* x,
                                                                           int64_t c,
                                                                           const __m256* w,
                                                                           __m256* s) {
  if constexpr (J < P + 2 * RW) {
    const __m256 v = _mm256_loadu_ps(x + J * c);
    column_tap<P, RW, J, 0>(v, w, s);
    column_tap<P, RW, J, 1>(v, w, s);
    column_tap<P, RW, J, 2>(v, w, s);
    kernel_row_3<P, RW, J + 1>(x, c, w, s);
  }
}

// The depthwise output of P neighbouring output pixels of a 3x3 kernel with
// column stride 1, all of whose taps are inside the input: p is the first
// pixel's top-left tap, the kernel rows are row_step apart. Per channel block,
// P independent sums of nine fused multiply-adds in tap order from zero, as
// sum_of_products (same bits); eight sums in flight cover the multiply-add's
// latency on both pipes. The input row that the next output row adds (at
// p + ahead) is brought into L2 on the way: the hardware prefetchers do not
// follow the 3 * (P + 2) columns read at once.
template <int P, int RW>
__attribute__((target("avx2,fma"))) void pixels_3x3(const float* p, int64_t row_step,
                                                    int64_t ahead, int64_t c, const float* dw,
                                                    float* d) {
  int64_t ch = 0;
  for (; ch + 8 <= c; ch += 8) {
    if (ch % 16 == 0) {  // once per cache line
#pragma GCC unroll 8
      for (int i = 0; i < P; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(p + ahead + i * c + ch), _MM_HINT_T1);
    }
    __m256 s[P];
    for (auto& v : s) v = _mm256_setzero_ps();
#pragma GCC unroll 3
    for (int ky = 0; ky < 3; ++ky) {
      const float* wk = dw + ky * 3 * c + ch;
      const __m256 w[3] = {_mm256_loadu_ps(wk), _mm256_loadu_ps(wk + c),
                           _mm256_loadu_ps(wk + 2 * c)};
      kernel_row_3<P, RW>(p + ky * row_step + ch, c, w, s);
    }
    for (int i = 0; i < P; ++i) _mm256_storeu_ps(d + i * c + ch, s[i]);
  }
  for (; ch < c; ++ch) {
    for (int i = 0; i < P; ++i) {
      float sum = 0.0f;
      for (int t = 0; t < 9; ++t)
        sum = std::fma(p[t / 3 * row_step + (i + t % 3 * RW) * c + ch], dw[t * c + ch], sum);
      d[i * c + ch] = sum;
    }
  }
}

// As depthwise_span for a 3x3 kernel with column stride 1 whose every tap is
// inside the input, for output pixels [ox0, ox1), 8 and then 4 at a time;
// returns the first pixel it left (fewer than 4 are left).
template <int RW>
__attribute__((target("avx2,fma"))) int64_t depthwise_3x3_by_pixels(const Layer& L,
                                                                 const Operands& op, int64_t img,
                                                                 int64_t oy, int64_t ox0,
                                                                 int64_t ox1, float* dst) {
  const float* p = op.x + ((img * L.h + oy * L.sh - L.pad_top) * L.w + ox0 - L.pad_left) * L.c;
  const int64_t row_step = L.rh * L.w * L.c, ahead = (L.sh + 2 * L.rh) * L.w * L.c;
  int64_t ox = ox0;
  for (; ox + 8 <= ox1; ox += 8, p += 8 * L.c, dst += 8 * L.c)
    pixels_3x3<8, RW>(p, row_step, ahead, L.c, op.dw, dst);
  if (ox + 4 <= ox1) {
    pixels_3x3<4, RW>(p, row_step, ahead, L.c, op.dw, dst);
    ox += 4;
  }
  return ox;
}

using InsidePath = int64_t (*)(const Layer&, const Operands&, int64_t, int64_t, int64_t, int64_t,
                               float*);

// The most of the input lines that pixels_3x3<8, RW> reads per channel block
// (one per kernel row and input column: 3 x (8 + 2 * RW)) which fall in one
// set of a 32 KiB 8-way L1 (64 sets of 64 bytes). Each line is read again by
// the next channel block; where one set holds more lines than it has ways,
// beside the output's and the prefetch's, they evict each other first. That
// happens where a pixel is a multiple of 512 bytes (128 channels): at rate 1,
// 6 lines in a set at 56x56x128, 9 at 28x28x256, 15 at 14x14x512, 30 at
// 7x7x1024.
int64_t lines_per_l1_set(const Layer& L) {
  int64_t in_set[64] = {}, most = 0;
  for (int64_t ky = 0; ky < 3; ++ky) {
    for (int64_t j = 0; j < 8 + 2 * L.rw; ++j) {
      const int64_t set = (ky * L.rh * L.w + j) * L.c * 4 / 64 % 64;
      most = std::max(most, ++in_set[set]);
    }
  }
  return most;
}

// The path for the pixels of a 3x3 kernel away from the padding, or null.
// Each measured as the whole forward against sum_of_products per pixel,
// interleaved. depthwise_3x3_by_pixels: 112x112x32 -> 64 from 14.8 to 13.1
// ms and 19x19x728 from 68.6 to 66.6 ms (batch 16, 1 thread, median of 27
// calls); later (median of 7 rounds) 56x56x128 from 19.4 to 18.0 ms (batch
// 1: 1.19 to 1.06 ms) and 28x28x256 from 16.8 to 16.4 ms, but 14x14x512 and
// 7x7x1024 1-3% slower, where 15 and 30 of its lines fall in one L1 set
// (lines_per_l1_set; 6 and 9 at 56x56x128 and 28x28x256). Before the GEMM's
// row dispatchers were always inlined, it had measured 1-3.7% slower on
// 56x56x128 and 28x28x256 too. With column stride 2 it was 1.3-2x slower
// than sum_of_products at 64 and 128 channels and than
// depthwise_3x3_by_block at 16, so strided layers do not take it.
//
// depthwise_3x3_by_pairs, where neither of the others runs (median of 7
// rounds): batch 16, 2 threads, 16x112x112x64 s2 5.39 -> 5.17 ms,
// 16x56x56x128 -> 256 s2 4.60 -> 4.55, 14x14x512 8.01 -> 7.95, 7x7x1024
// 7.72 -> 7.67; batch 1, 1 thread, 1-4% faster on the same layers; training
// steps within -2.4% / +0.4%.
InsidePath inside_path(const Layer& L) {
  if (L.kh != 3 || L.kw != 3) return nullptr;
  if (L.sw == 1 && (L.rw == 1 || L.rw == 2) && lines_per_l1_set(L) <= 9)
    return L.rw == 1 ? depthwise_3x3_by_pixels<1> : depthwise_3x3_by_pixels<2>;
  return L.c <= 32 ? depthwise_3x3_by_block : depthwise_3x3_by_pairs;
}

// Depthwise output of output pixels [r0, r1) into a[(r - r0) * c + ch],
// output row by output row; the pixels of a 3x3 kernel away from the padding
// take its inside path.
__attribute__((target("avx2,fma"))) void depthwise_rows(const Layer& L, const Operands& op,
                                                        int64_t r0, int64_t r1, float* a) {
  const InsidePath inside = inside_path(L);
  const auto span = op.padding_adds_nothing ? depthwise_span<true> : depthwise_span<false>;
  for (int64_t r = r0; r < r1;) {
    const int64_t img = r / (L.oh * L.ow), oy = (r / L.ow) % L.oh, ox = r % L.ow;
    const int64_t ox_end = std::min(L.ow, ox + (r1 - r));
    float* dst = a + (r - r0) * L.c;
    int64_t lo = ox_end, hi = ox_end;  // the pixels whose taps are all inside: [lo, hi)
    const int64_t iy = oy * L.sh - L.pad_top;
    if (inside != nullptr && iy >= 0 && iy + 2 * L.rh < L.h) {
      const int64_t first = (L.pad_left + L.sw - 1) / L.sw;
      const int64_t last_ix = L.w - 1 - 2 * L.rw + L.pad_left;  // of the leftmost tap
      const int64_t end = last_ix < 0 ? 0 : last_ix / L.sw + 1;
      lo = std::clamp(first, ox, ox_end);
      hi = std::clamp(end, lo, ox_end);
    }
    span(L, op, img, oy, ox, lo, dst);
    const int64_t left = lo < hi ? inside(L, op, img, oy, lo, hi, dst + (lo - ox) * L.c) : lo;
    span(L, op, img, oy, left, ox_end, dst + (left - ox) * L.c);
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

// Brings the bytes [begin, end) into L2 a few cache lines per step(),
// spread over `steps` steps of work that reads no memory.
class Prefetcher {
 public:
  Prefetcher() = default;
  Prefetcher(const void* begin, const void* end, int64_t steps)
      : next_(static_cast<const char*>(begin)), end_(static_cast<const char*>(end)),
        per_step_(steps > 0 ? ((end_ - next_) / 64 + steps - 1) / steps : 0) {}

  void step() {
    for (int64_t i = 0; i < per_step_ && next_ < end_; ++i, next_ += 64)
      _mm_prefetch(next_, _MM_HINT_T1);
  }

 private:
  const char* next_ = nullptr;
  const char* end_ = nullptr;
  int64_t per_step_ = 0;
};

// What one micro-kernel call computes besides the product.
struct Tile {
  bool first, last;    // the first / last pass over K: start from zero / add bias and activate
  const float* bias;   // NR biases of this panel, or null
  int64_t cols, act;   // valid columns (<= NR); the activation
  bool stream;         // non-temporal stores (last pass only: earlier ones are read back)
};

// lo[i] | hi[i] = sum over k < kc of A[i, k] * B[k, 0:16] (added onto them
// where not `zero`), B's rows ldb apart, A[i, k] at a[i * a_row + k * a_col].
// Inlined into each micro-kernel, where R, and there a_row or a_col, are
// constants: every accumulator index is a constant and the 2R accumulators
// live in registers.
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void panel_product(
    int64_t kc, const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
    __m256* lo, __m256* hi, bool zero = true) {
  if (zero) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i * a_row + k * a_col);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
  }
}

// Calls f with std::integral_constant<int, rows> (rows <= MR): the row count
// as a template argument for the micro-kernels. Always inlined: where GCC
// called it instead, copying the captures for each micro-kernel call,
// 16x112x112x32 -> 64 (depth 32: short micro-kernel calls) ran 16-20% slower.
template <typename F>
__attribute__((always_inline)) inline void with_rows(int64_t rows, F f) {
  switch (rows) {
    case 6: return f(std::integral_constant<int, 6>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

// C[R, cols] (+)= A[R, kc] @ B[kc, NR] (B one packed panel), with the tile's
// epilogue. A's rows are lda apart; with kPanelA, A is in NR-column panels
// instead, lda apart: A[i, k] at a[k / NR * lda + i * NR + k % NR]. Either
// way each sum runs in k order.
template <int R, bool kPanelA>
__attribute__((target("avx2,fma"), always_inline)) inline void micro_kernel(
    int64_t kc, const float* a, int64_t lda, const float* b, const Tile& t, float* c, int64_t ldc) {
  __m256 lo[R], hi[R];
  if constexpr (kPanelA) {
    panel_product<R>(std::min(NR, kc), a, NR, 1, b, NR, lo, hi);
    for (int64_t k0 = NR; k0 < kc; k0 += NR)
      panel_product<R>(std::min(NR, kc - k0), a + k0 / NR * lda, NR, 1, b + k0 * NR, NR, lo, hi,
                       false);
  } else {
    panel_product<R>(kc, a, lda, 1, b, NR, lo, hi);
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

// C[rows, cols] (+)= A[rows, kc] @ B[kc, NR] (B one packed panel) as
// micro_kernel, in row blocks; ahead->step() (unless null) before each block.
// As many blocks as MR-row ones would take, their heights differing by at most
// one: 49 rows are 4 blocks of 6 and 5 of 5, not 8 of 6 and one of 1, which
// reads the whole weight panel for one row (in 1x7x7x1024 -> 1024 the 1-row
// calls took 8% of the GEMM's samples, `perf`). Each row's sums do not depend
// on its block. The micro-kernels are inlined here, so that a panel is one
// call, not one per block: 16x112x112x32 -> 64 (depth 32) 5-9% faster at
// batch 16. Written out as below: the same loop through a helper struct or
// a lambda measured 1.5-14% slower there.
template <bool kPanelA, typename Ahead>
__attribute__((target("avx2,fma"))) void micro_kernel_column(int64_t rows, int64_t kc,
                                                             const float* a, int64_t lda,
                                                             const float* b, const Tile& t,
                                                             float* c, int64_t ldc, Ahead* ahead) {
  const int64_t blocks = (rows + MR - 1) / MR;
  if (blocks == 0) return;
  const int64_t height = rows / blocks, taller = rows % blocks;  // `taller` blocks get one more
  for (int64_t block = 0, i = 0; block < blocks; ++block) {
    const int64_t r = height + (block < taller ? 1 : 0);
    if (ahead != nullptr) ahead->step();
    const float* ai = a + i * (kPanelA ? NR : lda);
    float* ci = c + i * ldc;
    switch (r) {
      case 6: micro_kernel<6, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
      case 5: micro_kernel<5, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
      case 4: micro_kernel<4, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
      case 3: micro_kernel<3, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
      case 2: micro_kernel<2, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
      default: micro_kernel<1, kPanelA>(kc, ai, lda, b, t, ci, ldc); break;
    }
    i += r;
  }
}

// The bytes of the input rows that output rows [row0, row1) read (every
// image's output rows counted in order); empty if row1 <= row0.
struct Bytes {
  const char* begin = nullptr;
  const char* end = nullptr;
};
Bytes input_rows(const Layer& L, const float* x, int64_t row0, int64_t row1) {
  if (row1 <= row0) return {};
  const auto input_row = [&](int64_t out_row, int64_t ky) {
    const int64_t iy = out_row % L.oh * L.sh - L.pad_top + ky * L.rh;
    return x + (out_row / L.oh * L.h + std::clamp<int64_t>(iy, 0, L.h - 1)) * L.w * L.c;
  };
  return {reinterpret_cast<const char*>(input_row(row0 / L.ow, 0)),
          reinterpret_cast<const char*>(input_row((row1 - 1) / L.ow, L.kh - 1) + L.w * L.c)};
}

// Output rows [row0, row0 + rows) and weight panels [p0, p1), from A = their
// depthwise output (lda = c). With kAhead, the bytes `ahead` are brought into
// L2 on the way, a few cache lines per micro-kernel call; a template
// argument, as that check in the loop of every layer's GEMM made
// 16x112x112x32 -> 64 (depth 32: short micro-kernel calls) 4-5% slower.
template <bool kAhead>
__attribute__((target("avx2,fma"))) void gemm_rows(const Layer& L, const Operands& op,
                                                   const float* a, int64_t row0, int64_t rows,
                                                   int64_t p0, int64_t p1, Bytes ahead = {}) {
  Prefetcher prefetcher;
  if constexpr (kAhead)
    prefetcher = Prefetcher(ahead.begin, ahead.end,
                            (p1 - p0) * ((rows + MR - 1) / MR) * ((L.c + KC - 1) / KC));
  for (int64_t k0 = 0; k0 < L.c; k0 += KC) {
    const int64_t kc = std::min(KC, L.c - k0);
    for (int64_t p = p0; p < p1; ++p) {
      const float* b = op.packed + (p * L.c + k0) * NR;
      const bool last = k0 + kc == L.c;
      const Tile tile{k0 == 0, last, op.bias == nullptr ? nullptr : op.bias + p * NR,
                      std::min(NR, L.nout - p * NR), L.act, last && L.stream != 0};
      micro_kernel_column<false>(rows, kc, a + k0, L.c, b, tile, op.y + row0 * L.nout + p * NR,
                                 L.nout, kAhead ? &prefetcher : nullptr);
    }
  }
}

// Runs worker(next) once on each of torch's threads. Each thread gets an equal,
// contiguous share of the items [0, items); next() returns its next own item
// and, once those are done, takes the last item left in another thread's share
// (then -1). A thread the host deschedules thus holds up at most the item it
// has. Only for work whose result does not depend on which thread does an item.
template <typename Worker>
void share_items(int64_t items, const Worker& worker) {
  // A share is one word, its first item in the low half and its end in the
  // high half, so that the owner's and a thief's claims are one
  // compare-and-swap each. Beyond 2^31 items, they go out in rounds.
  constexpr int64_t kRound = int64_t{1} << 31;
  for (int64_t base = 0; base < items; base += kRound) {
    const int64_t count = std::min(kRound, items - base);
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), count);
    struct alignas(64) Share { std::atomic<uint64_t> range; };
    std::vector<Share> shares(threads);
    for (int64_t t = 0; t < threads; ++t) {
      const uint64_t first = count * t / threads, end = count * (t + 1) / threads;
      shares[t].range.store(first | end << 32, std::memory_order_relaxed);
    }
    const auto claim = [&](int64_t t, bool from_front) {
      uint64_t range = shares[t].range.load(std::memory_order_relaxed);
      for (;;) {
        const uint64_t first = range & 0xffffffffu, end = range >> 32;
        if (first >= end) return int64_t{-1};
        const uint64_t taken = from_front ? (first + 1) | end << 32 : first | (end - 1) << 32;
        if (shares[t].range.compare_exchange_weak(range, taken, std::memory_order_relaxed))
          return base + static_cast<int64_t>(from_front ? first : end - 1);
      }
    };
    at::parallel_for(0, threads, 1, [&](int64_t self, int64_t) {
      const auto next = [&]() {
        for (int64_t i = 0; i < threads; ++i) {
          const int64_t item = claim((self + i) % threads, i == 0);
          if (item >= 0) return item;
        }
        return int64_t{-1};
      };
      worker(next);
    });
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
    // 0.72 ms as 17 tiles and 0.67 ms as 18 smaller ones. Tiles need not be
    // whole micro-kernel blocks (micro_kernel_column): rounding them up to 6 rows
    // left the last one short, 1-5% of a batch-1 call on five layers.
    tiles = (tiles + threads - 1) / threads * threads;
    tile = (m + tiles - 1) / tiles;
    tiles = (m + tile - 1) / tile;
    // The GEMM reads no memory: the next tile's input rows are brought into
    // L2 during it, rather than waited for by its depthwise stage. Not where
    // the 8-pixel path runs, which brings in each next input row itself
    // (there it measured 0-5% slower, 16x112x112x32 -> 64).
    const InsidePath inside = inside_path(L);
    const bool prefetch_tiles =
        inside != depthwise_3x3_by_pixels<1> && inside != depthwise_3x3_by_pixels<2>;
    share_items(tiles, [&](const auto& next) {
      std::vector<float> a(tile * L.c);
      for (int64_t t = next(); t >= 0; t = next()) {
        const int64_t row0 = t * tile, rows = std::min(tile, m - row0);
        depthwise_rows(L, op, row0, row0 + rows, a.data());
        const int64_t next_end = std::min(m, row0 + rows + tile);
        if (prefetch_tiles)
          gemm_rows<true>(L, op, a.data(), row0, rows, 0, panels,
                          input_rows(L, op.x, row0 + rows, next_end));
        else
          gemm_rows<false>(L, op, a.data(), row0, rows, 0, panels);
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
  // memory once per tile, and the weights are the larger operand here. Tiles
  // of equal height: 19x19x728 as 96, 96, 96 and 73 rows gave one thread 192
  // rows and the other 169.
  const int64_t gemm_tiles = (m + 16 * MR - 1) / (16 * MR);
  const int64_t gemm_tile = (m + gemm_tiles - 1) / gemm_tiles;
  const int64_t group = std::max<int64_t>(1, panels / (4 * at::get_num_threads()));
  const int64_t groups = (panels + group - 1) / group;
  share_items(gemm_tiles * groups, [&](const auto& next) {
    for (int64_t item = next(); item >= 0; item = next()) {
      const int64_t t = item / groups, g = item % groups;
      const int64_t row0 = t * gemm_tile, rows = std::min(gemm_tile, m - row0);
      gemm_rows<false>(L, op, a.data() + row0 * L.c, row0, rows, g * group,
                       std::min(panels, (g + 1) * group));
    }
    if (L.stream) _mm_sfence();
  });
}

// ---------------------------------------------------------------------------
// Backward of a training step, whole images per thread: a thread's input
// gradient writes never meet another thread's. Per row tile it recomputes the
// depthwise output (cache-resident), masks the output gradient by the
// activation, accumulates the pointwise and bias gradients, multiplies
// back through the pointwise weights into the image's depthwise-output
// gradient and adds the tile's part of the depthwise weights' gradient; per
// image, the input gradient follows. No intermediate makes a round trip
// through memory.
struct Gradients {
  const float* gy;        // [n * oh * ow, nout]: gradient of the output
  const float* y;         // [n * oh * ow, nout]: the output (after the activation)
  const float* packed_t;  // W^T panels [ceil(c / NR), nout, NR], zero-padded columns
  float* gx;              // [n, h, w, c]
  float* gdw;             // [kh * kw, c]
  float* gw;              // [c, nout]
  float* gb;              // [nout] or null
};

// C[R, NR] += A^T[R, kc] @ B[kc, NR] with A a row tile (A^T[i, k] at
// a[k * lda + i]) and B rows ldb apart: the pointwise weights' gradient,
// summed over kc rows.
template <int R>
__attribute__((target("avx2,fma"))) void micro_kernel_at_b(int64_t kc, const float* a,
                                                           int64_t lda, const float* b,
                                                           int64_t ldb, float* c, int64_t ldc) {
  __m256 lo[R], hi[R];
  panel_product<R>(kc, a, 1, lda, b, ldb, lo, hi);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
    _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), lo[i]));
    _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi[i]));
  }
}

__attribute__((always_inline)) inline void micro_kernel_at_b_rows(int64_t rows, int64_t kc,
                                                                   const float* a, int64_t lda,
                                                                   const float* b, int64_t ldb,
                                                                   float* c, int64_t ldc) {
  with_rows(rows, [&](auto r) { micro_kernel_at_b<decltype(r)::value>(kc, a, lda, b, ldb, c, ldc); });
}

// Column j of row r of gt (NR-column panels `panel` apart: at
// gt[j / NR * panel + r * NR + j % NR]) = the output gradient of output row
// row0 + r through the activation, as torch's threshold_backward /
// hardtanh_backward: zero where the output is <= 0 (relu6: or >= 6), the
// gradient elsewhere, NaN included. Accumulates the bias gradient (column
// sums) into gb.
__attribute__((target("avx2,fma"))) void activation_backward_rows(const Layer& L,
                                                                  const Gradients& g,
                                                                  int64_t row0, int64_t rows,
                                                                  float* gt, int64_t panel,
                                                                  float* gb) {
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* gy = g.gy + (row0 + r) * L.nout;
    const float* y = g.y + (row0 + r) * L.nout;
    float* dst = gt + r * NR;
    int64_t j = 0;
    for (; j + 8 <= L.nout; j += 8) {
      __m256 v = _mm256_loadu_ps(gy + j);
      if (L.act != kNone) {
        const __m256 out = _mm256_loadu_ps(y + j);
        __m256 pass = _mm256_cmp_ps(out, zero, _CMP_NLE_UQ);
        if (L.act == kRelu6) pass = _mm256_and_ps(pass, _mm256_cmp_ps(out, six, _CMP_NGE_UQ));
        v = _mm256_and_ps(pass, v);
      }
      _mm256_storeu_ps(dst + j / NR * panel + j % NR, v);
      _mm256_storeu_ps(gb + j, _mm256_add_ps(_mm256_loadu_ps(gb + j), v));
    }
    for (; j < L.nout; ++j) {
      const bool pass = L.act == kNone ||
                        (!(y[j] <= 0.0f) && (L.act != kRelu6 || !(y[j] >= 6.0f)));
      const float v = pass ? gy[j] : 0.0f;
      dst[j / NR * panel + j % NR] = v;
      gb[j] += v;
    }
  }
}

// The range [lo, hi) of output columns whose tap kx reads an input column
// inside the image (the others read padding, which contributes nothing).
void inside_columns(const Layer& L, int64_t kx, int64_t* lo, int64_t* hi) {
  const int64_t first = L.pad_left - kx * L.rw, last = L.w - 1 + L.pad_left - kx * L.rw;
  *lo = first <= 0 ? 0 : std::min(L.ow, (first + L.sw - 1) / L.sw);
  *hi = last < 0 ? 0 : std::clamp(last / L.sw + 1, *lo, L.ow);
}

// acc[ch] += sum over output columns [ox0, ox1) of drow (one output row of
// gd) times the input pixel that tap column kx reads in xrow (its input row).
// Four running sums: one would wait on each multiply-add's latency.
__attribute__((target("avx2,fma"))) void tap_gradient(const Layer& L, const float* drow,
                                                      const float* xrow, int64_t kx, int64_t ox0,
                                                      int64_t ox1, float* acc) {
  if (ox0 >= ox1) return;
  const int64_t step = L.sw * L.c;
  const float* xbase = xrow + (ox0 * L.sw - L.pad_left + kx * L.rw) * L.c;
  int64_t ch = 0;
  for (; ch + 8 <= L.c; ch += 8) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const float* d = drow + ox0 * L.c + ch;
    const float* xp = xbase + ch;
    int64_t ox = ox0;
    for (; ox + 4 <= ox1; ox += 4, d += 4 * L.c, xp += 4 * step) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(d), _mm256_loadu_ps(xp), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(d + L.c), _mm256_loadu_ps(xp + step), s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(d + 2 * L.c), _mm256_loadu_ps(xp + 2 * step), s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(d + 3 * L.c), _mm256_loadu_ps(xp + 3 * step), s3);
    }
    for (; ox < ox1; ++ox, d += L.c, xp += step)
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(d), _mm256_loadu_ps(xp), s0);
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    _mm256_storeu_ps(acc + ch, _mm256_add_ps(_mm256_loadu_ps(acc + ch), sum));
  }
  for (; ch < L.c; ++ch) {
    float sum = 0.0f;
    for (int64_t ox = ox0; ox < ox1; ++ox)
      sum = std::fma(drow[ox * L.c + ch], xbase[(ox - ox0) * step + ch], sum);
    acc[ch] += sum;
  }
}

// As tap_gradient for the three taps of a kernel row at once, over columns
// where all three read inside the image: each gradient vector is loaded once
// for three multiply-adds. acc: the three taps' sums, c apart.
__attribute__((target("avx2,fma"))) void three_tap_gradient(const Layer& L, const float* drow,
                                                            const float* xrow, int64_t ox0,
                                                            int64_t ox1, float* acc) {
  const int64_t step = L.sw * L.c, tap = L.rw * L.c;
  const float* xbase = xrow + (ox0 * L.sw - L.pad_left) * L.c;
  int64_t ch = 0;
  for (; ch + 8 <= L.c; ch += 8) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, b0 = a0, b1 = a0, b2 = a0;
    const float* d = drow + ox0 * L.c + ch;
    const float* xp = xbase + ch;
    int64_t ox = ox0;
    for (; ox + 2 <= ox1; ox += 2, d += 2 * L.c, xp += 2 * step) {
      const __m256 g0 = _mm256_loadu_ps(d), g1 = _mm256_loadu_ps(d + L.c);
      a0 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp), a0);
      a1 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp + tap), a1);
      a2 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp + 2 * tap), a2);
      b0 = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xp + step), b0);
      b1 = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xp + step + tap), b1);
      b2 = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xp + step + 2 * tap), b2);
    }
    if (ox < ox1) {
      const __m256 g0 = _mm256_loadu_ps(d);
      a0 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp), a0);
      a1 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp + tap), a1);
      a2 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xp + 2 * tap), a2);
    }
    float* out = acc + ch;
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), _mm256_add_ps(a0, b0)));
    _mm256_storeu_ps(out + L.c, _mm256_add_ps(_mm256_loadu_ps(out + L.c), _mm256_add_ps(a1, b1)));
    _mm256_storeu_ps(out + 2 * L.c,
                     _mm256_add_ps(_mm256_loadu_ps(out + 2 * L.c), _mm256_add_ps(a2, b2)));
  }
  for (; ch < L.c; ++ch)
    for (int64_t kx = 0; kx < 3; ++kx) {
      float sum = 0.0f;
      for (int64_t ox = ox0; ox < ox1; ++ox)
        sum = std::fma(drow[ox * L.c + ch], xbase[(ox - ox0) * step + kx * tap + ch], sum);
      acc[kx * L.c + ch] += sum;
    }
}

// gdw[tap * c + ch] += sum over output pixels [p0, p1) of one image (pixel
// oy * ow + ox) of gd (the image's depthwise-output gradient, [oh * ow, c])
// times the pixel of x (the image) the tap reads. Row by row and kernel row
// by kernel row, the sums in registers along the output row; for a 3-wide
// kernel, the columns where the three taps read inside the image take them
// at once (two loads per multiply-add become four per three), the others tap
// by tap.
void depthwise_weight_gradient(const Layer& L, const float* x, const float* gd, int64_t p0,
                               int64_t p1, float* gdw) {
  int64_t lo[kMaxTaps], hi[kMaxTaps];  // per kernel column: the output columns reading inside
  int64_t all_lo = 0, all_hi = L.ow;   // where every kernel column does
  for (int64_t kx = 0; kx < L.kw; ++kx) {
    inside_columns(L, kx, &lo[kx], &hi[kx]);
    all_lo = std::max(all_lo, lo[kx]);
    all_hi = std::min(all_hi, hi[kx]);
  }
  for (int64_t p = p0; p < p1;) {
    const int64_t oy = p / L.ow, ox0 = p % L.ow, ox1 = std::min(L.ow, ox0 + (p1 - p));
    const int64_t three_lo = std::max(all_lo, ox0), three_hi = std::min(all_hi, ox1);
    const bool three = L.kw == 3 && three_lo < three_hi;
    const float* drow = gd + oy * L.ow * L.c;
    for (int64_t ky = 0; ky < L.kh; ++ky) {
      const int64_t iy = oy * L.sh - L.pad_top + ky * L.rh;
      if (iy < 0 || iy >= L.h) continue;
      const float* xrow = x + iy * L.w * L.c;
      float* acc = gdw + ky * L.kw * L.c;
      if (three) three_tap_gradient(L, drow, xrow, three_lo, three_hi, acc);
      for (int64_t kx = 0; kx < L.kw; ++kx) {
        const int64_t from = std::max(lo[kx], ox0), to = std::min(hi[kx], ox1);
        if (three) {  // the columns three_tap_gradient left out
          tap_gradient(L, drow, xrow, kx, from, three_lo, acc + kx * L.c);
          tap_gradient(L, drow, xrow, kx, three_hi, to, acc + kx * L.c);
        } else {
          tap_gradient(L, drow, xrow, kx, from, to, acc + kx * L.c);
        }
      }
    }
    p += ox1 - ox0;
  }
}

// The input gradient in the strided case, where a pixel is read by few taps:
// for each input pixel, the sum over the taps that read it of the reading
// output pixel's gradient (gd) times the tap weight. Each pixel is written
// once, so gx needs no zeroing.
class StridedInputGradient {
 public:
  // Per input column ix, the kernel columns whose taps read it and the output
  // columns reading: kx_of_ / ox_of_[column_start_[ix] .. column_start_[ix + 1]).
  explicit StridedInputGradient(const Layer& L) : L_(L), column_start_(L.w + 1, 0) {
    for (int64_t ix = 0; ix < L.w; ++ix) {
      for (int64_t kx = 0; kx < L.kw; ++kx) {
        const int64_t span = ix + L.pad_left - kx * L.rw;
        if (span < 0 || span % L.sw != 0 || span / L.sw >= L.ow) continue;
        kx_of_.push_back(kx);
        ox_of_.push_back(span / L.sw);
      }
      column_start_[ix + 1] = static_cast<int64_t>(kx_of_.size());
    }
  }

  // Input rows [iy0, iy1) of one image into gx (row iy0 first).
  __attribute__((target("avx2,fma"))) void rows(const float* dw, const float* gd, int64_t iy0,
                                                int64_t iy1, float* gx) const {
    const Layer& L = L_;
    const float* from[kMaxTaps];  // per tap reading this pixel: the reading output pixel's gradient
    const float* weight[kMaxTaps];
    int64_t ky_of[kMaxTaps], oy_of[kMaxTaps];
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      int64_t rows = 0;  // the kernel rows whose taps read input row iy, and their output rows
      for (int64_t ky = 0; ky < L.kh; ++ky) {
        const int64_t span = iy + L.pad_top - ky * L.rh;
        if (span >= 0 && span % L.sh == 0 && span / L.sh < L.oh) {
          ky_of[rows] = ky;
          oy_of[rows++] = span / L.sh;
        }
      }
      for (int64_t ix = 0; ix < L.w; ++ix) {
        int64_t taps = 0;
        for (int64_t i = column_start_[ix]; i < column_start_[ix + 1]; ++i) {
          for (int64_t j = 0; j < rows; ++j) {
            from[taps] = gd + (oy_of[j] * L.ow + ox_of_[i]) * L.c;
            weight[taps++] = dw + (ky_of[j] * L.kw + kx_of_[i]) * L.c;
          }
        }
        sum_of_products(taps, L.c, from, weight, gx + ((iy - iy0) * L.w + ix) * L.c);
      }
    }
  }

 private:
  const Layer& L_;
  std::vector<int64_t> column_start_, kx_of_, ox_of_;
};

// Unstrided, the input gradient is a depthwise convolution of gd with the
// kernel flipped and the padding mirrored: the forward's own depthwise code
// computes it, each input pixel written once.
Layer input_gradient_layer(const Layer& L) {
  Layer t = L;
  t.n = 1;
  t.h = L.oh;
  t.w = L.ow;
  t.oh = L.h;
  t.ow = L.w;
  t.pad_top = (L.kh - 1) * L.rh - L.pad_top;
  t.pad_left = (L.kw - 1) * L.rw - L.pad_left;
  return t;
}

// The pointwise weights' gradient of one thread, gw[c, ldg] += depthwise^T @
// masked gradient. Row tiles are gathered into packed panels (depthwise
// transposed in MR-row blocks, the masked gradient in NR-column panels) until
// kDepth rows are there, then summed in one pass over gw: each of gw's
// elements is loaded and stored once per kDepth rows, however short the
// tiles, and every operand is read contiguously. The mask pass writes the
// masked gradient straight into its panels, and the `masked @ W^T` GEMM reads
// it there: copying it from a row-major tile cost up to 5% of a training step
// (16x112x112x64 s2), bits unchanged.
class WeightGradient {
 public:
  static constexpr int64_t kDepth = 384;
  static constexpr int64_t kBlocksPerPass = 16;  // 16 x MR rows x kDepth: ~150 KiB of A, in L2

  WeightGradient(const Layer& L, int64_t tile, int64_t ldg, float* gw)
      : c_(L.c), ldg_(ldg), tile_(tile), depth_((kDepth + tile - 1) / tile * tile),
        blocks_((L.c + MR - 1) / MR), panels_(ldg / NR), gw_(gw),
        a_(blocks_ * depth_ * MR), b_(panels_ * depth_ * NR) {}

  // Where the next tile's masked gradient goes: its row r, column j at
  // gradient_rows()[j / NR * panel_stride() + r * NR + j % NR].
  float* gradient_rows() { return b_.data() + used_ * NR; }
  int64_t panel_stride() const { return depth_ * NR; }

  // Adds a tile: d [rows, c] depthwise output; its masked gradient is at gradient_rows().
  void add(const float* d, int64_t rows) {
    const int64_t full = c_ / MR;  // blocks of MR channels: a copy of known size, inlined
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t ib = 0; ib < full; ++ib)
        std::memcpy(a_.data() + (ib * depth_ + used_ + r) * MR, d + r * c_ + ib * MR,
                    MR * sizeof(float));
      if (full < blocks_)
        std::memcpy(a_.data() + (full * depth_ + used_ + r) * MR, d + r * c_ + full * MR,
                    (c_ - full * MR) * sizeof(float));
    }
    used_ += rows;
    if (used_ + tile_ > depth_) flush();
  }

  void flush() {
    if (used_ == 0) return;
    for (int64_t ic = 0; ic < blocks_; ic += kBlocksPerPass)
      for (int64_t p = 0; p < panels_; ++p)
        for (int64_t ib = ic; ib < std::min(blocks_, ic + kBlocksPerPass); ++ib)
          micro_kernel_at_b_rows(std::min(MR, c_ - ib * MR), used_, a_.data() + ib * depth_ * MR,
                                 MR, b_.data() + p * depth_ * NR, NR,
                                 gw_ + ib * MR * ldg_ + p * NR, ldg_);
    used_ = 0;
  }

 private:
  const int64_t c_, ldg_, tile_, depth_, blocks_, panels_;
  float* const gw_;
  std::vector<float> a_, b_;
  int64_t used_ = 0;
};

// The backward's loads of a row tile's output, output gradient and input
// (rows [row0, row1) of the output), spread over `steps`.
struct TileAhead {
  Prefetcher gy, y, x;

  TileAhead(const Layer& L, const Operands& op, const Gradients& g, int64_t row0, int64_t row1,
            int64_t steps) {
    if (row1 <= row0) return;
    gy = Prefetcher(g.gy + row0 * L.nout, g.gy + row1 * L.nout, steps);
    y = Prefetcher(g.y + row0 * L.nout, g.y + row1 * L.nout, steps);
    const Bytes rows_in = input_rows(L, op.x, row0, row1);
    x = Prefetcher(rows_in.begin, rows_in.end, steps);
  }

  void step() {
    gy.step();
    y.step();
    x.step();
  }
};

// dst[0, count) = src[0, count) by non-temporal stores; dst 32-byte aligned,
// count a multiple of 8.
__attribute__((target("avx2,fma"))) void stream_copy(const float* src, int64_t count, float* dst) {
  for (int64_t i = 0; i < count; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
}

// From this size on an unstrided input gradient is streamed into memory (see backward_images).
constexpr int64_t kStreamInputGradientBytes = int64_t{20} << 20;

// One thread's images [begin, end); its weight and bias gradients are added
// to gw [c, ldg] (pointwise) and rest: [kh * kw, c] depthwise, then [ldg] bias.
__attribute__((target("avx2,fma"))) void backward_images(const Layer& L, const Operands& op,
                                                         const Gradients& g,
                                                         const float* flipped, int64_t begin,
                                                         int64_t end, float* gw, float* rest) {
  const int64_t pixels = L.oh * L.ow, image = L.h * L.w * L.c;
  const int64_t panels_out = (L.nout + NR - 1) / NR, ldg = panels_out * NR;
  const int64_t panels_c = (L.c + NR - 1) / NR;
  // Rows per tile: the tile's masked gradient and depthwise output stay
  // within ~256 KiB each, the image cut into tiles of equal height.
  const int64_t most = std::clamp<int64_t>((int64_t{64} << 10) / std::max(ldg, L.c), MR, 32 * MR);
  const int64_t tiles_per_image = (pixels + most - 1) / most;
  const int64_t tile = (pixels + tiles_per_image - 1) / tiles_per_image;
  float* gdw = rest;
  float* gb = gdw + L.kh * L.kw * L.c;
  const bool unstrided = L.sh == 1 && L.sw == 1;
  const Layer gather = input_gradient_layer(L);
  // gd: the depthwise output's gradient for a whole image, so that the input
  // gradient can read every neighbour of a pixel.
  std::vector<float> d(tile * L.c), gd(pixels * L.c);
  WeightGradient weight_gradient(L, tile, ldg, gw);
  const StridedInputGradient strided(L);
  // The input gradient a band of rows at a time. Unstrided and from 20 MiB
  // (most of the 32 MiB L3), each band goes into a buffer in L1 and from
  // there to gx by non-temporal stores, which do not first read each line of
  // gx from memory; smaller gradients and the strided gather measured no
  // faster that way.
  const int64_t band_rows = std::max<int64_t>(1, (int64_t{32} << 10) / (L.w * L.c * 4));
  const bool stream_gx = unstrided && L.n * image * 4 >= kStreamInputGradientBytes &&
                         reinterpret_cast<uintptr_t>(g.gx) % 32 == 0 && L.w * L.c % 8 == 0;
  std::vector<float> band(stream_gx ? band_rows * L.w * L.c : 0);
  for (int64_t img = begin; img < end; ++img) {
    for (int64_t row0 = img * pixels; row0 < (img + 1) * pixels; row0 += tile) {
      const int64_t rows = std::min(tile, (img + 1) * pixels - row0);
      depthwise_rows(L, op, row0, row0 + rows, d.data());
      float* gt = weight_gradient.gradient_rows();
      const int64_t panel = weight_gradient.panel_stride();
      activation_backward_rows(L, g, row0, rows, gt, panel, gb);
      // gd[rows, c] = masked gradient @ W^T. This GEMM reads no memory, so
      // the next tile's loads are issued during it, rather than waited for
      // when the tile starts (16x112x112x32 -> 64 step: 58.6 -> 55.4 ms at 1
      // thread, 30.7 -> 29.2 ms at 2).
      float* gd_rows = gd.data() + (row0 - img * pixels) * L.c;
      const int64_t next_end = std::min(row0 + rows + tile, end * pixels);
      TileAhead ahead(L, op, g, row0 + rows, next_end,
                      panels_c * ((rows + MR - 1) / MR) * ((L.nout + KC - 1) / KC));
      for (int64_t k0 = 0; k0 < L.nout; k0 += KC) {
        const int64_t kc = std::min(KC, L.nout - k0);
        for (int64_t p = 0; p < panels_c; ++p) {
          const Tile t{k0 == 0, k0 + kc == L.nout, nullptr, std::min(NR, L.c - p * NR), kNone,
                       false};
          micro_kernel_column<true>(rows, kc, gt + k0 / NR * panel, panel,
                                    g.packed_t + (p * L.nout + k0) * NR, t, gd_rows + p * NR, L.c,
                                    &ahead);
        }
      }
      // While the tile's input rows and gd rows are in cache: per image, this
      // pass read both back from L3 or memory.
      const int64_t p0 = row0 - img * pixels;
      depthwise_weight_gradient(L, op.x + img * image, gd.data(), p0, p0 + rows, gdw);
      weight_gradient.add(d.data(), rows);
    }
    for (int64_t iy0 = 0; iy0 < L.h; iy0 += band_rows) {
      const int64_t iy1 = std::min(L.h, iy0 + band_rows);
      float* gx = g.gx + img * image + iy0 * L.w * L.c;
      float* dst = stream_gx ? band.data() : gx;
      if (unstrided)
        depthwise_rows(gather, Operands{gd.data(), flipped, nullptr, nullptr, nullptr, op.zeros, true},
                       iy0 * L.w, iy1 * L.w, dst);
      else
        strided.rows(op.dw, gd.data(), iy0, iy1, dst);
      if (stream_gx) stream_copy(band.data(), (iy1 - iy0) * L.w * L.c, gx);
    }
  }
  weight_gradient.flush();
  if (stream_gx) _mm_sfence();  // streamed stores visible before the region ends
}

void backward(const Layer& L, const Operands& op, const Gradients& g) {
  const int64_t ldg = (L.nout + NR - 1) / NR * NR, taps = L.kh * L.kw;
  const int64_t gw_size = L.c * ldg, rest_size = taps * L.c + ldg;
  std::vector<float> flipped(taps * L.c);  // the kernel rotated by 180 degrees
  for (int64_t t = 0; t < taps; ++t)
    std::memcpy(flipped.data() + (taps - 1 - t) * L.c, op.dw + t * L.c, L.c * sizeof(float));
  // Each thread's sums, by the first image of its range. The first range sums
  // its weight gradient straight into the output where the layouts agree:
  // one [c, nout] buffer less (4 MiB at 1024 x 1024).
  const bool first_in_place = ldg == L.nout;
  std::vector<std::vector<float>> weights(L.n), rest(L.n);
  at::parallel_for(0, L.n, 1, [&](int64_t begin, int64_t end) {
    float* gw = g.gw;
    if (first_in_place && begin == 0) {
      std::memset(g.gw, 0, gw_size * sizeof(float));
    } else {
      weights[begin].assign(gw_size, 0.0f);
      gw = weights[begin].data();
    }
    rest[begin].assign(rest_size, 0.0f);
    backward_images(L, op, g, flipped.data(), begin, end, gw, rest[begin].data());
  });
  std::vector<const float*> gw_sums, rest_sums;
  for (int64_t i = 0; i < L.n; ++i) {
    if (!rest[i].empty()) rest_sums.push_back(rest[i].data());
    if (!weights[i].empty()) gw_sums.push_back(weights[i].data());
  }
  // dst[i] (+)= sums[t][from + i], added in image order.
  const auto add = [](const std::vector<const float*>& sums, bool onto, int64_t from,
                      int64_t count, float* dst) {
    size_t t = 0;
    if (!onto) std::memcpy(dst, sums[t++] + from, count * sizeof(float));
    for (; t < sums.size(); ++t)
      for (int64_t i = 0; i < count; ++i) dst[i] += sums[t][from + i];
  };
  // In parallel, straight into the output: 1024x1024 weights are 4 MiB per thread.
  at::parallel_for(0, L.c, 16, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch)
      add(gw_sums, first_in_place, ch * ldg, L.nout, g.gw + ch * L.nout);
  });
  add(rest_sums, false, 0, taps * L.c, g.gdw);
  if (g.gb != nullptr) add(rest_sums, false, taps * L.c, L.nout, g.gb);
}

// ---------------------------------------------------------------------------
// Weight panels: out[p, k, j] = b[k, p * NR + j] (zero past b's columns) for
// a [depth, cols] matrix b. The forward's B is the pointwise matrix m [c, nout]
// itself; the backward's is m^T, whose panels are 16-row blocks of m
// transposed: 8x8 register transposes, as torch's strided copy of m^T ran at
// a tenth of the memory bandwidth (1024x1024: 1.2 ms at 2 threads).

// Columns k0..k0 + 7 of eight rows r[i] become eight rows of eight.
__attribute__((target("avx2,fma"))) inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Panel p of m^T for m [rows, cols]: out[k, j] = m[p * NR + j, k].
__attribute__((target("avx2,fma"))) void pack_transposed_panel(const float* m, int64_t rows,
                                                               int64_t cols, int64_t p,
                                                               float* out) {
  const int64_t j0 = p * NR, valid = std::min(NR, rows - j0);
  int64_t k = 0;
  if (valid == NR) {
    for (; k + 8 <= cols; k += 8) {
      for (int64_t half = 0; half < 2; ++half) {
        __m256 r[8];
        for (int64_t i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(m + (j0 + half * 8 + i) * cols + k);
        transpose8(r);
        for (int64_t i = 0; i < 8; ++i) _mm256_storeu_ps(out + (k + i) * NR + half * 8, r[i]);
      }
    }
  }
  for (; k < cols; ++k)
    for (int64_t j = 0; j < NR; ++j) out[k * NR + j] = j < valid ? m[(j0 + j) * cols + k] : 0.0f;
}

void pack_panels(const float* m, int64_t rows, int64_t cols, bool transposed, float* out) {
  const int64_t depth = transposed ? cols : rows, width = transposed ? rows : cols;
  at::parallel_for(0, (width + NR - 1) / NR, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* panel = out + p * depth * NR;
      if (transposed) {
        pack_transposed_panel(m, rows, cols, p, panel);
        continue;
      }
      const int64_t valid = std::min(NR, cols - p * NR);
      for (int64_t k = 0; k < depth; ++k) {
        std::memcpy(panel + k * NR, m + k * cols + p * NR, valid * sizeof(float));
        std::fill(panel + k * NR + valid, panel + (k + 1) * NR, 0.0f);
      }
    }
  });
}

}  // namespace

extern "C" {

// The kernels' weight panels [ceil(width / 16), depth, 16] of the matrix m
// [rows, cols] (transposed = 0: width = cols, depth = rows) or of m^T
// (transposed = 1).
void sepconv_pack_panels(const float* m, int64_t rows, int64_t cols, int transposed, float* out) {
  pack_panels(m, rows, cols, transposed != 0, out);
}

// A fingerprint of the bytes [p, p + bytes): 64 evenly spaced 8-byte words and
// the last one, mixed. The weight cache compares it to notice writes that
// PyTorch's version counter does not count (through .data, fused optimizers):
// those rewrite every element, so they change sampled words too.
uint64_t sepconv_fingerprint(const unsigned char* p, int64_t bytes) {
  uint64_t hash = 1469598103934665603ull ^ static_cast<uint64_t>(bytes);
  if (bytes < 8) {
    for (int64_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
    return hash;
  }
  const int64_t words = bytes / 8, step = std::max<int64_t>(1, words / 64);
  const auto mix = [&](int64_t offset) {
    uint64_t word;
    std::memcpy(&word, p + offset, sizeof(word));
    hash = (hash ^ word) * 1099511628211ull;
    hash ^= hash >> 29;
  };
  for (int64_t w = 0; w < words; w += step) mix(w * 8);
  mix(bytes - 8);
  return hash;
}

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

// The training step's gradients (see backward()); 0 on success, 1 if a work
// buffer could not be allocated.
int sepconv_separable_backward(const float* x, const float* dw, const float* packed_t,
                               const float* gy, const float* y, float* gx, float* gdw, float* gw,
                               float* gb, const int64_t* params) {
  Layer L;
  std::memcpy(&L, params, sizeof(Layer));
  try {
    const std::vector<float> zeros(L.c, 0.0f);
    backward(L, Operands{x, dw, nullptr, nullptr, nullptr, zeros.data()},
             Gradients{gy, y, packed_t, gx, gdw, gw, gb});
  } catch (const std::exception&) {
    return 1;
  }
  return 0;
}

}  // extern "C"
